"""ONNX-level rewrites run once at import, before the graph is mapped to engine ops. Only rewrites that the
engine's graph cannot express, or that are op mapping, stay here; the rest is the engine's compile pipeline,
which every front end (ONNX and cnnnative.nn alike) goes through:

- canonicalize (op mapping): Gemm and MatMul with a constant right operand -> LINEAR (weight stored
  [OUT, IN] as the engine's linear takes it, alpha/beta folded); Add/Sub/Mul/Div with one constant operand
  -> AFFINE (y = x * scale + shift), which the mapper runs as an eval-mode batch_norm with mean 0, var 1,
  eps 0; Sub of two tensors -> Add(a, AFFINE(b, -1)); opset < 7 legacy broadcasting made explicit. The
  engine has no general broadcasting elementwise ops and no transposed-weight matmul, so these are choices
  of how an ONNX op becomes engine ops.
- merge_affines: chains of affines become one. ONNX graphs spell one per-channel affine as several Mul/Add
  nodes; engine graphs have no such op to merge (each would already be a batch_norm).
- fold_affines: an affine after a ConvTranspose, BatchNormalization, 1-D Conv or a linear on a tensor not
  known to be 2-D folds into its weights, because the engine's inference fusion has no equivalent: the
  fusion does not match conv_transpose2d, a BatchNormalization followed by an affine is two affines (merged
  here), and a 1-D conv runs as conv2d + reshape (a batched N-D linear as reshape + linear + reshape), which
  the fusion cannot see through. An affine after a 2-D Conv or a 2-D linear is NOT folded here: it becomes a
  per-channel batch_norm right after the conv2d / linear, which the inference fusion (cpp/src/core/fuse.cpp,
  fuse_for_inference) folds into the fused_conv2d's / fused_linear's prepared weights, as it folds every
  conv2d -> batch_norm and linear -> batch_norm, whatever built the graph. The one exception is op mapping
  (MatMul + Add is Gemm): a shift alone after a linear without a bias becomes its bias. BatchNormalization
  nodes likewise reach the engine as batch_norm.

Pad folding is the engine's too: a Pad of the spatial dims of a 4-D tensor is mapped to the engine's `pad` op,
and the compile pass fold_pad (cpp/src/core/fold_pad.cpp) folds a zero one into the conv or average pool that
reads it, for graphs built with cnnnative.nn alike.

Constant folding of ONNX-only ops (Shape, Gather, Concat, ... on constants) is _fold.py. The rewrites work
on the Program's node list and constants (prog.nodes, prog.consts) and never change what the graph
computes."""
from __future__ import annotations

import numpy as np

from ._base import AFFINE, LINEAR, Invalid, Node, broadcast_shapes


def varying_axes(shape):
    return [i for i, d in enumerate(shape) if d != 1]


def affine_layout(scale, shift):
    """(d, axis_from_end, ndim, scale_vec, shift_vec) of y = x*scale + shift, or a reason string."""
    s = np.ones((), np.float64) if scale is None else np.asarray(scale, np.float64)
    t = np.zeros((), np.float64) if shift is None else np.asarray(shift, np.float64)
    try:
        full = broadcast_shapes(s.shape, t.shape)
    except Invalid:
        return "scale and shift constants do not broadcast together"
    ax = varying_axes(full)
    if len(ax) > 1:
        return (f"the constant operand {list(full)} varies along more than one axis (the engine has no "
                "general broadcasting elementwise ops, only per-channel affines)")
    s, t = np.broadcast_to(s, full).reshape(-1), np.broadcast_to(t, full).reshape(-1)
    if not ax:
        return 1, None, len(full), s[:1].copy(), t[:1].copy()
    return int(full[ax[0]]), len(full) - ax[0], len(full), s.copy(), t.copy()


