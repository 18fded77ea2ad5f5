import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
# the compile pipeline verifies the graph after every pass (core/compile.cpp) in the test suite
os.environ.setdefault("CNNNATIVE_VERIFY_PASSES", "1")
