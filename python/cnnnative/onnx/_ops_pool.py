"""Op mappers: MaxPool, AveragePool (1-D as 2-D), GlobalAveragePool, GlobalMaxPool. Asymmetric pads become
symmetric engine padding plus a crop of leading windows where that is exact, else explicit padding."""
from __future__ import annotations

from ._base import Invalid, Unsupported
from ._emit import NodeContext
from ._ops_conv import spatial_pads

NEG_BIG = -3.4028234663852886e38  # max-pool padding value (-FLT_MAX)


def pool_out(n, k_eff, s, pb, pe, ceil):
    num = n + pb + pe - k_eff
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + pb:
        o -= 1
    return o


def _pool(ctx: NodeContext, kind):
    x = ctx.tensor(0, "X")
    if kind == "max" and len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        raise Unsupported("the Indices output is not supported")
    r = len(x.shape)
    if r not in (3, 4):
        raise Unsupported(f"{r - 2}-D pooling (input {list(x.shape)}); only 1-D and 2-D are supported")
    sd = r - 2
    ks = ctx.attr("kernel_shape")
    if ks is None or len(ks) != sd:
        raise Invalid(f"kernel_shape={ks} for a {sd}-D input")
    ks = [int(k) for k in ks]
    strides, dil = ctx.ints("strides", 1, sd), ctx.ints("dilations", 1, sd)
    if kind == "avg" and any(d != 1 for d in dil):
        raise Unsupported(f"dilations={dil} (the engine's average pooling has no dilation)")
    ceil = 1 if int(ctx.attr("ceil_mode", 0)) else 0
    count_pad = 1 if int(ctx.attr("count_include_pad", 0)) else 0
    if kind == "max" and int(ctx.attr("storage_order", 0)) != 0 and len(ctx.node.outputs) > 1:
        raise Unsupported("storage_order=1")
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dil)]
    in_sp = list(x.shape[2:])
    pads = spatial_pads(ctx, in_sp, k_eff, strides)
    expect = [pool_out(n, k, s, pb, pe, ceil) for n, k, s, (pb, pe) in zip(in_sp, k_eff, strides, pads)]
    if min(expect) < 1:
        raise Invalid(f"kernel {ks} (dilations {dil}) does not fit input {list(x.shape)} with pads {pads}")
    x, one_d = ctx.to_2d(x, "pooling")
    if one_d:
        ks, strides, dil, k_eff, pads, in_sp = [1] + ks, [1] + strides, [1] + dil, [1] + k_eff, [(0, 0)] + pads, \
            [1] + in_sp
    sym, crops = [], {}
    for ax, ((pb, pe), n, k, ke, s) in enumerate(zip(pads, in_sp, ks, k_eff, strides)):
        half = k // 2
        o = pool_out(n, ke, s, pb, pe, ceil)
        if pb == pe and pb <= half:
            sym.append(pb)
            continue
        if pb != pe and pb <= half and pool_out(n, ke, s, pb, pb, ceil) == o:
            end = (o - 1) * s + ke - 1  # padded coordinates of the last window's last cell
            if kind == "max" or not count_pad or min(end, n + pb + pe - 1) == min(end, n + 2 * pb - 1):
                sym.append(pb)
                continue
        p = max(pb, pe)  # symmetric max(pb, pe), then drop the leading windows (they are stride-aligned)
        if not ceil and p <= half and (p - pb) % s == 0 and (n + 2 * p - ke) // s + 1 >= (p - pb) // s + o:
            ctx.need("split")
            sym.append(p)
            crops[ax] = ((p - pb) // s, o)
            continue
        if kind == "avg" and not count_pad:
            raise Unsupported(f"pads {list(pads[ax])} on axis {ax} with count_include_pad=0 cannot be "
                              "expressed with the engine's symmetric pool padding")
        m = min(pb, pe, half)
        x = ctx.pad(x, 2 + ax, pb - m, pe - m, NEG_BIG if kind == "max" else 0.0)
        sym.append(m)
    attrs = {"kernel": ks, "stride": strides, "padding": sym, "ceil_mode": ceil}
    if kind == "max" and x.dtype in ("uint8", "int8"):  # a quantized tensor (QOperator models): the int8 op
        if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
            raise Unsupported("the Indices output of a MaxPool over a quantized tensor")
        y = ctx.op("qmax_pool2d", [x], dict(attrs, dilation=dil))
    elif kind == "max":
        attrs.update(dilation=dil, training=int(ctx.builder.training))
        y = ctx.op("max_pool2d", [x], attrs, n_out=True)[0]
    else:
        attrs["count_include_pad"] = 1 if count_pad else 0
        y = ctx.op("avg_pool2d", [x], attrs)
    for ax, (start, length) in crops.items():
        y = ctx.crop(y, 2 + ax, start, length)
    got = list(y.shape[3:]) if one_d else list(y.shape[2:])
    if got != expect:
        raise Unsupported(f"ceil_mode={ceil} with pads {pads}: the engine gives spatial size {got}, ONNX {expect}")
    if one_d:
        y = ctx.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def map_maxpool(ctx):
    return _pool(ctx, "max")


def map_avgpool(ctx):
    return _pool(ctx, "avg")


def map_global_avg(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    x4, one_d = ctx.to_2d(x, "global pooling")
    y = ctx.op("global_avg_pool", [x4])
    return ctx.reshape(y, list(x.shape[:2]) + [1] * (len(x.shape) - 2)) if one_d else y


def map_global_max(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    x4, one_d = ctx.to_2d(x, "global pooling")
    h, w = x4.shape[2], x4.shape[3]
    attrs = {"kernel": [h, w], "stride": [h, w], "training": int(ctx.builder.training)}
    y = ctx.op("max_pool2d", [x4], attrs, n_out=True)[0]
    return ctx.reshape(y, list(x.shape[:2]) + [1] * (len(x.shape) - 2)) if one_d else y
