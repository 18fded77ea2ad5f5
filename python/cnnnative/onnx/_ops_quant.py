"""int8 models (cnnnative.quantize) to ONNX: the engine's quantize / dequantize pairs are ONNX's QDQ format,
QuantizeLinear / DequantizeLinear with a per-tensor scale and a zero point of 0 whose type (uint8 / int8) gives
the quantized type. Weights stay float initializers (the engine quantizes them per output channel at compile;
ONNX Runtime runs the float convolution between the QDQ pairs, or fuses what it can)."""
from __future__ import annotations

import numpy as np

from ._registry import exports

_NP = {3: np.uint8, 5: np.int8}
_BY_NAME = {"uint8": np.uint8, "int8": np.int8}


@exports("quantize")
def export_quantize(ex, ins, attrs, outs, name, I, O):
    scale = ex.const(f"{name}.scale", np.array(float(attrs["scale"]), np.float32))
    zp = ex.const(f"{name}.zero_point", np.array(0, _NP[int(attrs["dtype"])]))
    ex.node("QuantizeLinear", [I[0], scale, zp], O, name)


@exports("dequantize")
def export_dequantize(ex, ins, attrs, outs, name, I, O):
    scale = ex.const(f"{name}.scale", np.array(float(attrs["scale"]), np.float32))
    zp = ex.const(f"{name}.zero_point", np.array(0, _BY_NAME[ex.graph.dtype(ins[0])]))
    ex.node("DequantizeLinear", [I[0], scale, zp], O, name)
