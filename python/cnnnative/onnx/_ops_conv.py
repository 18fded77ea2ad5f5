"""Op mappers: Conv and ConvTranspose (1-D as 2-D with H = 1). ONNX's auto_pad and asymmetric pads are
resolved against the traced sizes; pads the engine's symmetric padding cannot express exactly become an
explicit pad (concat with `fill`) or a crop of the output."""
from __future__ import annotations

from ._base import Invalid, Unsupported
from ._emit import NodeContext


def spatial_pads(ctx: NodeContext, in_sp, k_eff, strides):
    sd = len(in_sp)
    auto = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = ctx.attr("pads")
        pads = [0] * (2 * sd) if pads is None else [int(p) for p in pads]
        if len(pads) != 2 * sd:
            raise Invalid(f"pads={pads} should hold {2 * sd} values (2 per spatial axis)")
        if min(pads) < 0:
            raise Invalid(f"negative pads {pads}")
        return list(zip(pads[:sd], pads[sd:]))
    if auto == "VALID":
        return [(0, 0)] * sd
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, s, k in zip(in_sp, strides, k_eff):
            total = max((-(-i // s) - 1) * s + k - i, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return out
    raise Invalid(f"auto_pad={auto!r}")


def conv_out(n, k_eff, s, pb, pe):
    return (n + pb + pe - k_eff) // s + 1


def map_conv(ctx: NodeContext):
    x, w = ctx.tensor(0, "X"), ctx.tensor(1, "W")
    bias = ctx.tensor(2, "B") if ctx.has(2) else None
    r = len(x.shape)
    if r not in (3, 4):
        raise Unsupported(f"{r - 2}-D convolution (input {list(x.shape)}); only 1-D and 2-D are supported")
    if len(w.shape) != r:
        raise Invalid(f"W {list(w.shape)} does not match X {list(x.shape)} (same rank expected)")
    sd = r - 2
    ks = list(w.shape[2:])
    if ctx.attr("kernel_shape") is not None and [int(k) for k in ctx.attr("kernel_shape")] != ks:
        raise Invalid(f"kernel_shape={list(ctx.attr('kernel_shape'))} disagrees with W {list(w.shape)}")
    strides, dil = ctx.ints("strides", 1, sd), ctx.ints("dilations", 1, sd)
    group = int(ctx.attr("group", 1))
    C, M = x.shape[1], w.shape[0]
    if group < 1 or C % group or M % group or w.shape[1] * group != C:
        raise Invalid(f"group={group} with X {list(x.shape)} and W {list(w.shape)}: W must be [M, C/group, ...] "
                      "with C and M divisible by group")
    if bias is not None and list(bias.shape) != [M]:
        raise Invalid(f"B {list(bias.shape)} must be [{M}] (one bias per output channel)")
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dil)]
    pads = spatial_pads(ctx, x.shape[2:], k_eff, strides)
    in_sp = list(x.shape[2:])
    outs = [conv_out(n, k, s, pb, pe) for n, k, s, (pb, pe) in zip(in_sp, k_eff, strides, pads)]
    if min(outs) < 1:
        raise Invalid(f"the output would be empty: X {list(x.shape)}, kernel {ks}, dilations {dil}, pads {pads}")
    one_d = sd == 1
    if one_d:
        x = ctx.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        w = ctx.reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]])
        strides, dil, k_eff, pads, in_sp = [1] + strides, [1] + dil, [1] + k_eff, [(0, 0)] + pads, [1] + in_sp
    sym = []
    for ax, ((pb, pe), n, k, s) in enumerate(zip(pads, in_sp, k_eff, strides)):
        if pb == pe or conv_out(n, k, s, pb, pb) == conv_out(n, k, s, pb, pe):
            sym.append(pb)
        else:
            m = min(pb, pe)
            x = ctx.pad(x, 2 + ax, pb - m, pe - m, 0.0)
            sym.append(m)
    ins = [x, w] + ([bias] if bias is not None else [])
    attrs = {"stride": strides, "padding": sym, "dilation": dil, "groups": group}
    grid = ctx.trace.prog.weight_grids.get(ctx.node.inputs[1])
    if grid is not None:  # per-tensor int8 weights (QDQ): the int8 kernels keep their grid (_ops_quant.py)
        attrs["weight_scale"] = grid
    y = ctx.op("conv2d", ins, attrs)
    if one_d:
        y = ctx.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def map_conv_transpose(ctx: NodeContext):
    ctx.need("conv_transpose2d")
    x, w = ctx.tensor(0, "X"), ctx.tensor(1, "W")
    bias = ctx.tensor(2, "B") if ctx.has(2) else None
    r = len(x.shape)
    if r not in (3, 4) or len(w.shape) != r:
        raise Unsupported(f"{r - 2}-D transposed convolution (X {list(x.shape)}, W {list(w.shape)}); "
                          "only 1-D and 2-D are supported")
    sd = r - 2
    ks = list(w.shape[2:])
    if ctx.attr("kernel_shape") is not None and [int(k) for k in ctx.attr("kernel_shape")] != ks:
        raise Invalid(f"kernel_shape={list(ctx.attr('kernel_shape'))} disagrees with W {list(w.shape)}")
    strides, dil = ctx.ints("strides", 1, sd), ctx.ints("dilations", 1, sd)
    opad = ctx.ints("output_padding", 0, sd)
    group = int(ctx.attr("group", 1))
    if group < 1 or x.shape[1] != w.shape[0] or w.shape[0] % group:
        raise Invalid(f"group={group} with X {list(x.shape)} and W {list(w.shape)}: W must be [C, M/group, ...] "
                      "with C divisible by group")
    if bias is not None and list(bias.shape) != [w.shape[1] * group]:
        raise Invalid(f"B {list(bias.shape)} must be [{w.shape[1] * group}] (one bias per output channel)")
    in_sp = list(x.shape[2:])
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, in_sp, ks, dil)]
    oshape = ctx.attr("output_shape")
    if oshape is not None:
        if len(oshape) < sd:
            raise Invalid(f"output_shape={list(oshape)} has fewer values than the {sd} spatial axes")
        oshape = [int(v) for v in oshape][-sd:]
    auto = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    crops = []  # (start crop, end crop relative to the full output; negative end = extension)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        target = oshape or [i * s for i, s in zip(in_sp, strides)]
        for f, op_, t in zip(full, opad, target):
            total = f + op_ - t
            pb = total // 2 if auto == "SAME_UPPER" else total - total // 2
            crops.append((pb, f - pb - t))
    elif auto in ("NOTSET", "VALID"):
        pads = [0] * (2 * sd) if auto == "VALID" or ctx.attr("pads") is None else [int(p) for p in ctx.attr("pads")]
        if len(pads) != 2 * sd:
            raise Invalid(f"pads={pads} should hold {2 * sd} values (2 per spatial axis)")
        for ax in range(sd):
            pb, pe = pads[ax], pads[sd + ax]
            if oshape is not None:
                crops.append((pb, full[ax] - pb - oshape[ax]))
            else:
                crops.append((pb, pe - opad[ax]))
    else:
        raise Invalid(f"auto_pad={auto!r}")
    one_d = sd == 1
    if one_d:
        x = ctx.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        w = ctx.reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]])
        strides, dil, crops = [1] + strides, [1] + dil, [(0, 0)] + crops
    padding, out_pad, extra = [], [], []
    for (cs, ce), s, d in zip(crops, strides, dil):
        if cs < 0:
            raise Unsupported(f"pads/output_shape need {-cs} extra row(s) before the output")
        if 0 <= cs - ce < max(s, d):
            padding.append(cs), out_pad.append(cs - ce), extra.append((0, 0))
        elif ce >= 0:
            p = min(cs, ce)
            padding.append(p), out_pad.append(0), extra.append((cs - p, ce - p))
        else:
            raise Unsupported(f"output_padding/output_shape extend the output by {-ce} beyond what the "
                              f"engine's output_padding (< stride {s} or dilation {d}) allows")
    ins = [x, w] + ([bias] if bias is not None else [])
    y = ctx.op("conv_transpose2d", ins, {"stride": strides, "padding": padding, "output_padding": out_pad,
                                         "dilation": dil, "groups": group})
    for ax, (s0, e0) in enumerate(extra):
        if s0 or e0:
            n = y.shape[2 + ax]
            y = ctx.crop(y, 2 + ax, s0, n - s0 - e0)
    if one_d:
        y = ctx.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y