def _legacy_broadcast(prog, n, ranks):
    """Opset < 7 binary ops: with broadcast=1 and `axis`, B aligns at `axis` rather than at the end;
    reshape the constant operand so numpy broadcasting says the same. Returns a problem or None."""
    if prog.opset >= 7 or n.op not in ("Add", "Sub", "Mul", "Div") or not n.attrs.get("broadcast", 0) \
            or "axis" not in n.attrs or n.inputs[1] not in prog.consts:
        return None
    r = ranks.get(n.inputs[0])
    c = np.asarray(prog.consts[n.inputs[1]])
    if r is None:
        return "legacy broadcast with axis=... on a tensor of unknown rank"
    axis = int(n.attrs["axis"])
    axis = axis + r if axis < 0 else axis
    name = prog.fresh(n.inputs[1] + "__bcast")
    prog.consts[name] = c.reshape(c.shape + (1,) * (r - axis - c.ndim))
    n.inputs[1] = name
    return None


def canonicalize(prog):
    out = []
    uses = prog.uses()
    ranks = _ranks(prog) if prog.opset < 7 else {}
    for n in prog.nodes:
        ins = n.inputs
        why = _legacy_broadcast(prog, n, ranks)
        if why:
            prog.static_problems.append((n.name, n.onnx_op, why))
        if prog.opset < 7 and int(n.attrs.get("is_test", 1)) == 0 and n.op in ("BatchNormalization", "Dropout"):
            prog.static_problems.append((n.name, n.onnx_op, "is_test=0 (training behaviour)"))
        if n.op == "Gemm" and len(ins) >= 2 and ins[1] in prog.consts and not n.attrs.get("transA", 0):
            lin = _gemm_as_linear(prog, n, uses)
            if lin is not None:
                out.append(lin)
                continue
        if n.op == "MatMul" and len(ins) == 2 and ins[1] in prog.consts and ins[0] not in prog.consts:
            B = np.asarray(prog.consts[ins[1]])
            if B.ndim in (1, 2) and B.dtype.kind == "f":
                W = B.reshape(1, -1) if B.ndim == 1 else B.T
                wname = prog.derive(ins[1], np.ascontiguousarray(W, np.float32), "t", uses)
                out.append(Node(LINEAR, n.name, [ins[0], wname, ""], n.outputs, {"vector": int(B.ndim == 1)},
                                "MatMul"))
                continue
        if n.op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
            ca, cb = ins[0] in prog.consts, ins[1] in prog.consts
            if ca != cb:
                k = 1 if cb else 0
                c = np.asarray(prog.consts[ins[k]])
                if c.dtype.kind == "f":
                    c, bcast = _collapse(c.astype(np.float64))
                    x = ins[1 - k]
                    scale = shift = None
                    if n.op == "Add":
                        shift = c
                    elif n.op == "Sub":
                        scale, shift = (None, -c) if k == 1 else (-np.ones_like(c), c)
                    elif n.op == "Mul":
                        scale = c
                    elif k == 1:  # x / c
                        scale = 1.0 / c
                    if (scale is not None or shift is not None) and not isinstance(affine_layout(scale, shift), str):
                        attrs = {"scale": scale, "shift": shift, "from": n.op}
                        if bcast:  # checked when traced; if it fails, the original node is mapped instead
                            attrs["bcast"], attrs["orig"] = [bcast], n
                        out.append(Node(AFFINE, n.name, [x], n.outputs, attrs, n.onnx_op))
                        continue
            elif not ca and n.op == "Sub":  # a - b = a + (-1) * b
                neg = prog.fresh(n.outputs[0] + "__neg")
                out.append(Node(AFFINE, n.name + ".neg", [ins[1]], [neg],
                                {"scale": np.array(-1.0), "shift": None, "from": "Sub"}, "Sub"))
                out.append(Node("Add", n.name, [ins[0], neg], n.outputs, {}, "Sub"))
                continue
        out.append(n)
    prog.nodes = out


