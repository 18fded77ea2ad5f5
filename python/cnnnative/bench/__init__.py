"""cnnnative.bench: the benchmark suite (python -m cnnnative.bench, or python bench/run.py).

Each workload runs cnnnative and, when installed, PyTorch eager and ONNX Runtime on the same model
(PyTorch twin with identical weights; ORT fed its ONNX export), checks their outputs agree, then times
alternating rounds and reports medians (min-max), images/s, GFLOP/s, % of a measured FMA peak and peak
RSS in a fresh process, as a markdown table, JSON and (with matplotlib) a PNG of the ratios."""
from .suite import WORKLOADS, main

__all__ = ["WORKLOADS", "main"]
