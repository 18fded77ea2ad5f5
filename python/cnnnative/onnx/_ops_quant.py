"""ONNX QDQ models and int8 models (cnnnative.quantize).

Export: the engine's quantize / dequantize pairs are ONNX's QDQ format, QuantizeLinear / DequantizeLinear with a
per-tensor scale and the zero point (attribute zero_point, 0 for cnnnative.quantize's symmetric activations) whose
type (uint8 / int8) gives the quantized type. Weights stay float initializers (the engine quantizes them per
output channel at compile).

Import (QDQ models as onnxruntime.quantization.quantize_static writes them, its defaults included: asymmetric
uint8 activations with zero points, per-tensor or per-channel int8 weights): DequantizeLinear of constant int8
weights and int32 biases folds into float weights at import (per-tensor or per-axis scales); QuantizeLinear /
DequantizeLinear on computed tensors become the engine's quantize / dequantize with their scale and zero point,
which the int8 compile pass turns into int8 kernels around convolutions, linear layers and pools (zero points
included, core/quantize.cpp). A weight quantized per tensor lies on one int8 grid, which per-channel
requantization would not keep: the Conv / Gemm / MatMul reading it gets the attribute weight_scale (the grid's
step), and the int8 kernels keep that grid for each row on it (ops/quant.hpp, quantize_weights), so the int8
products are the model's. Per-channel symmetric weights (the largest value of each row at 127) come back on their
own grid. Asymmetric weights (non-zero weight zero points, rare) fold to float too and are requantized
symmetric per channel: they run, not bit-exactly. The export drops weight_scale (it writes float weights). A
MaxPool over a quantized tensor (QOperator models) is the engine's qmax_pool2d (onnx/_ops_pool.py).

QOperator models: QLinearConv, QLinearMatMul and onnxruntime's com.microsoft QLinearAdd, QLinearGlobalAveragePool
and QGemm expand into the QDQ pattern at import (expand_qlinear)."""
from __future__ import annotations

import numpy as np

from ._base import Invalid, Unsupported
from ._emit import NodeContext
from ._registry import exports, imports

_NP = {3: np.uint8, 5: np.int8}
_BY_NAME = {"uint8": np.uint8, "int8": np.int8}
_ENGINE = {np.dtype(np.uint8): 3, np.dtype(np.int8): 5}


