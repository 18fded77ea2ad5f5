"""Runs the benchmark suite (`python -m cnnnative.bench`) for two builds of cnnnative in one run, alternating:
for every workload, a child process of build A then B (the order flips from one workload to the next and from
one pair to the next), each timing cnnnative, PyTorch and ONNX Runtime as the suite does. The reference engines
run in every child, so their spread between children shows the machine's noise.

    python bench/compare_builds.py --a /path/to/old/venv/bin/python --b /path/to/new/venv/bin/python \
        [--pairs 1] [--rounds 3] [--only resnet18,lenet5] [--out bench_compare]

Writes <out>/compare.md (and .json): per workload the median of each engine under A and B, and B/A for
cnnnative next to B/A for the reference engines. Each interpreter must have its build of cnnnative installed
(run from a folder where `import cnnnative` does not pick up a source tree, e.g. the default: a temp folder).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def _workloads(python, only):
    code = ("from cnnnative.bench.suite import WORKLOADS, _spec\nimport cnnnative as cn\n"
            "print('\\n'.join(n for n in WORKLOADS if cn.has_bf16() or _spec(n)[5].get('dtype') != 'bfloat16'))")
    names = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True,
                           cwd=tempfile.gettempdir()).stdout.split()
    if only:
        subs = [s for s in only.split(",") if s]
        names = [n for n in names if any(s in n for s in subs)]
    return names


def _run(python, workload, rounds, threads):
    with tempfile.TemporaryDirectory() as out:
        cmd = [python, "-m", "cnnnative.bench", "--workloads", workload, "--rounds", str(rounds), "--no-rss",
               "--out", out]
        if threads:
            cmd += ["--threads", str(threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
        if r.returncode != 0:
            raise RuntimeError(f"{python} {workload}: {r.stderr[-2000:]}")
        with open(os.path.join(out, "results.json")) as f:
            data = json.load(f)
    row = data["rows"][0]
    return data["header"], {k: v["median_ms"] for k, v in row.items() if isinstance(v, dict) and "median_ms" in v}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="python of build A (before)")
    ap.add_argument("--b", required=True, help="python of build B (after)")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma-separated substrings of workload names")
    ap.add_argument("--out", default="bench_compare")
    args = ap.parse_args(argv)
    names = _workloads(args.b, args.only)
    results, header = {}, {}
    flip = False
    for n in names:
        res = {"a": [], "b": []}
        for _ in range(args.pairs):
            for side in (("b", "a") if flip else ("a", "b")):
                h, t = _run(getattr(args, side), n, args.rounds, args.threads)
                header[side] = h
                res[side].append(t)
                print(f"{n} {side}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in t.items()), flush=True)
            flip = not flip
        results[n] = res
    lines = [f"A: {header.get('a', '')}", f"B: {header.get('b', '')}", "",
             "| workload | cnnnative A ms | cnnnative B ms | B/A cnnnative | B/A pytorch | B/A onnxruntime |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for n, res in results.items():
        def med(side, k):
            v = [t[k] for t in res[side] if k in t]
            return statistics.median(v) if v else None
        row = {}
        for k in ("cnnnative", "pytorch", "onnxruntime"):
            a, b = med("a", k), med("b", k)
            row[k] = (a, b, b / a if a and b else None)
        summary[n] = row
        f = lambda r: f"{r:.3f}" if r else "-"  # noqa: E731
        lines.append(f"| {n} | {row['cnnnative'][0]:.2f} | {row['cnnnative'][1]:.2f} | {f(row['cnnnative'][2])} | "
                     f"{f(row['pytorch'][2])} | {f(row['onnxruntime'][2])} |")
    lines += ["", "B/A below 1: B faster. The PyTorch and ONNX Runtime columns ran the same code in both children: "
              "their distance from 1 is the noise of this machine."]
    md = "\n".join(lines)
    print("\n" + md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.md"), "w") as fh:
        fh.write(md + "\n")
    with open(os.path.join(args.out, "compare.json"), "w") as fh:
        json.dump({"header": header, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
