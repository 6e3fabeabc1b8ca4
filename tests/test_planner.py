"""The arena planner: no two tensors alive together share bytes, and memory is reused."""

import numpy as np
import pytest

from edgert.runtime import planner
from edgert.runtime.planner import Allocation


@pytest.mark.parametrize("seed", range(20))
def test_random_lifetimes_never_overlap(seed):
    rng = np.random.default_rng(seed)
    allocs = []
    for t in range(int(rng.integers(1, 60))):
        first = int(rng.integers(0, 40))
        last = first + int(rng.integers(0, 10))
        allocs.append(Allocation(t, int(rng.integers(0, 5000)), first, last))
    offsets, size = planner.plan(allocs)
    planner.check_plan(allocs, offsets)
    assert all(offsets[a.tensor] + a.size <= size for a in allocs)
    # Never worse than giving every tensor its own slot.
    assert size <= sum(planner._align(max(a.size, 1)) for a in allocs)


def test_chain_reuses_memory():
    # A chain t0 -> t1 -> t2 -> t3: only two neighbours are alive at once.
    allocs = [Allocation(i, 1024, i, i + 1) for i in range(4)]
    offsets, size = planner.plan(allocs)
    planner.check_plan(allocs, offsets)
    assert size == 2 * 1024


def test_inputs_and_outputs_of_one_step_do_not_alias():
    # The output of step 1 is written while step 1 still reads its input.
    allocs = [Allocation(0, 256, 0, 1), Allocation(1, 256, 1, 2)]
    offsets, _ = planner.plan(allocs)
    assert offsets[0] != offsets[1]


def test_offsets_are_aligned():
    allocs = [Allocation(i, 3 + i, 0, 5) for i in range(10)]
    offsets, _ = planner.plan(allocs)
    assert all(off % planner.ALIGNMENT == 0 for off in offsets.values())