def _collapse(c):
    """(c with each axis along which all its values are equal reduced to size 1, the original shape or None
    when nothing changed). A constant that an exporter expanded to an activation's full shape (Expand of a
    scalar or a per-channel vector to Shape(x)) is then a per-channel or scalar affine; the trace checks that
    the original shape broadcasts into the input's (attrs "bcast"), so that the output shape stays the
    input's, and maps the original node (attrs "orig": a broadcasting binary op) where it does not."""
    shape = c.shape
    for ax in range(c.ndim):
        if c.shape[ax] > 1 and np.array_equal(c, np.broadcast_to(c.take([0], axis=ax), c.shape)):
            c = c.take([0], axis=ax)
    return (c, None) if c.shape == shape else (np.ascontiguousarray(c), list(shape))


def _gemm_as_linear(prog, n, uses):
    """Gemm(A, B const[, C]) -> Linear(A, W [OUT, IN], bias [OUT]) with alpha/beta folded, or None."""
    ins = n.inputs
    B = np.asarray(prog.consts[ins[1]])
    if B.ndim != 2 or B.dtype.kind != "f":
        return None
    alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
    wname = ins[1]
    if not n.attrs.get("transB", 0) or alpha != 1.0:
        W = (B if n.attrs.get("transB", 0) else B.T).astype(np.float64) * alpha
        wname = prog.derive(ins[1], np.ascontiguousarray(W, np.float32), "t", uses)
    out_features = prog.consts[wname].shape[0]
    bname = ins[2] if len(ins) > 2 else ""
    if bname in prog.consts:
        c = np.asarray(prog.consts[bname], np.float64) * beta
        if c.ndim == 2 and c.shape[0] > 1 and c.shape[1] == out_features:
            # a per-row C [M, N]: added after the product (the model is then fixed to M rows)
            if beta != 1.0:
                bname = prog.derive(bname, c.astype(np.float32), "b", uses)
            return Node(LINEAR, n.name, [ins[0], wname, bname], n.outputs[:1], {"gemm": 1}, "Gemm")
        if not (c.size in (1, out_features) and (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1))):
            return None
        if beta != 1.0 or c.shape != (out_features,):
            bname = prog.derive(bname, np.broadcast_to(c.reshape(-1), (out_features,)).astype(np.float32),
                                "b", uses)
    elif bname and beta != 1.0:
        return None
    return Node(LINEAR, n.name, [ins[0], wname, bname], n.outputs[:1], {"gemm": 1}, "Gemm")


def _ranks(prog):
    r = {name: (len(d) if d is not None else None) for name, d, _ in prog.inputs}
    for k, v in prog.consts.items():
        r[k] = np.ndim(v)
    same = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "BatchNormalization", "Conv", "ConvTranspose", "MaxPool",
            "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "Dropout", "Identity", AFFINE,
            "Concat", "Resize", "Upsample", "Pad", "Softmax", "LogSoftmax", "Sum", "Slice", "Add", LINEAR,
            "Transpose", "Split"}
    for n in prog.nodes:
        x = r.get(n.inputs[0]) if n.inputs else None
        if n.op in same:
            out = x
        elif n.op in ("Flatten", "Gemm"):
            out = 2
        elif n.op == "MatMul":
            out = x
        elif n.op == "Reshape" and len(n.inputs) > 1 and n.inputs[1] in prog.consts:
            out = int(np.size(prog.consts[n.inputs[1]]))
        else:
            out = None
        if n.op == LINEAR and n.attrs.get("vector") and out is not None:
            out -= 1
        for o in n.outputs:
            r[o] = out
    return r


