import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
# the compile pipeline verifies the graph after every pass (core/compile.cpp) in the test suite
os.environ.setdefault("CNNNATIVE_VERIFY_PASSES", "1")

# The suite compares runs bitwise and counts allocations run by run: it runs at a fixed thread count, OpenMP's default
# (what every test got before auto mode), so that a load-driven switch of the count (core/threads.hpp) cannot make it
# flaky on a busy CI machine. tests/test_thread_governor.py turns auto mode on where it tests it; CLI tests pass
# --threads.
import cnnnative  # noqa: E402

cnnnative.set_num_threads(cnnnative.get_num_threads())

import pytest  # noqa: E402

_SUITE_THREADS = cnnnative.get_num_threads()


@pytest.fixture(autouse=True)
def _suite_thread_count():
    """Every test starts at the suite's fixed count, whatever the test before it set (a test that sets 1 thread and
    does not restore it would otherwise run every later test single-threaded)."""
    cnnnative.set_num_threads(_SUITE_THREADS)
    yield
