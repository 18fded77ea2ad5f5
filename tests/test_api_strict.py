"""The Python API refuses what it cannot honour, with PyTorch as the reference: compile(16) on a model with a
declared input shape (or one clear error), mode='train' without an optimizer, layer arguments PyTorch rejects (in
its words), keywords it accepts that would change nothing (inplace: documented, kept), and shape errors that name
the module path and class. Written as a PyTorch user writes code; torch (CPU) checks the reference behaviour."""
import inspect
from collections import OrderedDict

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn
from opcheck import assert_close


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- compile(batch) and the declared input shape

def test_compile_with_a_batch_size_uses_the_declared_input_shape():
    model = cn.models.resnet18(num_classes=10, cifar=True, seed=0)
    assert model.input_shape == (1, 3, 32, 32)
    sess = model.compile(4)
    assert sess.input_shape == (4, 3, 32, 32)
    assert sess.run(_x((4, 3, 32, 32))).shape == (4, 10)
    lenet = cn.models.lenet5(seed=0)
    assert lenet.compile(16).input_shape == (16, 1, 28, 28)
    assert lenet.compile().input_shape == (1, 1, 28, 28)  # no argument: the declared shape itself
    # training too, with the shape the optimizer needs nothing more about
    train = lenet.compile(8, mode="train", optimizer=cn.optim.SGD(lenet.parameters(), lr=0.1))
    assert train.input_shape == (8, 1, 28, 28)
    assert np.isfinite(train.step(_x((8, 1, 28, 28)), np.arange(8, dtype=np.int32)))


@pytest.mark.parametrize("name", sorted(cn.models.MODELS))
def test_every_zoo_model_declares_its_input(name):
    cifar = "cifar" in inspect.signature(cn.models.MODELS[name]).parameters
    kw = {"cifar": True} if cifar else {}  # the small variants: quick to build
    with nn.no_init():
        model = cn.models.get_model(name, **kw)
        gray = cn.models.get_model(name, in_channels=1, **kw)
    n, c, h, w = model.input_shape
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert (n, c) == (1, first_conv.in_channels) and h == w >= 28
    assert gray.input_shape[1] == 1 and gray.input_shape[2:] == model.input_shape[2:]
    if cifar:
        assert (h, w) == (32, 32)


def test_imagenet_models_declare_torchvisions_evaluation_crop():
    with nn.no_init():
        assert cn.models.resnet18().input_shape == (1, 3, 224, 224)
        assert cn.models.get_model("inception_v3").input_shape == (1, 3, 299, 299)
        assert cn.models.get_model("lraspp_mobilenet_v3_large").input_shape == (1, 3, 520, 520)


def test_compile_with_a_batch_size_needs_a_declared_shape():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"^compile\(16\): Sequential declares no input shape; give the full shape, "
                                         r"e\.g\. compile\(\(16, 1, 32, 32\)\)"):
        model.compile(16)
    with pytest.raises(ValueError, match=r"^compile\(\): Sequential declares no input shape"):
        model.compile()
    model.input_shape = (1, 1, 12, 12)  # declared by the user: any batch size from then on
    assert model.compile(5).run(_x((5, 1, 12, 12))).shape == (5, 8, 10, 10)


def test_a_user_module_declares_its_input_shape_in_init():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_shape = (1, 3, 16, 16)
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.classifier = nn.Linear(8, 4)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    assert Net().compile(6).output_shape == (6, 4)

    class Linearish(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(20, 3)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match=r"e\.g\. compile\(\(2, 20\)\)"):
        Linearish().compile(2)


