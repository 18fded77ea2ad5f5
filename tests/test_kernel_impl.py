"""session.kernels() on the cpu backend: what each cpu kernel (cpp/src/cpu/) says implements its node
(Kernel::impl()): "onednn:<primitive kind> <oneDNN implementation>" for oneDNN primitives (" deterministic(...)"
appended by the deterministic variants), "winograd <work split>[ deterministic]" for the Winograd F(4x4, 3x3)
kernels, "native" for our own loops ("native copy" where the node is a copy, "native small-channel" for the few-channel
convolutions of cpu/conv_small.cpp, "native 2x2" for the AVX-512 2x2 stride-2 max pooling of plain layouts),
"reference" for an op's naive loops."""
import os
import re

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn

IMPL = re.compile(r"^(onednn:[a-z_]+( \S.*)?|winograd (tile-chunks|points|output-blocks)( deterministic)?"
                  r"|native( copy| 2x2| small-channel( batch-lanes)?)?|reference)$")
CONV_OPS = ("conv2d", "fused_conv2d", "conv2d_grad_data", "conv2d_grad_weights")


def _impls(s, ops):
    return [(k["op"], k["name"], k["impl"]) for k in s.kernels() if k["op"] in ops]


def _check_all(s):
    """Every node reports one of the known forms, and none falls back to a reference kernel."""
    for k in s.kernels():
        assert IMPL.match(k["impl"]), (k["op"], k["name"], k["impl"])
        assert k["impl"] != "reference", (k["op"], k["name"])


def _resnet18(winograd, **kw):
    cn.manual_seed(0)
    return cn.models.get_model("resnet18", seed=0, num_classes=10).compile((8, 3, 64, 64), winograd=winograd, **kw)


def _lenet(**kw):
    cn.manual_seed(0)
    return cn.models.lenet5(seed=0).compile((8, 1, 28, 28), mode="train", optimizer=cn.optim.SGD(lr=0.01), **kw)


def test_resnet18_inference_convolutions_run_onednn_or_winograd():
    s = _resnet18(True)
    _check_all(s)
    convs = _impls(s, CONV_OPS)
    assert len(convs) == 20  # every convolution (BN, residual and ReLU fused into it)
    for op, name, impl in convs:
        assert impl.startswith(("onednn:convolution ", "winograd ")), (op, name, impl)
    # layer1's 3x3 64-channel convolutions at 16x16 (128 tiles at batch 8) qualify on AVX-512 CPUs
    assert any(impl.startswith("winograd ") for _, _, impl in convs) == cn.has_avx512()
    for op, name, impl in _impls(s, ("linear", "fused_linear")):
        assert impl.startswith("onednn:inner_product "), (op, name, impl)


def test_winograd_off_reports_no_winograd():
    for s in (_resnet18(False), _resnet18(False, deterministic=True)):
        _check_all(s)
        assert not any("winograd" in k["impl"] for k in s.kernels())
        for op, name, impl in _impls(s, CONV_OPS):
            assert impl.startswith("onednn:convolution "), (op, name, impl)


def test_lenet_training():
    s = _lenet()
    _check_all(s)
    convs = _impls(s, CONV_OPS)
    assert {op for op, _, _ in convs} == {"conv2d", "conv2d_grad_data", "conv2d_grad_weights"}
    # 1 -> 6 and 6 -> 16 channels: never Winograd; the native small-channel kernels take conv1's forward and weight
    # gradient (1 input, 6 output channels) and conv2's data gradient (6 channels), oneDNN the rest
    native = {"conv1", "conv1/grad_weights", "conv2/grad_data"}
    assert native <= {name for _, name, _ in convs}
    for op, name, impl in convs:
        if name in native:
            assert impl.startswith("native small-channel"), (op, name, impl)
        else:
            assert impl.startswith("onednn:convolution "), (op, name, impl)
            assert "deterministic" not in impl
    for op, name, impl in _impls(s, ("linear", "linear_grad_data", "linear_grad_weights")):
        assert impl.startswith("onednn:inner_product "), (op, name, impl)
    for op, name, impl in _impls(s, ("softmax_cross_entropy", "softmax_cross_entropy_grad")):
        assert impl == "native", (op, name, impl)
    # cpu/views.cpp: the seed fill, and flatten / its gradient's reshape (a copy unless aliased in place); the
    # default training compile keeps everything here ('auto': LeNet-5's plan is no smaller with recomputation);
    # 'lean' reruns the flatten in the backward pass: one more copy
    assert sorted(impl for _, _, impl in _impls(s, ("fill", "flatten", "reshape"))) == ["native", "native copy",
                                                                                       "native copy"]
    n = _lenet(recompute="lean")
    assert sorted(impl for _, _, impl in _impls(n, ("fill", "flatten", "reshape"))) == ["native", "native copy",
                                                                                       "native copy", "native copy"]