def fold_affines(prog):
    """Each affine whose input only it reads, produced by a Conv, ConvTranspose, Linear or BatchNormalization
    with constant weights: folded into that node's weights and bias (exact per-channel algebra in float64),
    except after a 2-D Conv or a Linear of a 2-D tensor with a per-output bias (or none). There the engine
    does it: the affine becomes per-channel (a scalar is repeated for each of the C output channels or
    features), maps to an eval-mode batch_norm reading the conv2d's / linear's output, and the inference
    fusion (cpp/src/core/fuse.cpp) folds that batch_norm into the fused_conv2d's / fused_linear's prepared
    weights, as it does for every front end. Kept here: ConvTranspose (the fusion does not match
    conv_transpose2d), BatchNormalization (two affines merged into one), 1-D Convs and N-D linears (they run
    as reshapes around conv2d / linear, which the fusion cannot see through), a linear whose Gemm C is
    per-row (an add follows the product), and a shift alone after a linear without a bias (MatMul + Add:
    it becomes the linear's bias, op mapping rather than folding)."""
    ranks = _ranks(prog)
    uses = prog.uses()
    prod = prog.producers()
    drop = set()
    for a in prog.nodes:
        if a.op != AFFINE:
            continue
        p = prod.get(a.inputs[0])
        if p is None or id(p) in drop or uses[a.inputs[0]] != 1 or a.inputs[0] in prog.output_names:
            continue
        layout = _folding_layout(prog, p, ranks)
        if layout is None:
            continue
        C, rank, axis = layout
        vecs = _channel_vectors(a, C, rank, axis)
        if vecs is None:
            continue
        if p.op == "Conv" and rank == 4:  # left to the engine's fusion: per channel, axis 1
            a.attrs["scale"], a.attrs["shift"] = (v.reshape(C, 1, 1) for v in vecs)
            continue
        if _linear_left_to_engine(prog, p, a, rank):  # per output feature, axis 1 of [N, OUT]
            a.attrs["scale"], a.attrs["shift"] = vecs
            continue
        if a.attrs.get("bcast"):  # its broadcast is checked when traced: kept as a node
            continue
        _fold_into(prog, p, *vecs, uses)
        drop.add(id(a))
        p.outputs[0] = a.outputs[0]
        prod[a.outputs[0]] = p
        ranks[a.outputs[0]] = ranks.get(a.inputs[0])
    if drop:
        prog.nodes = [n for n in prog.nodes if id(n) not in drop]


def _linear_left_to_engine(prog, p, a, rank):
    """Whether affine a after p reaches the engine as linear -> batch_norm (which the inference fusion folds
    into fused_linear): p is a LINEAR of a 2-D tensor whose bias, if any, is one value per output feature
    (a per-row Gemm C is an add after the product), unless a is a shift alone and p has no bias: then the
    shift becomes p's bias (MatMul + Add is a Gemm)."""
    if p.op != LINEAR or rank != 2:
        return False
    bias = p.inputs[2] if len(p.inputs) > 2 else ""
    if not bias:
        return a.attrs["scale"] is not None
    return np.ndim(prog.consts[bias]) == 1


def _folding_layout(prog, p, ranks):
    """(channels C, rank of p's output or None, channel axis or None) of a node an affine can fold into, or
    None: a Conv/ConvTranspose/Linear with constant weight and bias, a BatchNormalization with constant
    vectors and one output."""
    c, ins = prog.consts, p.inputs
    if p.op in ("Conv", "ConvTranspose"):
        if len(ins) < 2 or ins[1] not in c or (len(ins) > 2 and ins[2] and ins[2] not in c):
            return None
        W = np.asarray(c[ins[1]])
        C = W.shape[0] if p.op == "Conv" else W.shape[1] * int(p.attrs.get("group", 1))
        return C, W.ndim, 1
    if p.op == LINEAR:
        if ins[1] not in c or (ins[2] and ins[2] not in c) or p.attrs.get("vector"):
            return None
        rank = ranks.get(ins[0])
        return np.shape(c[ins[1]])[0], rank, None if rank is None else rank - 1
    if p.op == "BatchNormalization":
        if len(ins) < 5 or any(i not in c for i in ins[1:5]) or len([o for o in p.outputs if o]) > 1:
            return None
        return np.size(c[ins[1]]), ranks.get(ins[0]), 1
    return None