@pytest.mark.parametrize("arg, exc, pattern", [
    (16.0, TypeError, r"input_shape must be a shape \(N, C, \.\.\.\) of ints or a batch size \(int\), got float"),
    ("16", TypeError, r"got str '16'"),
    (True, TypeError, r"got bool True"),
    (0, ValueError, r"compile\(0\): the batch size must be positive"),
    ((2, 1, 28.5, 28), ValueError, r"input_shape must be \(N, C, \.\.\.\) with positive int sizes, got \(2, 1, 28\.5"),
    ((2, 1, 0, 28), ValueError, r"with positive int sizes, got \(2, 1, 0, 28\)"),
    ((28,), ValueError, r"with positive int sizes, got \(28,\)"),
])
def test_compile_refuses_shapes_it_would_have_to_guess(arg, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cn.models.lenet5().compile(arg)


def test_a_malformed_declared_shape_is_named():
    model = cn.models.lenet5()
    model.input_shape = "28x28"
    with pytest.raises(ValueError, match=r"LeNet5\.input_shape must be \(N, C, \.\.\.\) with positive int sizes, "
                                         r"got '28x28'"):
        model.compile(4)


# ---------------------------------------------------------------- training needs an optimizer; options fit the mode

def test_training_without_an_optimizer_is_an_error_not_sgd():
    model = cn.models.lenet5(seed=0)
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"compile\(mode='train'\) needs an optimizer, e\.g\. .*"
                                         r"optimizer=cn\.optim\.SGD\(model\.parameters\(\), lr=0\.01\)"):
        model.compile((8, 1, 28, 28), mode="train")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match=r"optimizer must be a cnnnative\.optim optimizer .*got str"):
        model.compile((8, 1, 28, 28), mode="train", optimizer="sgd")
    opt = cn.optim.Adam(model.parameters(), lr=1e-3)
    assert model.compile((8, 1, 28, 28), mode="train", optimizer=opt).optimizer is opt


def test_training_options_with_inference_are_errors():
    model = cn.models.lenet5(seed=0)
    with pytest.raises(ValueError, match=r"optimizer applies to mode='train' only"):
        model.compile((8, 1, 28, 28), optimizer=cn.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"loss applies to mode='train' only, got loss='mse' with mode='infer'"):
        model.compile((8, 1, 28, 28), loss="mse")


# ---------------------------------------------------------------- layer arguments PyTorch rejects

