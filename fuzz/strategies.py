"""Hypothesis strategies for the fuzz cases of :mod:`fuzz.targets`.

A mutation is a tuple of integers that the mutators read modulo the seed's sizes, so hypothesis
shrinks a finding towards few mutations of small kinds at small positions.
"""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.targets import EDGERT_KINDS, ONNX_KINDS, ONNX_SEEDS

_U32 = st.integers(0, 2**32 - 1)

edgert_mutation = st.tuples(st.integers(0, EDGERT_KINDS - 1), _U32, _U32, _U32,
                            st.booleans().map(lambda b: not b))  # shrinks to "in structure"
onnx_mutation = st.tuples(st.integers(0, ONNX_KINDS - 1), _U32, _U32, _U32)


def seeds(names=None):
    return st.sampled_from(list(names or ONNX_SEEDS))


def edgert_cases(names=None, max_mutations: int = 4):
    return st.tuples(seeds(names), st.lists(edgert_mutation, min_size=1,
                                            max_size=max_mutations))


def onnx_cases(names=None, max_mutations: int = 3):
    return st.tuples(seeds(names), st.lists(onnx_mutation, min_size=1, max_size=max_mutations))


CASES = {"edgert": edgert_cases, "onnx": onnx_cases}
