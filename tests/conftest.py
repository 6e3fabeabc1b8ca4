import pathlib
import sys

# Let tests import tests/helpers.py, tests/model_zoo.py and the benchmark modules by name.
ROOT = pathlib.Path(__file__).resolve().parent.parent
for p in (ROOT / "tests", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