# (constructor, our exception and message, where torch refuses it: "ctor" at construction, an input shape at its
# first forward on that input, None where torch only refuses every input a real model gives it, e.g. 0 channels)
BAD_LAYERS = [
    (lambda nn: nn.Conv2d(0, 8, 3), ValueError, r"Conv2d: in_channels must be a positive int, got 0", None),
    (lambda nn: nn.Conv2d(3, 0, 3), ValueError, r"Conv2d: out_channels must be a positive int, got 0", (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(-1, 8, 3), ValueError, r"in_channels must be a positive int, got -1", "ctor"),
    (lambda nn: nn.Conv2d(3, 8, 0), ValueError, r"Conv2d: kernel size should be greater than zero, got kernel_size=0",
     (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(3, 8, 3, stride=0), ValueError, r"Conv2d: non-positive stride is not supported",
     (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(3, 8, 3, stride=(1, -2)), ValueError, r"non-positive stride is not supported, got "
     r"stride=\(1, -2\)", (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(3, 8, 3, padding=-1), ValueError, r"Conv2d: negative padding is not supported", (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(3, 8, 3, dilation=0), ValueError, r"Conv2d: non-positive dilation is not supported",
     (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(3, 8, (3, 3, 3)), ValueError, r"kernel_size must be an int or 2 ints \(for H and W\)",
     (1, 3, 8, 8)),
    (lambda nn: nn.Conv2d(3, 8, 3, groups=0), ValueError, r"Conv2d: groups must be a positive integer", "ctor"),
    (lambda nn: nn.Conv2d(3, 8, 3, groups=2), ValueError, r"Conv2d: in_channels must be divisible by groups", "ctor"),
    (lambda nn: nn.Conv2d(4, 6, 3, groups=4), ValueError, r"Conv2d: out_channels must be divisible by groups", "ctor"),
    (lambda nn: nn.Conv2d(3, 8, 3, padding="full"), ValueError,
     r"Conv2d: Invalid padding string 'full', should be one of \{'same', 'valid'\}", "ctor"),
    (lambda nn: nn.Conv2d(3, 8, 3, stride=2, padding="same"), ValueError,
     r"padding='same' is not supported for strided convolutions", "ctor"),
    (lambda nn: nn.Conv2d(3, 8, 3, padding_mode="mirror"), ValueError, r"padding_mode must be one of", "ctor"),
    (lambda nn: nn.Conv2d(3.0, 8, 3), TypeError, r"Conv2d: in_channels must be an int, got float 3\.0", "ctor"),
    (lambda nn: nn.Conv2d(3, 8, 2.5), TypeError, r"Conv2d: kernel_size must be an int or a tuple of 2 ints, got 2\.5",
     "ctor"),
    (lambda nn: nn.ConvTranspose2d(3, 8, 3, stride=0), ValueError, r"ConvTranspose2d: non-positive stride",
     (1, 3, 8, 8)),
    (lambda nn: nn.ConvTranspose2d(3, 8, 3, output_padding=1), ValueError,
     r"output padding must be smaller than either stride or dilation", (1, 3, 8, 8)),
    (lambda nn: nn.ConvTranspose2d(3, 8, 3, padding_mode="reflect"), ValueError,
     r'Only "zeros" padding mode is supported for ConvTranspose2d', "ctor"),
    (lambda nn: nn.Linear(-1, 4), ValueError, r"Linear: in_features must be a positive int, got -1", "ctor"),
    (lambda nn: nn.Linear(3.5, 4), TypeError, r"Linear: in_features must be an int, got float", "ctor"),
    (lambda nn: nn.MaxPool2d(0), ValueError, r"MaxPool2d: kernel size should be greater than zero", (1, 3, 8, 8)),
    (lambda nn: nn.MaxPool2d(2, stride=0), ValueError, r"MaxPool2d: non-positive stride is not supported",
     (1, 3, 8, 8)),
    (lambda nn: nn.MaxPool2d(2, padding=2), ValueError,
     r"MaxPool2d: pad should be at most half of effective kernel size, but got pad=2, kernel_size=2 and dilation=1",
     (1, 3, 8, 8)),
    (lambda nn: nn.MaxPool2d(3, dilation=0), ValueError, r"non-positive dilation is not supported", (1, 3, 8, 8)),
    (lambda nn: nn.AvgPool2d(2, padding=2), ValueError, r"AvgPool2d: pad should be at most half", (1, 3, 8, 8)),
    (lambda nn: nn.AvgPool2d(3, padding=-1), ValueError, r"AvgPool2d: negative padding is not supported",
     (1, 3, 8, 8)),
    (lambda nn: nn.BatchNorm2d(-1), ValueError, r"BatchNorm2d: num_features must be a positive int", "ctor"),
    (lambda nn: nn.Dropout(1.5), ValueError, r"Dropout: dropout probability has to be between 0 and 1, but got 1\.5",
     "ctor"),
    (lambda nn: nn.Dropout(-0.1), ValueError, r"dropout probability has to be between 0 and 1", "ctor"),
    (lambda nn: nn.LocalResponseNorm(0), ValueError, r"LocalResponseNorm: size must be a positive int, got 0",
     (1, 3, 8, 8)),
    (lambda nn: nn.AdaptiveAvgPool2d(-1), ValueError, r"AdaptiveAvgPool2d: output_size must be positive",
     (1, 3, 8, 8)),
    (lambda nn: nn.GroupNorm(0, 4), ValueError, r"GroupNorm: num_groups must be a positive int, got 0", "ctor"),
    (lambda nn: nn.GroupNorm(3, 4), ValueError, r"num_channels \(4\) must be divisible by num_groups \(3\)", "ctor"),
    (lambda nn: nn.LayerNorm(0), ValueError, r"LayerNorm: normalized_shape must be positive sizes", (1, 3, 8, 8)),
    (lambda nn: nn.PReLU(0), ValueError, r"PReLU: num_parameters must be a positive int", (1, 3, 8, 8)),
    (lambda nn: nn.ChannelShuffle(0), ValueError, r"ChannelShuffle: groups must be an int >= 1", (1, 3, 8, 8)),
    (lambda nn: nn.Upsample(scale_factor=2, mode="nearest", align_corners=True), ValueError,
     r"align_corners can only be set with mode='bilinear'", (1, 3, 8, 8)),
    (lambda nn: nn.Upsample(scale_factor=2, mode="area", align_corners=False), ValueError,
     r"align_corners can only be set with mode='bilinear'", (1, 3, 8, 8)),
    (lambda nn: nn.Upsample(scale_factor=-2), ValueError, r"Upsample: scale_factor must be a number or 2 .*> 0",
     (1, 3, 8, 8)),
    (lambda nn: nn.Upsample(size=0), ValueError, r"Upsample: size must be an int or 2 ints", (1, 3, 8, 8)),
    (lambda nn: nn.Upsample(), ValueError, r"Upsample: give exactly one of size and scale_factor", (1, 3, 8, 8)),
]


@pytest.mark.parametrize("make, exc, pattern, torch_input", BAD_LAYERS)
def test_arguments_pytorch_rejects_are_rejected(make, exc, pattern, torch_input):
    with pytest.raises(exc, match=pattern):
        make(nn)
    if torch_input is None:
        return
    torch = pytest.importorskip("torch")
    if torch_input == "ctor":
        with pytest.raises((ValueError, TypeError, RuntimeError, ZeroDivisionError)):
            make(torch.nn)
        return
    m = make(torch.nn)
    with pytest.raises((ValueError, RuntimeError, NotImplementedError)):
        m(torch.zeros(torch_input))


@pytest.mark.parametrize("make, pattern", [
    (lambda: nn.MaxPool2d(2, return_indices=True), r"MaxPool2d: return_indices=True is not supported"),
    (lambda: nn.MaxPool2d(2, 2, 0, 1, True), r"return_indices=True is not supported"),  # torch's 5th argument
    (lambda: nn.Conv2d(3, 8, 3, padding_mode="circular"), r"padding_mode='circular' is not supported"),
    (lambda: nn.BatchNorm2d(8, momentum=None), r"momentum=None \(a cumulative moving average\) is not supported"),
    (lambda: nn.BatchNorm2d(8, bias=False), r"BatchNorm2d: bias=False is not supported"),
    (lambda: nn.Dropout(1.0), r"Dropout: p=1 \(every element dropped\) is not supported"),
    (lambda: nn.AvgPool2d(3, ceil_mode=True, divisor_override=2), r"divisor_override is supported with "
                                                                   r"ceil_mode=False"),
    (lambda: nn.Upsample(scale_factor=2, mode="bicubic", align_corners=True), r"mode='bicubic' is not supported"),
])
def test_what_pytorch_accepts_and_the_engine_cannot_do_is_refused_not_ignored(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def _same_as_torch(ours, build_theirs, shape, train=False):
    torch = pytest.importorskip("torch")
    theirs = build_theirs(torch.nn)
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    x = _x(shape, 1)
    want = theirs(torch.tensor(x))
    assert_close(ours.compile(x.shape).run(x), want.detach().numpy(), 1e-4, 1e-5, "output")
    if train:
        t = _x(tuple(want.shape), 2)
        loss = ours.compile(x.shape, mode="train", loss="mse", optimizer=cn.optim.SGD(ours.parameters(), lr=0.1))
        got = loss.step(x, t)
        opt = torch.optim.SGD(theirs.parameters(), lr=0.1)
        tl = torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(t))
        tl.backward()
        opt.step()
        assert abs(got - tl.item()) <= 1e-5 * max(1.0, abs(tl.item()))
        for k, v in theirs.state_dict().items():
            assert_close(ours.state_dict()[k], v.numpy(), 1e-4, 1e-5, k)


@pytest.mark.parametrize("build, shape, train", [
    (lambda nn: nn.Conv2d(3, 4, 3, padding="same"), (2, 3, 7, 6), True),
    (lambda nn: nn.Conv2d(3, 4, (4, 2), dilation=(1, 3), padding="same"), (2, 3, 7, 9), True),  # torch pads after
    (lambda nn: nn.Conv2d(3, 4, 3, padding="valid"), (2, 3, 7, 6), False),
    (lambda nn: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 7, 6), True),
    (lambda nn: nn.Conv2d(3, 4, 3, padding="same", padding_mode="replicate"), (2, 3, 5, 6), True),
    (lambda nn: nn.Conv2d(3, 4, 5, padding=(2, 1), padding_mode="replicate", stride=2), (1, 3, 9, 8), False),
    (lambda nn: nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2, divisor_override=3)), (2, 3, 9, 9), True),
    (lambda nn: nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(3, 2, padding=1, divisor_override=5)),
     (2, 3, 9, 9), False),
    (lambda nn: nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, 0, 1, False, True)), (1, 3, 10, 10), False),
    (lambda nn: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4, bias=False)), (2, 3, 6, 6), True),
    (lambda nn: nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True, bias=False)), (2, 3, 6, 6),
     True),
])
def test_arguments_that_were_ignored_or_misread_now_compute_what_torch_does(build, shape, train):
    nn.manual_seed(0)
    ours = build(nn)
    if train:  # a non-trivial affine weight, so its gradient matters
        with cn.no_grad():
            for name, p in ours.named_parameters():
                p[...] = _x(p.shape, 5) * 0.5 + (1.0 if name.endswith("1.weight") else 0.0)
    _same_as_torch(ours, build, shape, train)


