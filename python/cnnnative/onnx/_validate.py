"""Validation of an ONNX graph before anything is computed from it: names (UTF-8, no NUL, bounded length),
SSA structure (every value defined once, every input defined, no cycle; an unsorted graph is sorted),
input/output/attribute counts and types as the ONNX schema of the model's opset says, and the ranges of
attribute values that do not depend on shapes. Each check returns problem lists, so that one error lists
every offending node."""
from __future__ import annotations

import heapq
import math

import numpy as np

from ._common import MAX_DIM, MAX_NAME, MAX_NODE_IO


def check_names(g):
    """Names of everything in the graph: valid UTF-8, no NUL, at most MAX_NAME characters. Returns
    (invalid, unsupported) problem lists."""
    inv, uns = [], []

    def bad(s):
        """(is it invalid, reason) for a bad name, None for a good one."""
        if not isinstance(s, str):  # protobuf hands over a string field that is not valid UTF-8 as bytes
            return True, "is not valid UTF-8"
        if len(s) > MAX_NAME:
            return False, f"has {len(s)} characters (at most {MAX_NAME})"
        if "\0" in s:
            return True, "holds a NUL character"
        return None

    def show(s):
        s = s.decode("utf-8", "replace") if isinstance(s, bytes) else s
        return s if len(s) <= 60 else s[:60] + "..."

    for kind, names in (("graph input", [v.name for v in g.input]), ("graph output", [v.name for v in g.output]),
                        ("initializer", [t.name for t in g.initializer]),
                        ("initializer", [t.values.name for t in g.sparse_initializer])):
        for s in names:
            b = bad(s)
            if b:
                (inv if b[0] else uns).append((show(s), kind, f"the name {b[1]}"))
    for k, n in enumerate(g.node):
        label = n.name if bad(n.name) is None else f"#{k}"
        op = n.op_type if bad(n.op_type) is None else "?"
        fields = [("name", n.name), ("op_type", n.op_type), ("domain", n.domain)]
        fields += [(f"input {i}", v) for i, v in enumerate(n.input)]
        fields += [(f"output {i}", v) for i, v in enumerate(n.output)]
        fields += [("an attribute name", a.name) for a in n.attribute]
        for field, s in fields:
            b = bad(s)
            if b:
                (inv if b[0] else uns).append((label, op, f"{field} {show(s)!r} {b[1]}"))
                break
    return inv, uns


