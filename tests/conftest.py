import os
import sys

# Every inference run checksums the parameter store and raises when it changed without a version bump: any
# test that writes weights by a path the version does not see fails instead of passing on stale weights.
os.environ.setdefault("CNNNATIVE_CHECK_PREPARED", "1")

sys.path.insert(0, os.path.dirname(__file__))