def test_inplace_is_accepted_and_changes_nothing():
    torch = pytest.importorskip("torch")
    for make in (lambda nn, i: nn.ReLU(inplace=i), lambda nn, i: nn.LeakyReLU(0.2, inplace=i),
                 lambda nn, i: nn.Dropout(0.3, inplace=i), lambda nn, i: nn.ReLU6(inplace=i),
                 lambda nn, i: nn.Hardtanh(-2.0, 2.0, inplace=i), lambda nn, i: nn.ELU(0.5, inplace=i),
                 lambda nn, i: nn.SiLU(inplace=i), lambda nn, i: nn.Hardswish(inplace=i)):
        layer = make(nn, True)
        assert layer.inplace is True and repr(layer) == repr(make(torch.nn, True))
        assert repr(make(nn, False)) == repr(make(torch.nn, False))
        nn.manual_seed(0)
        a = nn.Sequential(nn.Conv2d(2, 3, 3), make(nn, True), nn.Conv2d(3, 2, 1))
        nn.manual_seed(0)
        b = nn.Sequential(nn.Conv2d(2, 3, 3), make(nn, False), nn.Conv2d(3, 2, 1))
        x = _x((2, 2, 6, 6))
        np.testing.assert_array_equal(a.compile(x.shape).run(x), b.compile(x.shape).run(x))
    assert "the engine decides" in nn.ReLU.__doc__ and "the engine decides" in nn.Dropout.__doc__
    with pytest.raises(TypeError, match="in_place"):  # a misspelt keyword is never swallowed
        nn.ReLU(in_place=True)