def node_names(g):
    names, seen = [], set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def check_structure(g, names, defined_outside):
    """SSA form and order: every value defined once, every non-empty node input and every graph output
    defined, no cycle. Returns (invalid problems, node order): the nodes topologically sorted, keeping the
    file's order where it already is one (ONNX requires a sorted graph; an unsorted one is accepted, as by
    onnxruntime)."""
    inv = []
    seen_in = set()
    for vi in g.input:
        if vi.name in seen_in:
            inv.append((vi.name, "graph input", "listed twice"))
        seen_in.add(vi.name)
        if not vi.name:
            inv.append(("", "graph input", "an empty name"))
    seen_init = set()
    for t in g.initializer:
        if t.name in seen_init:
            inv.append((t.name, "initializer", "defined twice"))
        seen_init.add(t.name)
        if not t.name:
            inv.append(("", "initializer", "an empty name"))
    for t in g.sparse_initializer:
        seen_init.add(t.values.name)
    defined = seen_in | seen_init | set(defined_outside)
    producer = {}
    for k, n in enumerate(g.node):
        if len(n.input) > MAX_NODE_IO or len(n.output) > MAX_NODE_IO:
            inv.append((names[k], n.op_type, f"{len(n.input)} inputs and {len(n.output)} outputs (at most "
                        f"{MAX_NODE_IO} each)"))
        for o in n.output:
            if not o:
                continue
            if o in producer:
                inv.append((names[k], n.op_type, f"output {o!r} is also an output of node {names[producer[o]]!r} "
                            "(each value is defined once)"))
            elif o in defined:
                kind = "a graph input" if o in seen_in else "an initializer"
                inv.append((names[k], n.op_type, f"output {o!r} is also {kind} (each value is defined once)"))
            else:
                producer[o] = k
    for k, n in enumerate(g.node):
        for i in n.input:
            if i and i not in defined and i not in producer:
                inv.append((names[k], n.op_type, f"input {i!r} is not defined (no graph input, initializer or node "
                            "output has that name)"))
    if not g.output:
        inv.append((None, "graph", "the graph has no outputs"))
    seen_out = set()
    for vi in g.output:
        if vi.name in seen_out:
            inv.append((vi.name, "graph output", "listed twice"))
        seen_out.add(vi.name)
        if vi.name not in defined and vi.name not in producer:
            inv.append((vi.name, "graph output", "is not defined (no graph input, initializer or node output has "
                        "that name)"))
    if inv:
        return inv, None
    # Kahn's algorithm, smallest original index first: the file's order when it is already sorted
    deps = [set() for _ in g.node]
    users = [[] for _ in g.node]
    for k, n in enumerate(g.node):
        for i in n.input:
            p = producer.get(i) if i and i not in defined else None
            if p is not None and p not in deps[k]:
                deps[k].add(p)
                users[p].append(k)
    indeg = [len(d) for d in deps]
    ready = [k for k, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            indeg[u] -= 1
            if indeg[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(g.node):
        stuck = [names[k] for k in range(len(g.node)) if indeg[k] > 0]
        shown = ", ".join(repr(s) for s in stuck[:8]) + (f" and {len(stuck) - 8} more" if len(stuck) > 8 else "")
        inv.append((None, "graph", f"the graph has a cycle through the nodes {shown}"))
        return inv, None
    return inv, order


_SCHEMAS = {}


def schema_of(onnx, op, opset):
    key = (op, opset)
    if key not in _SCHEMAS:
        try:
            _SCHEMAS[key] = onnx.defs.get_schema(op, opset or onnx.defs.onnx_opset_version(), "")
        except Exception:  # no such operator (at this opset)
            _SCHEMAS[key] = None
    return _SCHEMAS[key]


def schema_problems(onnx, n, schema, types):
    """Counts of inputs/outputs, required inputs, attribute names, types and presence, as the schema says."""
    out = []
    sig = f"{n.op_type}-{schema.since_version}"
    ni, no = len(n.input), len(n.output)
    if not schema.min_input <= ni <= schema.max_input:
        out.append(f"{ni} inputs; {sig} takes {schema.min_input} to {schema.max_input}")
    if not schema.min_output <= no <= schema.max_output:
        out.append(f"{no} outputs; {sig} has {schema.min_output} to {schema.max_output}")
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for kind, formal, actual in (("input", schema.inputs, n.input), ("output", schema.outputs, n.output)):
        for k, v in enumerate(actual):
            if not v and k < len(formal) and formal[k].option == single:
                out.append(f"{kind} {k} ({formal[k].name}) is required but empty")
    for name, t in types.items():
        a = schema.attributes.get(name)
        if a is None:
            out.append(f"attribute {name!r} is not defined for {sig}")
        elif int(a.type.value) != int(t):
            want = onnx.AttributeProto.AttributeType.Name(int(a.type.value))
            got = onnx.AttributeProto.AttributeType.Name(int(t)) if t in onnx.AttributeProto.AttributeType.values() \
                else str(t)
            out.append(f"attribute {name!r} is {got}; {sig} takes {want}")
    for name, a in schema.attributes.items():
        if a.required and name not in types:
            out.append(f"required attribute {name!r} is missing")
    if n.op_type == "Constant" and sum(1 for k in types if k.startswith("value") or k == "sparse_value") != 1:
        out.append(f"a Constant sets exactly one value attribute, got {sorted(types) or 'none'}")
    return out


_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "")  # "" is NOTSET (as for onnxruntime)
_POOLS = ("MaxPool", "AveragePool")


def attr_problems(op, a, opset):
    """Ranges of attribute values that do not depend on shapes: (invalid reasons, unsupported reasons)."""
    inv, uns = [], []

    def ints(name, lo, hi=MAX_DIM):
        v = a.get(name)
        if v is None:
            return
        vals = list(v) if isinstance(v, (list, np.ndarray)) else [v]
        shown = vals if isinstance(v, (list, np.ndarray)) else v
        if any(int(x) < lo for x in vals):
            inv.append(f"{name}={shown}: " + ("each value" if shown is vals else "the value") + f" must be >= {lo}")
        elif any(int(x) > hi for x in vals):
            uns.append(f"{name}={shown}: values above {hi} exceed the engine's limits")

    def choice(name, allowed, default):
        v = a.get(name, default)
        if v not in allowed:
            inv.append(f"{name}={v!r}: one of {', '.join(x for x in allowed if x)}")

    if op in ("Conv", "ConvTranspose") + _POOLS:
        for name in ("kernel_shape", "strides", "dilations"):
            ints(name, 1)
        ints("pads", 0)
        if op in ("Conv", "ConvTranspose"):
            ints("group", 1)
        if op == "ConvTranspose":
            ints("output_padding", 0)
            ints("output_shape", 1)
        choice("auto_pad", _AUTO_PADS, "NOTSET")
        ks = a.get("kernel_shape")
        sd = len(ks) if ks is not None else len(a["strides"]) if a.get("strides") is not None else None
        if ks is not None and not ks:
            inv.append("kernel_shape is empty")
        if sd:
            for name in ("strides", "dilations") + (("output_padding",) if op == "ConvTranspose" else ()):
                if a.get(name) is not None and len(a[name]) != sd:
                    inv.append(f"{name}={list(a[name])} has {len(a[name])} values for {sd} spatial axes")
            if a.get("pads") is not None and len(a["pads"]) != 2 * sd:
                inv.append(f"pads={list(a['pads'])} has {len(a['pads'])} values for {sd} spatial axes (2 per axis)")
            elif op in _POOLS and ks and a.get("pads") is not None and not inv:
                p = list(a["pads"])
                bad = [i for i in range(sd) if p[i] >= ks[i] or p[sd + i] >= ks[i]]
                if bad:
                    inv.append(f"pads={p} with kernel_shape={list(ks)}: each pad must be smaller than the kernel "
                               "(padding a whole window is meaningless; onnxruntime refuses it too)")
    elif op == "LRN":
        ints("size", 1)
    elif op == "Pad":
        choice("mode", ("constant", "reflect", "edge", "wrap"), "constant")
    elif op == "Resize":
        choice("mode", ("nearest", "linear", "cubic"), "nearest")
    elif op == "Upsample":
        choice("mode", ("nearest", "linear", "bilinear"), "nearest")
        sc = a.get("scales")
        if sc is not None and not all(math.isfinite(s) and s >= 1 for s in sc):
            inv.append(f"scales={list(sc)}: each must be a finite number >= 1")
    elif op == "Dropout" and "ratio" in a:
        if not 0 <= a["ratio"] < 1:
            inv.append(f"ratio={a['ratio']}: must be in [0, 1)")
    elif op in ("Squeeze", "Unsqueeze") and isinstance(a.get("axes"), list):
        if len(set(a["axes"])) != len(a["axes"]):
            inv.append(f"axes={a['axes']} repeat an axis")
    elif op == "Slice" and opset < 10 and "starts" in a and "ends" in a:
        if len(a["starts"]) != len(a["ends"]) or ("axes" in a and len(a["axes"]) != len(a["starts"])):
            inv.append(f"starts, ends and axes differ in length ({a.get('starts')}, {a.get('ends')}, {a.get('axes')})")
    return inv, uns