def test_deterministic_kernels_say_so():
    s = _lenet(deterministic=True)
    _check_all(s)
    convs = _impls(s, CONV_OPS)
    assert convs
    for op, name, impl in convs:  # the native small-channel kernels' sums do not depend on the thread count
        assert impl.startswith("native small-channel") or (
            impl.startswith("onednn:convolution ") and impl.endswith(" deterministic(minibatch parts)")), impl
    linears = _impls(s, ("linear", "linear_grad_data", "linear_grad_weights"))
    assert linears
    for op, name, impl in linears:
        assert impl.startswith("onednn:matmul ") and impl.endswith(" deterministic(output blocks)"), impl


class Stack(nn.Module):
    """A stem, then two 3x3 convolutions 64 -> 96 -> 64 (the ones that qualify for Winograd) and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.a = nn.Conv2d(64, 96, 3, padding=1)
        self.b = nn.Conv2d(96, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        h = self.b(self.a(self.stem(x)).relu())
        return self.fc(cn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


@pytest.mark.skipif(not cn.has_avx512(), reason="the Winograd path needs AVX-512")
@pytest.mark.parametrize("deterministic", [False, True])
def test_winograd_training_kernels(deterministic):
    n = cn.get_num_threads()
    cn.set_num_threads(2)  # the work splits depend on the thread count at compile time
    try:
        cn.manual_seed(0)
        s = Stack().compile((2, 3, 12, 12), mode="train", optimizer=cn.optim.SGD(lr=0.01),
                            deterministic=deterministic)
        _check_all(s)
        wino = {op for op, name, impl in _impls(s, CONV_OPS) if impl.startswith("winograd ")}
        assert wino == {"conv2d", "conv2d_grad_data", "conv2d_grad_weights"}
        for op, name, impl in _impls(s, CONV_OPS):
            if impl.startswith("winograd "):
                assert impl.endswith(" deterministic") == deterministic, impl
            else:
                assert name.startswith("stem") or name.startswith("a"), (op, name, impl)
        x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
        assert np.isfinite(s.step(x, np.zeros(2, np.int32)))
    finally:
        cn.set_num_threads(n)


def test_deconvolution_kernels_and_the_configuration_onednn_refuses():
    s = nn.ConvTranspose2d(3, 8, 3, stride=2, padding=1, output_padding=1).compile((1, 3, 4, 4))
    _check_all(s)
    assert [impl.split()[0] for _, _, impl in _impls(s, ("conv_transpose2d",))] == ["onednn:deconvolution"]
    # output_padding >= stride (legal below dilation): oneDNN rejects it, the op's reference kernel runs
    odd = nn.ConvTranspose2d(3, 2, 3, stride=1, output_padding=1, dilation=2)
    with pytest.warns(RuntimeWarning, match=r"no kernel for 1 node\(s\).*conv_transpose2d"):
        s = odd.compile((1, 3, 4, 4))
    assert [impl for _, _, impl in _impls(s, ("conv_transpose2d",))] == ["reference"]
    with pytest.raises(cn.Error, match="strict.*conv_transpose2d"):
        odd.compile((1, 3, 4, 4), strict=True)


@pytest.mark.parametrize("layout", ["nChw16c", "nChw8c", "nhwc"])
def test_no_onednn_reference_implementation_under_any_layout(layout):
    """Layout rules and fused post-ops must never steer oneDNN into its ref:any kernels (orders of magnitude
    slower; e.g. a per-channel binary + sum post-op on jit_1x1 used to): every kernel of training and inference
    sessions of the ResNet block stack, LeNet-5, DenseNet and U-Net shaped graphs reports a jit/brgemm/gemm
    implementation or our own. Replaces the ONEDNN_VERBOSE greps of earlier tests."""
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from test_fusion import resnet_stack
    from test_layouts_more_ops import SMALL
    cases = [(resnet_stack(), (2, 3, 12, 12), "cross_entropy"), (cn.models.lenet5(), (4, 1, 28, 28), "cross_entropy")]
    cases += [(build(), shape, loss) for build, shape, loss, _, _ in (SMALL["densenet"], SMALL["unet"])]
    seen = set()
    for net, shape, loss in cases:
        train = net.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.01), loss=loss, layout=layout)
        for s in (train, net.compile(shape, layout=layout)):
            for k in s.kernels():
                seen.add(k["impl"].split()[0])
                assert " ref:" not in k["impl"] and k["impl"] != "reference", (layout, k)
    assert {"onednn:convolution", "onednn:deconvolution", "onednn:concat", "onednn:pooling"} <= seen, seen