@pytest.mark.parametrize("make", [
    lambda nn: nn.Conv2d(3, 8, 3),
    lambda nn: nn.Conv2d(3, 8, (3, 1), stride=2, padding=(1, 0), dilation=2, groups=1, bias=False),
    lambda nn: nn.Conv2d(4, 8, 3, padding="same", groups=2, padding_mode="reflect"),
    lambda nn: nn.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1),
    lambda nn: nn.Linear(3, 4, bias=False),
    lambda nn: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    lambda nn: nn.AvgPool2d(2),
    lambda nn: nn.AdaptiveAvgPool2d((2, None)),
    lambda nn: nn.BatchNorm2d(4, eps=1e-3, momentum=0.2),
    lambda nn: nn.Dropout(0.25),
    lambda nn: nn.Flatten(0, 2),
    lambda nn: nn.LeakyReLU(0.1),
])
def test_layers_read_as_torchs_do(make):
    torch = pytest.importorskip("torch")
    theirs = make(torch.nn)
    if isinstance(theirs, torch.nn.BatchNorm2d) and "bias" not in inspect.signature(type(theirs)).parameters:
        pytest.skip("this torch predates BatchNorm2d's bias keyword (and its repr)")
    assert repr(make(nn)) == repr(theirs)


# Where a public cnnnative.nn layer's constructor differs from torch.nn's (argument names, order, defaults, kinds),
# and why. device= and dtype= (torch's factory keywords) are absent everywhere: parameters are float32 numpy arrays
# and compile(device=...) picks the device; passing them is a TypeError, never ignored.
SIGNATURE_DIFFERENCES = {
    "Module": "torch's takes *args, **kwargs only to refuse them with a TypeError; so does this one, by having none",
    "Sigmoid": "torch's has Module's (*args, **kwargs), refusing any argument, as this one does",
    "Tanh": "torch's has Module's (*args, **kwargs), refusing any argument, as this one does",
    "Identity": "torch's takes and ignores any argument; this one refuses them (never silently ignored)",
    "LayerNorm2d": "torchvision.models.convnext.LayerNorm2d, not in torch.nn",
    "Permute": "torchvision.ops.Permute, not in torch.nn",
}


