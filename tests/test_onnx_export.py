"""cnnnative.onnx.export_model: LeNet-5, a BN + residual net and a U-Net written with cnnnative modules
are exported (opset 17), pass onnx.checker, run in onnxruntime with the same outputs (where it is
installed) at several batch sizes, and import back into cnnnative with equal outputs. Also convert()."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import functional as F
from cnnnative import nn
from cnnnative.graph import current

onnx = pytest.importorskip("onnx")
import cnnnative.onnx as cno  # noqa: E402

OPS = set(cn._core.op_names())


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def _x(*s, seed=0):
    return np.random.default_rng(seed).standard_normal(s).astype(np.float32)


def _ort(model_proto, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _roundtrip(model, shape, batches=(2, 5), tmp_path=None, dynamic=True):
    path = None if tmp_path is None else tmp_path / "m.onnx"
    proto = cno.export_model(model, path, shape)
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        assert onnx.load(str(path)).graph.node
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert (dims[0].dim_param == "N") == dynamic
    back = cno.import_model(proto)
    for n in (batches if dynamic else (shape[0],)):
        x = _x(n, *shape[1:], seed=n)
        ref = model.compile(x.shape).run(x)
        assert _rel(back.compile(x.shape).run(x), ref) < 1e-6, "cnnnative -> ONNX -> cnnnative"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            continue
        assert _rel(_ort(proto, x), ref) < 1e-4, "onnxruntime"
    return proto, back


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    sd = model.state_dict()
    with cn.no_grad():
        for k, v in sd.items():
            if k.endswith("running_var"):
                v[...] = rng.uniform(0.5, 1.5, v.shape)
            elif k.endswith("running_mean") or (k.endswith(".bias") and "bn" in k):
                v[...] = rng.normal(0, 0.1, v.shape)
    return model


def test_lenet5(tmp_path):
    m = cn.models.lenet5(seed=0)
    proto, back = _roundtrip(m, (1, 1, 28, 28), tmp_path=tmp_path)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten",
                                                     "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    assert list(back.state_dict()) == list(m.state_dict())  # the initializers keep the state_dict names


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.Conv2d(8, 16, 1, stride=2)
        self.act = nn.LeakyReLU(0.1)
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu()
        y = (self.bn2(self.conv2(y)) + y).relu()
        y = self.act(self.down(self.pool(y)))
        y = self.avg(y).sigmoid() + y.tanh()
        y = self.drop(self.gap(y).flatten(1))
        return F.softmax(self.fc(y), 1)


def test_bn_residual_net(tmp_path):
    cn.manual_seed(0)
    m = _randomize_bn(ResidualNet())
    proto, back = _roundtrip(m, (1, 3, 16, 16), tmp_path=tmp_path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("BatchNormalization") == 2 and "Dropout" not in ops and ops.count("Add") == 2


class UNet(nn.Module):
    """Two levels: conv-BN-ReLU, max pool, transposed conv, skip concat, nearest upsampling, LRN."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(8, 16, 3, padding=1)
        rng = np.random.default_rng(0)
        self.up_weight = nn.Parameter(rng.normal(0, 0.2, (16, 8, 2, 2)))
        self.up_bias = nn.Parameter(rng.normal(0, 0.1, 8))
        self.dec = nn.Conv2d(32, 4, 3, padding=1)

    def forward(self, x):
        b = current()
        e = self.bn(self.enc(x)).relu()
        m = self.mid(self.pool(e)).relu()
        u = b.op("conv_transpose2d", [m, self._tensor("up_weight"), self._tensor("up_bias")],
                 {"stride": [2, 2]}, "up")[0]
        s = b.op("upsample_nearest2d", [m], {"scale": [2, 2]}, "upsample")[0]
        y = b.op("concat", [u, e, s], {"axis": 1}, "cat")[0]
        y = b.op("lrn", [y], {"size": 3, "alpha": 1e-3, "beta": 0.75, "k": 2.0}, "lrn")[0]
        return self.dec(y)


@pytest.mark.skipif(not {"conv_transpose2d", "concat", "upsample_nearest2d", "lrn"} <= OPS,
                    reason="the U-Net's engine ops are not in this build")
def test_unet(tmp_path):
    cn.manual_seed(1)
    m = _randomize_bn(UNet())
    proto, back = _roundtrip(m, (1, 3, 16, 16), tmp_path=tmp_path)
    ops = [n.op_type for n in proto.graph.node]
    assert {"ConvTranspose", "Concat", "Resize", "LRN"} <= set(ops)


@pytest.mark.skipif(not {"fill", "concat"} <= OPS, reason="explicit pads need fill and concat")
def test_imported_model_with_explicit_pads_exports_with_dynamic_batch():
    """An asymmetric conv pad the conv cannot express becomes the engine's pad op: no batch-specific constants,
    so the export keeps a dynamic batch."""
    from onnx import TensorProto, helper, numpy_helper
    W = _x(4, 3, 3, 3)
    g = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[2, 0, 0, 1], strides=[1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 5])],
                          [numpy_helper.from_array(W, "W")])
    imported = cno.import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    _roundtrip(imported, (2, 3, 6, 6), dynamic=True)


