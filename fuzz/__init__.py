"""Fuzzing edgert: the `.edgert` reader/verifier/runtime and the ONNX importer.

Two targets (:mod:`fuzz.targets`), both seeded from the bundled models (``models/*.onnx``,
``tests/data/*.onnx``, and their `.edgert` conversions):

* ``edgert``: byte mutations of real `.edgert` files (bit flips, interesting bytes/int16/int32/
  int64 values, FlatBuffer offset nudges, truncation, splices, inserts, deletes), biased to the
  FlatBuffer structure rather than the weight buffers, then ``read_model`` + ``Interpreter`` + one
  ``run`` on a feed of the declared shape.
* ``onnx``: structural mutations of real ONNX models (rewired/dropped/duplicated node inputs and
  outputs, dropped nodes, attribute values and types, input/initializer dims incl. negative and
  huge ones, dtypes incl. invalid enums, opset versions, op types, graph outputs, truncated raw
  data), then ``edgert.convert`` + ``Interpreter`` + ``run``.

The contract checked: each case works, or raises an ``edgert.EdgeRTError``; any other exception,
a crash (signal) or a hang is a finding.

Short run: ``tests/test_fuzz.py`` (part of the suite, deterministic, about a minute).

Long run (each batch of cases in a subprocess, so segfaults and hangs are caught)::

    .venv/bin/python -m fuzz --minutes 30                 # both targets, until time is up
    .venv/bin/python -m fuzz --minutes 10 --target onnx --jobs 2 --batch 200
    .venv/bin/python -m fuzz --replay fuzz/crashes/<file>.json   # re-run one finding here

Every finding is written to ``fuzz/crashes/<target>-<hash>.json`` (the seed model and the
mutation list: replayable with ``--replay``, and the text to paste into a regression test in
``tests/test_fuzz.py``, marked ``xfail(strict=True)`` until edgert is fixed), next to the
mutated file (``.bin``: `.edgert` bytes, or the serialized ``.onnx``) and the traceback
(``.txt``). The runner prints the number of cases run and of findings per target.
"""