def fold_qdq(op, attrs, ins):
    """numpy QuantizeLinear / DequantizeLinear of constants (per-tensor, or per-axis with 1-D scales)."""
    if len(ins) < 2 or ins[0] is None or ins[1] is None:
        raise Invalid("needs x and y_scale / x_scale")
    x, scale = np.asarray(ins[0]), np.asarray(ins[1], np.float64)
    zp = np.asarray(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    if scale.size == 1 and (zp is None or zp.size == 1):  # one scale, whatever its rank: per tensor
        scale, zp = scale.reshape(()), None if zp is None else zp.reshape(())
    if scale.ndim > 1 or (zp is not None and zp.shape != scale.shape):
        raise Unsupported(f"scale {list(scale.shape)} / zero point: only per-tensor or per-axis (1-D) scales")
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise Invalid("scales must be finite and > 0")
    if scale.ndim == 1:
        axis = int(attrs.get("axis", 1))
        axis = axis + x.ndim if axis < 0 else axis
        if not 0 <= axis < x.ndim or x.shape[axis] != scale.size:
            raise Invalid(f"{scale.size} scales along axis {attrs.get('axis', 1)} of a {list(x.shape)} tensor")
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zp = None if zp is None else zp.reshape(shape)
    if op == "DequantizeLinear":
        if x.dtype.kind not in "iu":
            raise Invalid(f"DequantizeLinear of dtype {x.dtype}")
        z = 0 if zp is None else zp.astype(np.float64)
        return ((x.astype(np.float64) - z) * scale).astype(np.float32)
    qt = np.dtype(np.uint8) if zp is None else zp.dtype
    if qt not in _ENGINE:
        raise Unsupported(f"QuantizeLinear to {qt}")
    info = np.iinfo(qt)
    z = 0 if zp is None else zp.astype(np.float64)
    return np.clip(np.rint(x.astype(np.float64) / scale) + z, info.min, info.max).astype(qt)


def weight_grid(op, attrs, ins):
    """The int8 grid step of a folded DequantizeLinear of constant integers with zero point 0 and one scale (per
    tensor, or per axis with all scales equal), else None: the weight_scale the Conv / Gemm reading it gets."""
    if op != "DequantizeLinear" or len(ins) < 2 or ins[0] is None or ins[1] is None:
        return None
    x, scale = np.asarray(ins[0]), np.asarray(ins[1], np.float64).reshape(-1)
    zp = np.asarray(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    if x.dtype not in (np.int8, np.uint8) or scale.size == 0 or np.any(scale != scale[0]):
        return None
    if zp is not None and np.any(zp != 0):
        return None
    return float(np.float32(scale[0]))


def _scalar_qparams(ctx: NodeContext, default_type):
    scale = ctx.constant(1, "scale")
    if scale is None:
        raise Invalid("needs a scale")
    scale = np.asarray(scale, np.float64)
    if scale.size != 1:
        raise Unsupported(f"a per-axis scale {list(scale.shape)} on a computed tensor (only weights take one)")
    s = float(scale.reshape(-1)[0])
    if not (np.isfinite(s) and s > 0):
        raise Invalid(f"scale must be finite and > 0, got {s}")
    zp = ctx.constant(2, "zero point")
    qt = np.dtype(default_type) if zp is None else np.asarray(zp).dtype
    if qt not in _ENGINE:
        raise Unsupported(f"quantized type {qt} (uint8 and int8 only)")
    z = 0 if zp is None else int(np.asarray(zp).reshape(-1)[0])
    if zp is not None and np.asarray(zp).size != 1:
        raise Unsupported(f"a zero point of {np.asarray(zp).size} values on a computed tensor (one expected)")
    return s, _ENGINE[qt], z


@imports("QuantizeLinear", engine_ops=("quantize",))
def map_quantize(ctx: NodeContext):
    s, dt, z = _scalar_qparams(ctx, np.uint8)
    return ctx.op("quantize", [ctx.tensor(0, "x")], {"scale": s, "dtype": dt, "zero_point": z})


@imports("DequantizeLinear", engine_ops=("dequantize",))
def map_dequantize(ctx: NodeContext):
    x = ctx.tensor(0, "x")
    s, dt, z = _scalar_qparams(ctx, np.uint8)
    if ctx.has(2) and {3: "uint8", 5: "int8"}[dt] != x.dtype:
        raise Invalid(f"zero point type does not match the quantized input ({x.dtype})")
    return ctx.op("dequantize", [x], {"scale": s, "zero_point": z})


@exports("quantize")
def export_quantize(ex, ins, attrs, outs, name, I, O):
    scale = ex.const(f"{name}.scale", np.array(float(attrs["scale"]), np.float32))
    zp = ex.const(f"{name}.zero_point", np.array(int(attrs.get("zero_point", 0)), _NP[int(attrs["dtype"])]))
    ex.node("QuantizeLinear", [I[0], scale, zp], O, name)


@exports("dequantize")
def export_dequantize(ex, ins, attrs, outs, name, I, O):
    scale = ex.const(f"{name}.scale", np.array(float(attrs["scale"]), np.float32))
    zp = ex.const(f"{name}.zero_point", np.array(int(attrs.get("zero_point", 0)), _BY_NAME[ex.graph.dtype(ins[0])]))
    ex.node("DequantizeLinear", [I[0], scale, zp], O, name)


_MS = "com.microsoft."  # the importer's op names of com.microsoft nodes


def _bias_scale(prog, n, a_s, b_s, what):
    """The constant scale of an int32 bias quantized with a_scale * b_scale (per tensor, or per output channel)."""
    if a_s not in prog.consts or b_s not in prog.consts:
        raise Unsupported(f"{n.onnx_op} {n.name!r}: the scales must be constants ({what})")
    name = prog.fresh(f"{n.name}/bias_scale")
    prog.consts[name] = (np.asarray(prog.consts[a_s], np.float64) *
                         np.asarray(prog.consts[b_s], np.float64)).astype(np.float32).reshape(-1)
    return name


def _expand_ms(prog, n, out):
    """onnxruntime's com.microsoft QOperator ops quantize_static writes (QLinearAdd, QLinearGlobalAveragePool,
    QGemm) as DequantizeLinear -> the float op -> QuantizeLinear, as the standard ones below."""
    from ._base import Node
    op = n.op[len(_MS):]
    ins = list(n.inputs) + [""] * 9

    def dq(x, s, z, tag, **attrs):
        y = prog.fresh(f"{n.name}/{tag}")
        out.append(Node("DequantizeLinear", f"{n.name}/dequantize_{tag}", [x, s, z], [y], attrs, "DequantizeLinear"))
        return y

    def q(y, s, z):
        out.append(Node("QuantizeLinear", f"{n.name}/quantize", [y, s, z], list(n.outputs[:1]), {}, "QuantizeLinear"))
    if op == "QLinearAdd":
        a, b, y = dq(ins[0], ins[1], ins[2], "a"), dq(ins[3], ins[4], ins[5], "b"), prog.fresh(f"{n.name}/y")
        out.append(Node("Add", n.name, [a, b], [y], {}, "Add"))
        q(y, ins[6], ins[7])
    elif op == "QLinearGlobalAveragePool":
        if int(n.attrs.get("channels_last", 0)):
            raise Unsupported(f"QLinearGlobalAveragePool {n.name!r}: channels_last=1")
        x, y = dq(ins[0], ins[1], ins[2], "x"), prog.fresh(f"{n.name}/y")
        out.append(Node("GlobalAveragePool", n.name, [x], [y], {}, "GlobalAveragePool"))
        q(y, ins[3], ins[4])
    else:  # QGemm: A, a_scale, a_zp, B, b_scale, b_zp, [C int32 bias], [y_scale, y_zp] (no y_scale: float out)
        tb = int(n.attrs.get("transB", 0))
        a, b = dq(ins[0], ins[1], ins[2], "a"), dq(ins[3], ins[4], ins[5], "b", axis=0 if tb else 1)
        mid = [a, b]
        if ins[6]:
            mid.append(dq(ins[6], _bias_scale(prog, n, ins[1], ins[4], "with a bias"), "", "c", axis=0))
        attrs = {k: n.attrs[k] for k in ("alpha", "transA", "transB") if k in n.attrs}
        y = prog.fresh(f"{n.name}/y") if ins[7] else n.outputs[0]
        out.append(Node("Gemm", n.name, mid, [y], attrs, "Gemm"))
        if ins[7]:
            q(y, ins[7], ins[8])


def expand_qlinear(prog):
    """QOperator models: QLinearConv / QLinearMatMul (and onnxruntime's com.microsoft QLinearAdd,
    QLinearGlobalAveragePool, QGemm) become DequantizeLinear -> Conv / MatMul (Add, GlobalAveragePool, Gemm) ->
    QuantizeLinear at import, before constant folding, so their int8 weights (and the int32 biases, scaled by
    x_scale * w_scale) fold to float weights and the int8 compile pass makes them int8 kernels again."""
    from ._base import Node
    out = []
    for n in prog.nodes:
        if n.op in (_MS + "QLinearAdd", _MS + "QLinearGlobalAveragePool", _MS + "QGemm"):
            _expand_ms(prog, n, out)
            continue
        if n.op not in ("QLinearConv", "QLinearMatMul"):
            out.append(n)
            continue
        conv = n.op == "QLinearConv"
        ins = list(n.inputs) + [""] * (9 - len(n.inputs))
        x, xs, xz, w, ws, wz, ys, yz = ins[:8]
        if not (x and xs and w and ws and ys):
            raise Invalid(f"{n.onnx_op} {n.name!r}: missing inputs")

        def tmp(suffix):
            return prog.fresh(f"{n.name}/{suffix}")
        xf, wf, yf = tmp("x"), tmp("w"), tmp("y")
        out.append(Node("DequantizeLinear", f"{n.name}/dequantize_x", [x, xs, xz], [xf], {}, "DequantizeLinear"))
        out.append(Node("DequantizeLinear", f"{n.name}/dequantize_w", [w, ws, wz], [wf],
                        {"axis": 0 if conv else 1}, "DequantizeLinear"))
        mid = [xf, wf]
        if conv and ins[8]:
            bs = _bias_scale(prog, n, xs, ws, "with a bias")
            bf = tmp("b")
            out.append(Node("DequantizeLinear", f"{n.name}/dequantize_b", [ins[8], bs], [bf], {"axis": 0},
                            "DequantizeLinear"))
            mid.append(bf)
        out.append(Node("Conv" if conv else "MatMul", n.name, mid, [yf], dict(n.attrs) if conv else {},
                        "Conv" if conv else "MatMul"))
        out.append(Node("QuantizeLinear", f"{n.name}/quantize", [yf, ys, yz], list(n.outputs), {}, "QuantizeLinear"))
    prog.nodes = out
