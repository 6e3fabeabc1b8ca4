import pathlib
import sys

# Let tests import tests/helpers.py, tests/model_zoo.py and the benchmark modules by name.
ROOT = pathlib.Path(__file__).resolve().parent.parent
for p in (ROOT / "tests", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


# ----- the suite's own time and memory ------------------------------------------------------
# The session's peak RSS (and the tests that raised it most) is printed at the end, so the suite's
# memory budget stays visible: CI runs on a 2-core, shared machine.
import resource  # noqa: E402
import time  # noqa: E402

_START = time.perf_counter()
_PEAK_RISES: list[tuple[int, str]] = []


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _current_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pytest_runtest_call(item):
    item._edgert_peak_before = _peak_kib()


def pytest_runtest_teardown(item, nextitem):
    before = getattr(item, "_edgert_peak_before", None)
    if before is not None:
        rise = _peak_kib() - before
        if rise > 0:
            _PEAK_RISES.append((rise, item.nodeid))


def pytest_terminal_summary(terminalreporter):
    top = sorted(_PEAK_RISES, reverse=True)[:8]
    terminalreporter.write_sep("-", "suite time and memory")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    terminalreporter.write_line(
        f"wall {time.perf_counter() - _START:.0f} s, peak RSS {_peak_kib() / 1024:.0f} MiB, "
        f"{_current_mib():.0f} MiB at the end (largest child process {children / 1024:.0f} "
        "MiB); tests that raised the peak most:")
    for rise, nodeid in top:
        terminalreporter.write_line(f"  +{rise / 1024:7.1f} MiB  {nodeid}")
