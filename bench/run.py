"""Runs the benchmark suite: same as `python -m cnnnative.bench` (see cnnnative/bench/__init__.py)."""
import sys

from cnnnative.bench import main

if __name__ == "__main__":
    sys.exit(main())