def test_imported_channel_pad_exports_with_fixed_batch():
    """A Pad of the channels becomes concat with fill tensors of the traced batch: batch-specific constants, so
    the export fixes the batch."""
    from onnx import TensorProto, helper, numpy_helper
    W = _x(4, 5, 3, 3)
    g = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["p"]),
                           helper.make_node("Conv", ["p", "W"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])],
                          [numpy_helper.from_array(W, "W"),
                           numpy_helper.from_array(np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64), "pads")])
    imported = cno.import_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    _roundtrip(imported, (2, 3, 6, 6), dynamic=False)


def test_unsupported_export_lists_nodes():
    class Odd(nn.Module):
        def forward(self, x):
            y = current().op("mse_loss", [x, x], {}, "loss")[0] if "mse_loss" in OPS else None
            z = current().op("softmax_cross_entropy", [x.flatten(1), current().input("labels", [2], "int32")],
                             {}, "ce")[0]
            return z if y is None else y
    with pytest.raises(cno.UnsupportedError) as e:
        cno.export_model(Odd(), None, (2, 3))
    assert {p[1] for p in e.value.problems} >= {"softmax_cross_entropy"}


def test_convert_onnx_to_onnx_and_cnn(tmp_path):
    m = cn.models.lenet5(seed=3)
    src = tmp_path / "lenet.onnx"
    cno.export_model(m, src, (1, 1, 28, 28))
    dst = tmp_path / "copy.onnx"
    assert cno.convert(src, dst) == dst
    x = _x(2, 1, 28, 28)
    assert _rel(cno.import_model(dst).compile(x.shape).run(x), m.compile(x.shape).run(x)) < 1e-6
    with pytest.raises(ValueError, match="cannot convert"):
        cno.convert(src, tmp_path / "x.txt")
    if getattr(cn, "save", None) is None or getattr(cn, "load", None) is None:
        pytest.skip("cnnnative.save/load (.cnn files) are not in this build")
    cnn = tmp_path / "lenet.cnn"
    cno.convert(src, cnn)
    loaded = cn.load(cnn)
    assert _rel(loaded.compile(x.shape).run(x), m.compile(x.shape).run(x)) < 1e-6
    if not hasattr(cn._core.Graph, "nodes"):
        pytest.skip(".cnn -> .onnx needs cnnnative._core.Graph.nodes() (node introspection), not in this build")
    back = tmp_path / "back.onnx"
    cno.convert(cnn, back, input_shape=(1, 1, 28, 28))
    assert _rel(cno.import_model(back).compile(x.shape).run(x), m.compile(x.shape).run(x)) < 1e-6


def test_export_from_graph_nodes():
    """The path for models loaded from .cnn files: export reads a compiled graph's nodes through
    Graph.nodes() ({op, name, inputs, outputs, attrs}); emulated here by serving a trace's records."""
    from cnnnative.onnx._exporter import trace_records
    m = _randomize_bn(ResidualNet())
    rec, x, ys = trace_records(m, (2, 3, 16, 16))

    class Graph:
        inputs, outputs = [x.vid], [ys[0].vid]

        def nodes(self):
            return [dict(op=op, name=n, inputs=i, outputs=o, attrs=a) for op, i, a, o, n in rec.records]

        def shape(self, v):
            return rec.graph.shape(v)

        def value_name(self, v):
            return rec.graph.value_name(v)

    class Loaded(nn.Module):
        input_shape = (2, 3, 16, 16)

        def _graph_for(self, shape):
            return Graph()

        def state_dict(self):
            return m.state_dict()

    proto = cno.export_model(Loaded(), None)
    xb = _x(2, 3, 16, 16)
    ref = m.compile(xb.shape).run(xb)
    assert _rel(cno.import_model(proto).compile(xb.shape).run(xb), ref) < 1e-6


def test_cli_convert_both_ways(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("onnx")
    import cnnnative as cn
    m = cn.models.lenet5(seed=0)
    cn.save(m, str(tmp_path / "a.cnn"), (1, 1, 28, 28))
    run = lambda *a: subprocess.run([sys.executable, "-m", "cnnnative", "convert", *a], capture_output=True,
                                    text=True, timeout=300)
    r = run(str(tmp_path / "a.cnn"), str(tmp_path / "a.onnx"))
    assert r.returncode == 0, r.stderr
    r = run(str(tmp_path / "a.onnx"), str(tmp_path / "b.cnn"), "--input-shape", "2,1,28,28")
    assert r.returncode == 0, r.stderr
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    back = cn.load(str(tmp_path / "b.cnn")).compile(x.shape).run(x)
    np.testing.assert_allclose(back, m.compile(x.shape).run(x), rtol=1e-5, atol=1e-6)
    r = run(str(tmp_path / "missing.onnx"), str(tmp_path / "c.cnn"))
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