def _channel_vectors(a, C, rank, axis):
    """Affine a's scale and shift as C-vectors along `axis` of a rank-`rank` tensor, or None when they vary
    along another axis (or the rank is unknown and they are not scalars)."""
    vecs = []
    for v, dflt in ((a.attrs["scale"], 1.0), (a.attrs["shift"], 0.0)):
        if v is None:
            vecs.append(np.full(C, dflt))
            continue
        v = np.asarray(v, np.float64)
        if v.size == 1 and v.ndim <= (rank if rank is not None else 2):
            vecs.append(np.full(C, v.reshape(-1)[0]))
            continue
        if rank is None or axis is None or v.ndim > rank:
            return None
        shape = (1,) * (rank - v.ndim) + v.shape
        if varying_axes(shape) != [axis] or shape[axis] != C:
            return None
        vecs.append(v.reshape(-1))
    return vecs


def _fold_into(prog, p, s, t, uses):
    """p's weights and bias replaced by those of y = s * p(x) + t (s, t: one value per output channel)."""
    c, ins = prog.consts, p.inputs
    W = np.asarray(c[ins[1]], np.float64)
    if p.op == "BatchNormalization":  # y' = (s*scale) * xhat + (s*B + t)
        Wn = W * s
    elif p.op == "Conv":
        Wn = W * s.reshape((-1,) + (1,) * (W.ndim - 1))
    elif p.op == "ConvTranspose":  # W is [C_in, C_out/group, k...]: output channel g*C_out/group + j
        g, k = int(p.attrs.get("group", 1)), W.shape[2:]
        Wn = (W.reshape((g, W.shape[0] // g, W.shape[1]) + k)
              * s.reshape((g, 1, W.shape[1]) + (1,) * len(k))).reshape(W.shape)
    else:  # LINEAR, W [OUT, IN]
        Wn = W * s[:, None]
    old_b = ins[2] if len(ins) > 2 else ""
    b = np.asarray(c[old_b], np.float64) if old_b else np.zeros(len(s))
    new_w = prog.derive(ins[1], Wn.astype(np.float32), "folded", uses)
    if old_b:
        new_b = prog.derive(old_b, (b * s + t).astype(np.float32), "folded", uses)
    else:  # a new bias, named after the weight ("conv1.weight" -> "conv1.bias")
        new_b = prog.fresh(ins[1][:-len(".weight")] + ".bias" if ins[1].endswith(".weight") else ins[1] + "_bias")
        c[new_b] = (b * s + t).astype(np.float32)
    p.inputs = list(ins) + [""] * (3 - len(ins))
    p.inputs[1], p.inputs[2] = new_w, new_b
    uses[new_w] = uses[new_b] = 1


def merge_affines(prog):
    uses = prog.uses()
    prod = prog.producers()
    drop = set()
    for a in prog.nodes:
        if a.op != AFFINE:
            continue
        p = prod.get(a.inputs[0])
        if p is None or p.op != AFFINE or id(p) in drop or uses[a.inputs[0]] != 1 \
                or a.inputs[0] in prog.output_names or "bcast" in p.attrs or "bcast" in a.attrs:
            continue  # (a collapsed constant stays with its node: the trace may map the original instead)
        s1 = 1.0 if p.attrs["scale"] is None else np.asarray(p.attrs["scale"], np.float64)
        t1 = 0.0 if p.attrs["shift"] is None else np.asarray(p.attrs["shift"], np.float64)
        s2 = 1.0 if a.attrs["scale"] is None else np.asarray(a.attrs["scale"], np.float64)
        t2 = 0.0 if a.attrs["shift"] is None else np.asarray(a.attrs["shift"], np.float64)
        try:
            full = broadcast_shapes(*[np.shape(v) for v in (s1, t1, s2, t2)])
        except Invalid:
            continue
        if len(varying_axes(full)) > 1:  # the merged constant would vary along several axes
            continue
        s, t = np.asarray(s1 * s2), np.asarray(t1 * s2 + t2)
        if isinstance(affine_layout(s, t), str):
            continue
        a.attrs = {"scale": s, "shift": t, "from": a.attrs["from"]}
        a.inputs[0] = p.inputs[0]
        drop.add(id(p))
        prod[a.outputs[0]] = a
    if drop:
        prog.nodes = [n for n in prog.nodes if id(n) not in drop]