# keywords torch added to these layers in recent releases (2.x): an older torch lacks them
NEWER_TORCH_KEYWORDS = {"BatchNorm2d": {"bias"}, "GroupNorm": {"bias"}, "InstanceNorm1d": {"bias"},
                        "InstanceNorm2d": {"bias"}}


def _signature(cls, leave_out=()):
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
            if p.name not in ("device", "dtype") and p.name not in leave_out]


def _public_layers():
    return [n for n in nn.__all__ if isinstance(getattr(nn, n), type) and issubclass(getattr(nn, n), nn.Module)]


@pytest.mark.parametrize("name", _public_layers())
def test_constructor_signatures_match_torch(name):
    torch = pytest.importorskip("torch")
    ours = getattr(nn, name)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(ours.__init__).parameters
                   .values()), f"{name} takes **kwargs: an unknown keyword would be swallowed"
    theirs = getattr(torch.nn, name, None)
    newer = {k for k in NEWER_TORCH_KEYWORDS.get(name, ()) if theirs is not None
             and k not in inspect.signature(theirs.__init__).parameters}
    same = theirs is not None and _signature(ours, newer) == _signature(theirs)
    if name in SIGNATURE_DIFFERENCES:
        assert not same, f"{name} now matches torch.nn: drop it from SIGNATURE_DIFFERENCES"
    else:
        assert theirs is not None, f"{name} is not in torch.nn"
        assert same, f"{name}{inspect.signature(ours.__init__)} vs torch.nn's {inspect.signature(theirs.__init__)}"


# ---------------------------------------------------------------- shape errors name the module path and class

def test_resnet_with_one_wrong_conv_names_it_in_torchs_words():
    torch = pytest.importorskip("torch")
    model = cn.models.resnet18(num_classes=10, cifar=True)
    model.layer2[0].conv1 = nn.Conv2d(32, 128, kernel_size=3, stride=2, padding=1, bias=False)
    with pytest.raises(cn.Error) as ei:
        model.compile((2, 3, 32, 32))
    msg = str(ei.value)
    assert msg.startswith("layer 'layer2.0.conv1' (Conv2d): "), msg
    # the words torch uses for the same mistake
    with pytest.raises(RuntimeError) as te:
        torch.nn.Conv2d(32, 128, 3, stride=2, padding=1, bias=False)(torch.zeros(2, 64, 32, 32))
    words = "expected input[2, 64, 32, 32] to have 32 channels, but got 64 channels instead"
    assert words in str(te.value) and words in msg, (msg, str(te.value))
    assert msg.count("layer '") == 1  # named once, by the innermost module


