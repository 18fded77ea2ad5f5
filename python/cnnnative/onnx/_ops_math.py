"""Op mappers: BatchNormalization, the linear ops (LINEAR from Gemm/MatMul, Gemm, MatMul), activations,
AFFINE (a per-channel y = x * scale + shift, as an eval-mode batch_norm with mean 0, var 1, eps 0),
elementwise Add/Sum/Sub/Mul/Div of tensors, Dropout, LRN."""
from __future__ import annotations

import numpy as np

from ._base import Invalid, Unsupported, scalar_value
from ._emit import NodeContext


def map_batchnorm(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    if int(ctx.attr("training_mode", 0)):
        raise Unsupported("training_mode=1 (batch statistics as outputs); export the model in eval mode")
    if any(o for o in ctx.node.outputs[1:]):
        raise Unsupported("the running-statistics outputs (training mode) are not supported")
    if int(ctx.attr("spatial", 1)) != 1:
        raise Unsupported("spatial=0")
    params = [ctx.tensor(k, n) for k, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
    eps, momentum = float(ctx.attr("epsilon", 1e-5)), 1.0 - float(ctx.attr("momentum", 0.9))  # engine's = 1 - ONNX's
    r = len(x.shape)
    if r >= 2:
        for p, what in zip(params, ("scale", "B", "mean", "var")):
            if list(p.shape) != [x.shape[1]]:
                raise Invalid(f"{what} {list(p.shape)} must be [{x.shape[1]}] (one value per channel of X "
                              f"{list(x.shape)})")
    if r in (2, 4):
        return ctx.batch_norm(x, *params, eps, momentum, ctx.builder.training)
    if r == 3:
        y = ctx.batch_norm(ctx.reshape(x, list(x.shape) + [1]), *params, eps, momentum, ctx.builder.training)
        return ctx.reshape(y, x.shape)
    raise Unsupported(f"input of rank {r} (2-D, 3-D and 4-D are supported)")


def map_linear(ctx: NodeContext):
    x, w = ctx.tensor(0, "A"), ctx.tensor(1, "B")
    bias = ctx.tensor(2, "C") if ctx.has(2) else None
    post = None  # a computed Gemm C of the output's full shape is added after the product
    if bias is not None and int(np.prod(bias.shape)) != w.shape[0]:
        bias, post = None, bias
    if bias is not None and list(bias.shape) != [w.shape[0]]:
        bias = ctx.reshape(bias, [w.shape[0]])
    r = len(x.shape)
    if ctx.attr("gemm") and r != 2:
        raise Invalid(f"A must be 2-D, got {list(x.shape)}")
    if r < 2:
        raise Unsupported(f"a {r}-D left operand (only 2-D and batched N-D x 2-D products)")
    if x.shape[-1] != w.shape[1]:
        raise Invalid(f"inner dimensions differ: {list(x.shape)} x weight of {w.shape[1]} inputs")
    x2 = x if r == 2 else ctx.reshape(x, [-1, x.shape[-1]])
    grid = ctx.trace.prog.weight_grids.get(ctx.node.inputs[1])  # per-tensor int8 weights (_ops_quant.py)
    y = ctx.op("linear", [x2, w] + ([bias] if bias is not None else []), {"weight_scale": grid} if grid else None)
    out = list(x.shape[:-1]) + ([] if ctx.attr("vector") else [w.shape[0]])
    y = ctx.reshape(y, out)
    if post is not None:
        if list(post.shape) != out:
            raise Unsupported(f"C {list(post.shape)} neither a bias of {w.shape[0]} values nor of the output "
                              f"shape {out}")
        y = ctx.op("add", [y, post])
    return y


def map_gemm(ctx: NodeContext):
    """Y = alpha * A' B' + beta * C. The linear op where it applies (A [M, K], B a [N, K] weight after the
    import's transposes and scaling, C a bias of N values); otherwise a matmul with transposes, scaled, plus C
    broadcast (a computed B, transA=1, alpha or beta != 1 with computed operands, C of another broadcastable shape)."""
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    x, w = ctx.tensor(0, "A"), ctx.tensor(1, "B")
    if len(x.shape) != 2 or len(w.shape) != 2:
        raise Invalid(f"A and B must be 2-D, got {list(x.shape)} and {list(w.shape)}")
    k_a = x.shape[0] if ta else x.shape[1]
    k_b = w.shape[1] if tb else w.shape[0]
    if k_a != k_b:
        raise Invalid(f"inner dimensions differ: A{'^T' if ta else ''} {list(x.shape)}, "
                      f"B{'^T' if tb else ''} {list(w.shape)}")
    n_out = w.shape[0] if tb else w.shape[1]
    bias = ctx.tensor(2, "C") if ctx.has(2) else None
    if not ta and tb and alpha == 1.0 and (bias is None or (beta == 1.0 and int(np.prod(bias.shape)) == n_out)):
        ins = [x, w] + ([ctx.reshape(bias, [n_out])] if bias is not None else [])
        return ctx.op("linear", ins)
    ctx.need("matmul")
    y = ctx.op("matmul", [x, w], {"trans_a": ta, "trans_b": tb})
    if alpha != 1.0:
        y = ctx.op("binary_scalar", [y], {"kind": 3, "value": alpha})
    if bias is not None and beta != 0.0:
        c = bias if beta == 1.0 else ctx.op("binary_scalar", [bias], {"kind": 3, "value": beta})
        m_out = x.shape[1] if ta else x.shape[0]
        cs = list(c.shape)
        if len(cs) > 2 or any(d not in (1, want) for d, want in zip(cs[::-1], [n_out, m_out])):
            raise Invalid(f"C {cs} does not broadcast to [{m_out}, {n_out}]")
        y = ctx.op("binary_add", [y, c])
    return y


def map_matmul(ctx: NodeContext):
    """MatMul the LINEAR rewrite did not take (two computed tensors, broadcast batches, 1-D operands)."""
    from ._ops_shape import map_matmul_general
    return map_matmul_general(ctx)


def activation(op, **attrs):
    """Mapper of an ONNX activation to engine op `op`; attrs: engine attribute -> (ONNX attribute, default)."""
    def mapper(ctx: NodeContext):
        extra = {k: float(ctx.attr(k2, d)) for k, (k2, d) in attrs.items()}
        return ctx.op(op, [ctx.tensor(0, "X")], extra)
    return mapper


def map_affine(ctx: NodeContext):
    """y = x * scale + shift, the constants varying along at most one axis (_rewrite.affine_layout): an
    eval-mode batch_norm with mean 0, var 1, eps 0 over that axis as channels. Along axis 1 of a 2-D or 4-D
    tensor it reads x itself, so that after a conv2d the engine's inference fusion folds it into the conv."""
    from ._ops_binary import map_affine_broadcast
    if "problem" in ctx.node.attrs:
        return map_affine_broadcast(ctx)
    x = ctx.tensor(0, "X")
    a = ctx.node.attrs
    s = list(x.shape)
    r = len(s)
    if a["ndim"] > r:
        return map_affine_broadcast(ctx)
    params = [ctx.trace.tensor(k) for k in a["keys"]]  # weight, bias, running_mean, running_var
    if a["axis_from_end"] is None:
        x2 = ctx.reshape(x, [int(np.prod(s)), 1])
    else:
        axis = r - a["axis_from_end"]
        if s[axis] != a["d"]:
            return map_affine_broadcast(ctx)
        if axis == 1 and r in (2, 4):
            x2 = x
        else:
            x2 = ctx.reshape(x, [int(np.prod(s[:axis])), s[axis], int(np.prod(s[axis + 1:])), 1])
    y = ctx.batch_norm(x2, *params, 0.0, 0.0, False)
    return ctx.reshape(y, s)


def map_add(ctx: NodeContext):
    """Add (same shapes: the engine's add; broadcasting, constants: _ops_binary)."""
    from ._ops_binary import map_binary
    return map_binary(ctx)


def map_sum(ctx: NodeContext):
    from ._ops_binary import map_sum as map_sum_broadcast
    return map_sum_broadcast(ctx)


def map_mul_div(ctx: NodeContext):
    from ._ops_binary import map_binary
    return map_binary(ctx)


def map_sub(ctx: NodeContext):
    from ._ops_binary import map_binary
    return map_binary(ctx)


def map_dropout(ctx: NodeContext):
    x = ctx.tensor(0, "data")
    if ctx.opset < 12:
        ratio = float(ctx.attr("ratio", 0.5))
        training = False
    else:
        r = ctx.constant(1, "ratio")
        ratio = 0.5 if r is None else float(scalar_value(r, "ratio"))
        t = ctx.constant(2, "training_mode")
        training = bool(t is not None and scalar_value(t, "training_mode"))
    if not 0 <= ratio < 1:
        raise Invalid(f"ratio={ratio}: must be in [0, 1)")
    if training and ratio > 0:
        raise Unsupported("training_mode=True: random masks cannot match another runtime's")
    y = x
    if ctx.builder.training and ratio > 0:
        y = ctx.op("dropout", [x], {"p": ratio, "training": 1})
    outs = [y]
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        outs.append(np.broadcast_to(np.ones((), bool), x.shape))  # a view: no memory for any shape
    return outs


def map_lrn(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    size = int(ctx.attr("size"))
    if size % 2 == 0:
        raise Unsupported(f"size={size}: ONNX centres an even window differently from the engine "
                          "(odd sizes only)")
    ctx.need("lrn")
    x4, one_d = ctx.to_2d(x, "LRN")
    y = ctx.op("lrn", [x4], {"size": size, "alpha": float(ctx.attr("alpha", 1e-4)),
                             "beta": float(ctx.attr("beta", 0.75)),
                             "k": float(ctx.attr("bias", 1.0))})
    return ctx.reshape(y, x.shape) if one_d else y
