"""The model zoo without PyTorch: parameter counts equal torchvision's, torchvision's parameter/buffer names,
torchvision's init distributions, seeding, output shapes, and compile-time errors naming the layer and
the shapes when a model cannot take an input."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn

TORCHVISION_COUNTS = {  # torchvision's sum(p.numel() for p in model.parameters()) at num_classes=1000
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736, "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248, "alexnet": 61_100_840, "googlenet": 6_624_904, "densenet121": 7_978_856,
}


@pytest.mark.parametrize("name", list(TORCHVISION_COUNTS))
def test_parameter_counts_equal_torchvision(name):
    with nn.no_init():  # counting needs no initial values (VGG would draw 130M numbers)
        m = cn.models.get_model(name)
    assert m.num_parameters() == TORCHVISION_COUNTS[name]


def test_registry():
    expected = {"lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
                "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet", "densenet121",
                "unet", "conv_autoencoder"}
    assert set(cn.models.MODELS) == expected | set(cn.models_modern.MODERN_MODELS)
    with pytest.raises(ValueError, match="unknown model 'resnet7'; available: alexnet, conv_autoencoder"):
        cn.models.get_model("resnet7")
    m = cn.models.get_model("resnet18", num_classes=10, cifar=True)
    assert m.fc.weight.shape == (10, 512) and m.conv1.weight.shape == (64, 3, 3, 3)


def _keys(name, **kw):
    with nn.no_init():
        return list(cn.models.get_model(name, **kw).state_dict())


def test_torchvision_state_dict_names():
    k = _keys("resnet18")
    assert k[:7] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                     "bn1.num_batches_tracked", "layer1.0.conv1.weight"]
    assert "layer2.0.downsample.0.weight" in k and "layer2.0.downsample.1.num_batches_tracked" in k
    assert "layer1.0.downsample.0.weight" not in k and k[-2:] == ["fc.weight", "fc.bias"]
    assert len(k) == 122  # = len(torchvision.models.resnet18().state_dict())
    k = _keys("resnet50")
    assert "layer1.0.conv3.weight" in k and "layer1.0.bn3.running_var" in k and "layer1.0.downsample.0.weight" in k
    assert len(k) == 320
    k = _keys("densenet121")
    assert k[:2] == ["features.conv0.weight", "features.norm0.weight"]
    for name in ["features.denseblock1.denselayer1.norm1.weight", "features.denseblock1.denselayer6.conv2.weight",
                 "features.transition1.norm.running_mean", "features.transition3.conv.weight",
                 "features.denseblock4.denselayer16.norm2.num_batches_tracked", "features.norm5.bias",
                 "classifier.weight"]:
        assert name in k
    assert len(k) == 727
    k = _keys("googlenet")
    assert "inception3a.branch1.conv.weight" in k and "inception5b.branch4.1.bn.running_var" in k
    assert not any(n.startswith("aux") for n in k) and "conv1.conv.bias" not in k and len(k) == 344
    # cifar=True changes shapes only, so these names are torchvision's (without 130M-parameter copies)
    k = _keys("vgg11", cifar=True)
    assert k[:2] == ["features.0.weight", "features.0.bias"] and "classifier.6.bias" in k
    assert "features.1.running_mean" in _keys("vgg11_bn", cifar=True) and len(_keys("vgg16_bn", cifar=True)) == 97
    assert _keys("alexnet", cifar=True) == [f"{p}.{i}.{w}" for p, idx in (("features", (0, 3, 6, 8, 10)),
                                                               ("classifier", (1, 4, 6)))
                                for i in idx for w in ("weight", "bias")]
    k = _keys("unet", depth=2, base=4)
    assert k[:2] == ["inc.0.weight", "inc.1.weight"] and "downs.1.conv.3.weight" in k
    assert "ups.0.up.weight" in k and "ups.1.conv.4.running_var" in k and k[-2:] == ["outc.weight", "outc.bias"]
    assert _keys("conv_autoencoder") == ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
                                         "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"]


def test_state_dict_round_trip_strict():
    a, b = cn.models.resnet18(num_classes=10, cifar=True, seed=1), cn.models.resnet18(num_classes=10, cifar=True,
                                                                                       seed=2)
    b.load_state_dict({k: np.array(v) for k, v in a.state_dict().items()})
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    sd = dict(a.state_dict())
    sd.pop("layer2.0.downsample.1.num_batches_tracked")
    with pytest.raises(ValueError, match="missing keys: layer2.0.downsample.1.num_batches_tracked"):
        b.load_state_dict(sd)


def test_init_follows_torchvision_and_is_seeded():
    m = cn.models.resnet18(seed=0)
    assert abs(m.layer1[0].conv1.weight.std() / np.sqrt(2 / (64 * 9)) - 1) < 0.03  # kaiming_normal fan_out
    assert (m.layer1[0].bn1.weight == 1).all() and not m.layer1[0].bn1.bias.any()
    bound = 1 / np.sqrt(512)  # fc keeps torch's default U(+-1/sqrt(fan_in))
    assert bound * 0.9 < np.abs(m.fc.weight).max() <= bound
    a = cn.models.resnet18(seed=0).state_dict()
    for k, v in cn.models.resnet18(seed=0).state_dict().items():
        np.testing.assert_array_equal(v, a[k])
    assert not np.array_equal(cn.models.resnet18(seed=1).conv1.weight, a["conv1.weight"])
    m = cn.models.densenet121(seed=0)
    assert abs(m.features.denseblock1.denselayer1.conv1.weight.std() / np.sqrt(2 / 64) - 1) < 0.03  # fan_in
    assert not m.classifier.bias.any()
    m = cn.models.googlenet(seed=0)
    w = m.inception4a.branch2[1].conv.weight
    assert abs(w.std() / 0.01 - 1) < 0.03 and abs(m.fc.weight.std() / 0.01 - 1) < 0.03
    assert abs(m.conv1.bn.eps - 1e-3) < 1e-12
    m = cn.models.vgg11_bn(cifar=True, seed=0)
    assert abs(m.classifier[3].weight.std() / 0.01 - 1) < 0.03 and not m.classifier[3].bias.any()
    assert abs(m.features[4].weight.std() / np.sqrt(2 / (128 * 9)) - 1) < 0.03 and not m.features[4].bias.any()
    m = cn.models.alexnet(cifar=True, seed=0)  # torch defaults
    bound = 1 / np.sqrt(4096)
    assert abs(m.classifier[4].weight.std() / (bound / np.sqrt(3)) - 1) < 0.03
    m = cn.models.unet(depth=1, base=4, seed=0)  # ConvTranspose2d [C_in, K, 2, 2]: fan_in = K * 4 (torch's rule)
    assert m.ups[0].up.weight.shape == (8, 4, 2, 2)
    assert 0.8 / 4 < np.abs(m.ups[0].up.weight).max() <= 1 / 4


def test_init_functions():
    nn.manual_seed(0)
    w = nn.Parameter(np.zeros((256, 128, 3, 3)))
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.std() / np.sqrt(2 / (256 * 9)) - 1) < 0.02
    nn.init.kaiming_uniform_(w, a=np.sqrt(5))
    assert abs(np.abs(w).max() * np.sqrt(128 * 9) - 1) < 0.01
    nn.init.trunc_normal_(w, std=1.0, a=-0.5, b=0.5)
    assert -0.5 <= w.min() and w.max() <= 0.5 and w.std() > 0.2
    nn.init.constant_(w, 3)
    assert (w == 3).all()


def _out_shape(model, shape):
    return model.compile(shape).output_shape


@pytest.mark.parametrize("name,kw,shape,out", [
    ("resnet18", {}, (1, 3, 32, 32), (1, 1000)),
    ("resnet50", {"cifar": True, "num_classes": 10}, (2, 3, 32, 32), (2, 10)),
    ("resnet18", {"in_channels": 1}, (1, 1, 8, 8), (1, 1000)),  # strides pad to 1x1, never to zero
    ("alexnet", {"cifar": True, "num_classes": 10}, (2, 3, 32, 32), (2, 10)),
    ("vgg11_bn", {"cifar": True, "num_classes": 10}, (2, 3, 32, 32), (2, 10)),
    ("googlenet", {"num_classes": 10}, (2, 3, 32, 32), (2, 10)),
    ("googlenet", {"cifar": True}, (1, 3, 32, 32), (1, 1000)),
    ("densenet121", {"num_classes": 10}, (2, 3, 32, 32), (2, 10)),
    ("densenet121", {"cifar": True}, (1, 3, 32, 32), (1, 1000)),
    ("unet", {"num_classes": 2}, (1, 1, 32, 48), (1, 2, 32, 48)),
    ("unet", {"in_channels": 3, "depth": 2, "base": 8}, (2, 3, 12, 8), (2, 1, 12, 8)),
    ("conv_autoencoder", {}, (3, 1, 28, 28), (3, 1, 28, 28)),
    ("conv_autoencoder", {"in_channels": 3}, (1, 3, 32, 64), (1, 3, 32, 64)),
])
def test_output_shapes(name, kw, shape, out):
    with nn.no_init():
        m = cn.models.get_model(name, **kw)
    assert _out_shape(m, shape) == out


def test_models_cannot_take_input_fail_at_compile_naming_layer_and_shapes():
    with nn.no_init():
        cases = [
            (cn.models.lenet5(), (1, 3, 224, 224), r"lenet5: expected input \[N, C, 28, 28\], got \[1, 3, 224, 224\]"),
            # a 1-channel image into an RGB stem
            (cn.models.resnet18(), (1, 1, 32, 32),
             r"layer 'conv1' \(Conv2d\): .*weight of size \[64, 3, 7, 7\], expected input\[1, 1, 32, 32\] to have 3 "
             r"channels, but got 1"),
            # five 2x2 max pools: 16 -> 8 -> 4 -> 2 -> 1 -> 0 at the last one
            (cn.models.vgg11(), (1, 3, 16, 16), r"op 'max_pool2d' \(node 'features.20'\).*\[1, 512, 1, 1\]"),
            # torchvision's AlexNet needs >= 63x63: its last max pool gets a 1x1 map at 32x32
            (cn.models.alexnet(), (1, 3, 32, 32), r"op 'max_pool2d' \(node 'features.12'\).*\[1, 256, 1, 1\]"),
            # 8 -> conv0 4 -> pool0 2 -> transition1 1 -> transition2's 2x2 average pool: 0
            (cn.models.densenet121(), (1, 3, 8, 8),
             r"op 'avg_pool2d' \(node 'features.transition2.pool'\).*\[1, 256, 1, 1\]"),
            (cn.models.unet(), (1, 1, 40, 40),
             r"unet: input height and width must be divisible by 2\*\*depth = 16 \(depth 4\), "
             r"got input \[1, 1, 40, 40\]"),
            (cn.models.unet(in_channels=3), (1, 1, 32, 32), r"layer 'inc\.0' \(Conv2d\): .*expected input\[1, 1, 32, 32\] to have 3 channels"),
            (cn.models.conv_autoencoder(), (1, 1, 30, 30), r"conv_autoencoder: .*divisible by 4, got \[1, 1, 30, 30\]"),
            (cn.models.resnet18(), (1, 3, 32), r"op 'conv2d' \(node 'conv1'\): x must be 4-D \[N, C, H, W\], got \[1, 3, 32\]"),
            (cn.models.googlenet(), (1, 3, 2, 2), r"op 'max_pool2d' \(node 'maxpool1'\).*\[1, 64, 1, 1\]"),
        ]
    for model, shape, msg in cases:
        with pytest.raises(ValueError, match=msg):  # cn.Error is a ValueError
            model.compile(shape)


def test_new_modules_reject_what_they_cannot_do():
    with pytest.raises(ValueError, match="mode='bicubic' is not supported"):
        nn.Upsample(scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match=r"Upsample: scale_factor must be a number or 2 .*finite and > 0, got -1\.5"):
        nn.Upsample(scale_factor=-1.5)
    with pytest.raises(ValueError, match=r"layer 'up' \(Upsample\): interpolate: scale_factor 0\.1 makes the input "
                                         r"\[4, 4\] an empty output"):
        nn.Sequential(_named("up", nn.Upsample(scale_factor=0.1))).compile((1, 1, 4, 4))
    assert nn.Upsample(size=6).compile((1, 1, 4, 4)).output_shape == (1, 1, 6, 6)
    assert nn.Upsample(scale_factor=2.0).compile((1, 2, 3, 4)).output_shape == (1, 2, 6, 8)
    with pytest.raises(ValueError, match="output padding must be smaller than either stride or dilation"):
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="unet: depth and base must be >= 1"):
        cn.models.unet(depth=0)


def _named(name, module):
    from collections import OrderedDict
    return OrderedDict([(name, module)])


def test_unet_and_autoencoder_train():
    rng = np.random.default_rng(0)
    m = cn.models.unet(depth=2, base=4, seed=0)
    sess = m.compile((4, 1, 16, 16), mode="train", optimizer=cn.optim.Adam(lr=1e-2), loss="bce_with_logits")
    x = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    t = (x > 0.3).astype(np.float32)  # a pixelwise threshold: learnable
    losses = [sess.step(x, t) for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0]
    ae = cn.models.conv_autoencoder(base=8, seed=0)
    sess = ae.compile((8, 1, 16, 16), mode="train", optimizer=cn.optim.Adam(lr=1e-2), loss="mse")
    yy, xx = np.mgrid[0:16, 0:16] / 16.0  # smooth images in [0, 1]: phase-shifted waves
    ph = rng.random((8, 2, 1, 1)) * 2 * np.pi
    x = (0.5 + 0.25 * (np.sin(2 * np.pi * xx + ph[:, :1]) + np.cos(2 * np.pi * yy + ph[:, 1:]))).astype(np.float32)
    losses = [sess.step(x, x) for _ in range(40)]
    assert losses[-1] < 0.3 * losses[0]
    out = ae.compile(x.shape).run(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1  # the sigmoid