def test_resnet_with_one_wrong_batch_norm_names_it():
    model = cn.models.resnet18(num_classes=10, cifar=True)
    model.layer3[1].bn1 = nn.BatchNorm2d(128)
    with pytest.raises(cn.Error, match=r"^layer 'layer3\.1\.bn1' \(BatchNorm2d\): .*expected input\[2, 256, 8, 8\] "
                                       r"to have 128 channels, but got 256 channels instead"):
        model.compile((2, 3, 32, 32), mode="train", optimizer=cn.optim.SGD(model.parameters(), lr=0.1))


class Residual(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv(x) + x)  # needs cin == cout


class SmallNet(nn.Module):
    """Written as a PyTorch user writes a model."""

    def __init__(self, width=16, hidden=32, blocks=((16, 16), (16, 16))):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2))
        self.blocks = nn.Sequential(*[Residual(a, b) for a, b in blocks])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(hidden, 10))

    def forward(self, x):
        x = self.pool(self.blocks(self.features(x)))
        return self.classifier(x.flatten(1))


class TwoHeads(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, a, 1), nn.Conv2d(3, b, 1)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_a_pytorch_style_model_names_the_layer_that_does_not_fit():
    x = _x((4, 3, 16, 16))
    assert SmallNet(hidden=16).compile(x.shape).run(x).shape == (4, 10)
    with pytest.raises(ValueError, match=r"^layer 'classifier\.1' \(Linear\): expected input \[\.\.\., 32\], got "
                                         r"\[4, 16\]$"):
        SmallNet(hidden=32).compile(x.shape)
    with pytest.raises(ValueError, match=r"^layer 'blocks\.1' \(Residual\): add \(\+\): shapes \[4, 24, 8, 8\] and "
                                         r"\[4, 16, 8, 8\] do not broadcast together"):
        SmallNet(hidden=16, blocks=((16, 16), (16, 24))).compile(x.shape)
    with pytest.raises(cn.Error, match=r"^layer 'blocks\.0\.conv' \(Conv2d\): .*to have 8 channels, but got 16"):
        SmallNet(hidden=16, blocks=((8, 16), (16, 16))).compile(x.shape)
    # the model's own forward: the model is named by its class
    with pytest.raises(ValueError, match=r"^model \(TwoHeads\): add \(\+\): shapes \[4, 8, 16, 16\] and "
                                         r"\[4, 4, 16, 16\]"):
        TwoHeads(8, 4).compile(x.shape)
    with pytest.raises(ValueError, match=r"^layer 'heads' \(TwoHeads\): add"):
        nn.Sequential(OrderedDict(stem=nn.Identity(), heads=TwoHeads(8, 4))).compile(x.shape)


def test_compile_errors_after_tracing_name_the_module_of_their_node():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2 ** 40), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(cn.Error, match=r"^layer '2' \(Conv2d\): op '(fused_)?conv2d' \(node '2'\): cannot create its "
                                       r"cpu kernel"):
        model.compile((1, 3, 8, 8))


def test_functional_conv2d_takes_torchs_padding_strings():
    torch = pytest.importorskip("torch")

    class Net(nn.Module):
        def __init__(self, padding):
            super().__init__()
            self.padding = padding
            self.weight = nn.Parameter(_x((4, 3, 2, 3), 4))

        def forward(self, x):
            return nn.functional.conv2d(x, self._tensor("weight"), padding=self.padding, dilation=(2, 1))

    x = _x((2, 3, 7, 6))
    for padding in ("same", "valid"):
        want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(_x((4, 3, 2, 3), 4)), padding=padding,
                                          dilation=(2, 1)).numpy()
        assert_close(Net(padding).compile(x.shape).run(x), want, 1e-4, 1e-5, padding)
    with pytest.raises(ValueError, match=r"^model \(Net\): conv2d: Invalid padding string 'full'"):
        Net("full").compile(x.shape)
