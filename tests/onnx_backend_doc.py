"""Regenerates the case lists of docs/onnx.md's "Validation" section from tests/test_onnx_backend.py's recorded
sets (the test asserts them, so the doc then says what the suite checks):

    python tests/onnx_backend_doc.py            # rewrites docs/onnx.md in place
"""
import collections
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_onnx_backend as t  # noqa: E402

import onnx  # noqa: E402


def _kind(name):
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for kind in ("pytorch-converted", "pytorch-operator", "simple"):
        if os.path.isdir(os.path.join(root, kind, name)):
            return kind
    return "node"


def main():
    cases = sorted(t.CASES)
    kinds = {n: _kind(n) for n in cases}
    passing = [n for n in cases if n in t.EXPECTED_PASS]
    unsup = [n for n in cases if n in t.EXPECTED_UNSUPPORTED]
    count = collections.Counter(kinds.values())
    order = ("node", "pytorch-converted", "pytorch-operator", "simple")
    short = lambda n: n[len("test_"):] if n.startswith("test_") else n
    lines = ["### Passing cases", ""]
    for k in order:
        names = [short(n) for n in passing if kinds[n] == k]
        if names:
            lines += [f"**{k}** ({len(names)}): " + ", ".join(f"`{n}`" for n in names), ""]
    lines += ["### Unsupported cases (by reason)", "", "| reason (substring checked) | count | cases |", "|---|---|---|"]
    by = collections.defaultdict(list)
    for n in unsup:
        by[t.EXPECTED_UNSUPPORTED[n]].append(short(n))
    for reason, names in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"| {reason} | {len(names)} | " + ", ".join(f"`{n}`" for n in sorted(names)) + " |")
    block = "\n".join(lines) + "\n"
    path = os.path.join(HERE, "..", "docs", "onnx.md")
    doc = open(path).read()
    a = doc.index("### Passing cases")
    b = doc.index("\nFurther unsupported:", a)
    doc = doc[:a] + block + doc[b:]
    summary = (f"**{len(cases)} cases** ({', '.join(f'{count[k]} {k}' for k in order if count[k])}). "
               f"**{len(passing)} pass**")
    doc = re.sub(r"\*\*\d+ cases\*\* \([^)]*\)\. \*\*\d+ pass\*\*", summary, doc)
    doc = re.sub(r"and \*\*\d+ raise UnsupportedError\*\*", f"and **{len(unsup)} raise UnsupportedError**", doc)
    open(path, "w").write(doc)
    print(f"{len(cases)} cases, {len(passing)} pass, {len(unsup)} unsupported")


if __name__ == "__main__":
    main()
