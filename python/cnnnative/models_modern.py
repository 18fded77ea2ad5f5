"""cnnnative.models_modern: the architectures people deploy today, built from cnnnative.nn modules with
torchvision's structure and state_dict names, so a torchvision state_dict (as numpy arrays) loads one to one with
load_state_dict(strict=True) and parameter counts equal torchvision's (listed per builder, at 1000 classes):

  resnext50_32x4d      25,028,904   ResNet-50 with 32 groups of 4 channels in each bottleneck's 3x3 conv
  wide_resnet50_2      68,883,240   ResNet-50 with bottlenecks twice as wide
  squeezenet1_1         1,235,496   Fire modules (1x1 squeeze, 1x1 + 3x3 expand, concatenated)
  mobilenet_v2          3,504,872   inverted residuals, depthwise convs, ReLU6
  mobilenet_v3_small    2,542,856   + Hardswish, squeeze-excitation with Hardsigmoid
  mobilenet_v3_large    5,483,032
  efficientnet_b0       5,288,548   MBConv with SiLU, squeeze-excitation, stochastic depth
  shufflenet_v2_x1_0    2,278,604   channel split (chunk) and channel shuffle
  mnasnet1_0            4,383,312   inverted residuals, depthwise convs, ReLU
  regnet_y_400mf        4,344,144   grouped bottlenecks (group width 8) with squeeze-excitation
  inception_v3         27,161,264   factorized 7x7 / 3x3 convs; the aux head's weights kept, not run
  convnext_tiny        28,589,128   7x7 depthwise, LayerNorm, GELU MLP over NHWC, layer scale
  fcn_resnet50         35,322,218   dilated ResNet-50, FCN head, bilinear upsampling (21 classes; aux head kept)
  lraspp_mobilenet_v3_large  3,221,538  dilated MobileNetV3-Large, Lite R-ASPP head (21 classes)

Every builder takes num_classes, seed (as cnnnative.models: seeds this thread's generator; None continues it)
and, but the segmentation models fcn_resnet50 and lraspp_mobilenet_v3_large, cifar=False. cifar=True, for 32x32 inputs, keeps every parameter's shape and only runs the stem at stride 1:
the stem convolution's stride 2 becomes 1 (squeezenet1_1: also padding 1; inception_v3: also no maxpool1 /
maxpool2, as it needs >= 75x75 otherwise; convnext_tiny: the 4x4 patchify conv at stride 2, padding 1);
resnext50_32x4d and wide_resnet50_2
take cnnnative.models.ResNet's cifar stem (3x3 stride-1 conv1, no max pool: conv1's shape changes), as resnet50.
Without cifar every model but inception_v3 (>= 75x75) runs at 32x32 as torchvision would (a 1x1 map at the end).

Initialization follows torchvision's per architecture (the same distributions, numpy's generator):
  resnext/wide_resnet  as cnnnative.models.ResNet (conv kaiming_normal(fan_out, relu); BN 1/0)
  squeezenet1_1        conv kaiming_uniform (a=0), the final conv normal(0, 0.01); biases 0
  mobilenet_v2/v3      conv kaiming_normal(fan_out), bias 0; BN 1/0; linear normal(0, 0.01), bias 0
  efficientnet_b0      conv kaiming_normal(fan_out), bias 0; BN 1/0; linear uniform(+-1/sqrt(out)), bias 0
  shufflenet_v2_x1_0   torch's defaults
  mnasnet1_0           conv kaiming_normal(fan_out, relu), bias 0; BN 1/0; linear kaiming_uniform(fan_out,
                       sigmoid), bias 0
  regnet_y_400mf       conv normal(0, sqrt(2 / (k*k*out))); BN 1/0; linear normal(0, 0.01), bias 0
  inception_v3         conv and linear trunc_normal(0, 0.1, [-2, 2]) (aux conv1 0.01, aux fc 0.001); BN 1/0
  convnext_tiny        conv and linear trunc_normal(0, 0.02, [-2, 2]), bias 0; LayerNorm 1/0

Stochastic depth (efficientnet_b0, convnext_tiny; torchvision's "row" mode): identity in eval and at p = 0; in training each
sample's residual branch is kept with probability 1 - p and scaled by 1 / (1 - p). The mask is a dropout node
over a [N, 1, 1, 1] tensor of ones, so it draws from cnnnative's dropout generator (a stream keyed by the
session's seed, the step and the node's name, "<block>.stochastic_depth.dropout"): reproducible per seed, not
torch's draws. Parity with torch in training uses stochastic_depth_prob=0."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from . import functional as F
from . import nn
from .graph import current
from .models import BasicConv2d, Bottleneck, ResNet, _image_input, _seed

__all__ = ["Conv2dNormActivation", "SqueezeExcitation", "StochasticDepth", "GroupedBottleneck", "SqueezeNet",
           "Fire", "MobileNetV2", "MobileNetV3", "EfficientNet", "MBConv", "ShuffleNetV2", "MNASNet", "RegNet",
           "resnext50_32x4d", "wide_resnet50_2", "squeezenet1_1", "mobilenet_v2", "mobilenet_v3_small",
           "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0", "mnasnet1_0", "regnet_y_400mf",
           "Inception3", "inception_v3", "ConvNeXt", "CNBlock", "convnext_tiny", "FCN", "FCNHead",
           "fcn_resnet50", "LRASPP", "lraspp_mobilenet_v3_large", "MODERN_MODELS"]


def _make_divisible(v, divisor, min_value=None):
    """torchvision's channel rounding: v to the nearest multiple of divisor, at least min_value (default divisor)
    and never more than 10% below v."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _global_mean(x):
    """x.mean([2, 3]) of [N, C, H, W]: [N, C] (a global average pool, flattened)."""
    return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


# ------------------------------------------------------------------ shared blocks
class Conv2dNormActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv (no bias, 'same' padding (k - 1) // 2 * dilation), a norm layer
    and an activation (None: none); names 0, 1, 2. norm and activation are constructors (called with the
    channel count / no arguments)."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, norm=None, activation=None, dilation=1):
        padding = (kernel_size - 1) // 2 * dilation
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
                  (norm or nn.BatchNorm2d)(cout)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: x * scale_activation(fc2(activation(fc1(avgpool(x))))), fc1 / fc2 1x1
    convs with bias; the [N, C, 1, 1] scale multiplies x [N, C, H, W] by broadcasting."""

    def __init__(self, input_channels, squeeze_channels, activation=None, scale_activation=None):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = (activation or nn.ReLU)()
        self.scale_activation = (scale_activation or nn.Sigmoid)()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class StochasticDepth(nn.Module):
    """torchvision's StochasticDepth(p, mode="row"): identity in eval or at p = 0; in training x times a per-sample
    mask [N, 1, 1, 1] of 0 (probability p) or 1 / (1 - p), drawn by a dropout node (module docstring)."""

    def __init__(self, p: float, mode: str = "row"):
        super().__init__()
        if mode != "row":
            raise ValueError(f"StochasticDepth: only mode='row' is supported, got {mode!r}")
        if not 0 <= p < 1:
            raise ValueError(f"StochasticDepth: p must be in [0, 1), got {p}")
        self.p, self.mode = float(p), mode

    def forward(self, x):
        b = current()
        if not b.training or self.p == 0:
            return x
        ones = b.op("fill", [], {"shape": [int(x.shape[0])] + [1] * (x.dim() - 1), "value": 1.0},
                    name=b.node_name("ones"))[0]
        return x * F.dropout(ones, self.p, training=True, name=b.node_name("dropout"))

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


def _init_mobile(model, linear="normal"):
    """torchvision's MobileNet / EfficientNet init: conv kaiming_normal(fan_out), bias 0; BN 1/0; linear
    normal(0, 0.01) or (EfficientNet) uniform(+-1/sqrt(out_features)), bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            else:
                r = 1.0 / m.weight.shape[0] ** 0.5
                nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ ResNeXt / Wide ResNet
class GroupedBottleneck(Bottleneck):
    """torchvision's Bottleneck with groups and base_width (ResNeXt, Wide ResNet): the 3x3 conv is grouped and
    every inner layer width = int(planes * base_width / 64) * groups. Subclasses fix groups and base_width
    (ResNet builds blocks as block(inplanes, planes, stride, downsample))."""
    groups = 1
    base_width = 64

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        nn.Module.__init__(self)
        width = int(planes * (self.base_width / 64.0)) * self.groups
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=self.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride


class _ResNeXt32x4d(GroupedBottleneck):
    groups, base_width = 32, 4


class _WideBottleneck2(GroupedBottleneck):
    groups, base_width = 1, 128


def resnext50_32x4d(num_classes: int = 1000, cifar: bool = False, in_channels: int = 3,
                    zero_init_residual: bool = False, seed: int | None = None) -> ResNet:
    """torchvision's resnext50_32x4d (25,028,904 parameters): ResNet-50 whose bottlenecks have 32 groups of 4
    channels per 64 planes. cifar=True: 3x3 stride-1 conv1 and no max pool, as resnet50."""
    _seed(seed)
    return ResNet(_ResNeXt32x4d, [3, 4, 6, 3], num_classes, cifar, in_channels, zero_init_residual)


def wide_resnet50_2(num_classes: int = 1000, cifar: bool = False, in_channels: int = 3,
                    zero_init_residual: bool = False, seed: int | None = None) -> ResNet:
    """torchvision's wide_resnet50_2 (68,883,240 parameters): ResNet-50 with bottlenecks twice as wide.
    cifar=True: 3x3 stride-1 conv1 and no max pool, as resnet50."""
    _seed(seed)
    return ResNet(_WideBottleneck2, [3, 4, 6, 3], num_classes, cifar, in_channels, zero_init_residual)


# ------------------------------------------------------------------ SqueezeNet 1.1
class Fire(nn.Module):
    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return F.cat([self.expand1x1_activation(self.expand1x1(x)),
                      self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """torchvision's SqueezeNet 1.1 (version "1_1" only); needs >= 17x17 (cifar: >= 8x8)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        self.num_classes = num_classes
        stem = (nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1) if cifar
                else nn.Conv2d(in_channels, 64, kernel_size=3, stride=2))
        self.features = nn.Sequential(
            stem, nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        return self.classifier(self.features(x)).flatten(1)


def squeezenet1_1(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.5, in_channels: int = 3,
                  seed: int | None = None) -> SqueezeNet:
    """torchvision's squeezenet1_1 (1,235,496 parameters); cifar=True: the first conv at stride 1, padding 1."""
    _seed(seed)
    return SqueezeNet(num_classes, dropout, cifar, in_channels)


# ------------------------------------------------------------------ MobileNetV2
class InvertedResidual(nn.Module):
    """MobileNetV2's block: [1x1 expand + BN + ReLU6] - 3x3 depthwise + BN + ReLU6 - 1x1 project + BN
    (conv.0 .. conv.3), plus the input when stride 1 and the widths match."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1, activation=nn.ReLU6))
        layers += [Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden, activation=nn.ReLU6),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # expansion t, output channels c, repeats n, first stride s
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, cifar: bool = False,
                 in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        cin = _make_divisible(32 * width_mult, 8)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), 8)
        features = [Conv2dNormActivation(in_channels, cin, stride=1 if cifar else 2, activation=nn.ReLU6)]
        for t, c, n, s in self.SETTING:
            cout = _make_divisible(c * width_mult, 8)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(Conv2dNormActivation(cin, self.last_channel, kernel_size=1, activation=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        _init_mobile(self)

    def forward(self, x):
        return self.classifier(_global_mean(self.features(x)))


def mobilenet_v2(num_classes: int = 1000, cifar: bool = False, width_mult: float = 1.0, dropout: float = 0.2,
                 in_channels: int = 3, seed: int | None = None) -> MobileNetV2:
    """torchvision's mobilenet_v2 (3,504,872 parameters at width 1.0); cifar=True: the stem conv at stride 1."""
    _seed(seed)
    return MobileNetV2(num_classes, width_mult, dropout, cifar, in_channels)


# ------------------------------------------------------------------ MobileNetV3
def _bn_v3(c):
    return nn.BatchNorm2d(c, eps=0.001, momentum=0.01)


class InvertedResidualV3(nn.Module):
    """MobileNetV3's block (block.0 ..): [1x1 expand] - kxk depthwise - [SE with Hardsigmoid] - 1x1 project, BN
    eps 0.001 / momentum 0.01, ReLU ("RE") or Hardswish ("HS"); residual when stride 1 and widths match."""

    def __init__(self, cin, kernel, expanded, cout, use_se, act, stride, dilation=1):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, kernel_size=1, norm=_bn_v3, activation=activation))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel_size=kernel, stride=1 if dilation > 1 else stride,
                                           groups=expanded, norm=_bn_v3, activation=activation, dilation=dilation))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8),
                                            scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(expanded, cout, kernel_size=1, norm=_bn_v3, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(nn.Module):
    # (input channels, kernel, expanded channels, output channels, SE, activation, stride), last channel
    SETTINGS = {
        "large": ([(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
                   (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
                   (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
                   (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
                   (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
                   (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
                   (160, 5, 960, 160, True, "HS", 1)], 1280),
        "small": ([(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
                   (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
                   (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
                   (48, 5, 288, 96, True, "HS", 2), (96, 5, 576, 96, True, "HS", 1),
                   (96, 5, 576, 96, True, "HS", 1)], 1024),
    }

    def __init__(self, arch: str, num_classes: int = 1000, dropout: float = 0.2, cifar: bool = False,
                 in_channels: int = 3, dilated: bool = False):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        setting, last_channel = self.SETTINGS[arch]
        layers = [Conv2dNormActivation(in_channels, setting[0][0], stride=1 if cifar else 2, norm=_bn_v3,
                                       activation=nn.Hardswish)]
        # dilated (segmentation backbones, torchvision's dilated=True): the last stage (from its stride-2 block on)
        # runs at stride 1 with dilation 2
        last = max(i for i, cfg in enumerate(setting) if cfg[6] == 2)
        layers += [InvertedResidualV3(*cfg, dilation=2 if dilated and i >= last else 1)
                   for i, cfg in enumerate(setting)]
        c = setting[-1][3]
        layers.append(Conv2dNormActivation(c, 6 * c, kernel_size=1, norm=_bn_v3, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * c, last_channel), nn.Hardswish(), nn.Dropout(p=dropout),
                                        nn.Linear(last_channel, num_classes))
        _init_mobile(self)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def mobilenet_v3_small(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.2, in_channels: int = 3,
                       seed: int | None = None) -> MobileNetV3:
    """torchvision's mobilenet_v3_small (2,542,856 parameters); cifar=True: the stem conv at stride 1."""
    _seed(seed)
    return MobileNetV3("small", num_classes, dropout, cifar, in_channels)


def mobilenet_v3_large(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.2, in_channels: int = 3,
                       seed: int | None = None) -> MobileNetV3:
    """torchvision's mobilenet_v3_large (5,483,032 parameters); cifar=True: the stem conv at stride 1."""
    _seed(seed)
    return MobileNetV3("large", num_classes, dropout, cifar, in_channels)


# ------------------------------------------------------------------ EfficientNet-B0
class MBConv(nn.Module):
    """EfficientNet's block (block.0 ..): [1x1 expand] - kxk depthwise - SE (squeeze = input // 4, SiLU,
    Sigmoid) - 1x1 project, SiLU; residual (through stochastic depth) when stride 1 and widths match."""

    def __init__(self, expand_ratio, kernel, stride, cin, cout, stochastic_depth_prob):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        expanded = _make_divisible(cin * expand_ratio, 8)
        layers = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, kernel_size=1, activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel_size=kernel, stride=stride, groups=expanded,
                                           activation=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, cin // 4), activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, cout, kernel_size=1, activation=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cout

    def forward(self, x):
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(nn.Module):
    # (expand ratio, kernel, stride, input channels, output channels, layers): B0 (width and depth 1.0)
    B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

    def __init__(self, setting, num_classes: int = 1000, dropout: float = 0.2, stochastic_depth_prob: float = 0.2,
                 cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        layers = [Conv2dNormActivation(in_channels, setting[0][3], stride=1 if cifar else 2, activation=nn.SiLU)]
        total, k = sum(s[5] for s in setting), 0
        for t, kernel, stride, cin, cout, n in setting:
            stage = []
            for i in range(n):
                # the drop probability grows linearly with the block's index over the whole network
                stage.append(MBConv(t, kernel, stride if i == 0 else 1, cin if i == 0 else cout, cout,
                                    stochastic_depth_prob * k / total))
                k += 1
            layers.append(nn.Sequential(*stage))
        c = setting[-1][4]
        layers.append(Conv2dNormActivation(c, 4 * c, kernel_size=1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(4 * c, num_classes))
        _init_mobile(self, linear="uniform")

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def efficientnet_b0(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.2,
                    stochastic_depth_prob: float = 0.2, in_channels: int = 3,
                    seed: int | None = None) -> EfficientNet:
    """torchvision's efficientnet_b0 (5,288,548 parameters); stochastic depth as the module docstring says;
    cifar=True: the stem conv at stride 1."""
    _seed(seed)
    return EfficientNet(EfficientNet.B0, num_classes, dropout, stochastic_depth_prob, cifar, in_channels)


# ------------------------------------------------------------------ ShuffleNetV2
class ShuffleUnit(nn.Module):
    """ShuffleNetV2's InvertedResidual: stride 1 splits the channels in two halves (chunk), transforms the second
    (branch2) and concatenates; stride 2 concatenates branch1(x) and branch2(x); then a channel shuffle of 2."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"ShuffleNetV2: illegal stride {stride}")
        self.stride = stride
        bf = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False), nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, 1, 0, bias=False), nn.BatchNorm2d(bf), nn.ReLU(inplace=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = F.cat([x1, self.branch2(x2)], 1)
        else:
            out = F.cat([self.branch1(x), self.branch2(x)], 1)
        return F.channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, stages_repeats=(4, 8, 4), stages_out_channels=(24, 116, 232, 464, 1024),
                 num_classes: int = 1000, cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        cin = stages_out_channels[0]
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, cin, 3, 1 if cifar else 2, 1, bias=False),
                                   nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, n, cout in zip(("stage2", "stage3", "stage4"), stages_repeats, stages_out_channels[1:]):
            setattr(self, name, nn.Sequential(ShuffleUnit(cin, cout, 2),
                                              *[ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]))
            cin = cout
        cout = stages_out_channels[-1]
        self.conv5 = nn.Sequential(nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True))
        self.fc = nn.Linear(cout, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(_global_mean(x))


def shufflenet_v2_x1_0(num_classes: int = 1000, cifar: bool = False, in_channels: int = 3,
                       seed: int | None = None) -> ShuffleNetV2:
    """torchvision's shufflenet_v2_x1_0 (2,278,604 parameters; torch's default init); cifar=True: conv1 at
    stride 1."""
    _seed(seed)
    return ShuffleNetV2((4, 8, 4), (24, 116, 232, 464, 1024), num_classes, cifar, in_channels)


# ------------------------------------------------------------------ MNASNet 1.0
_MNAS_BN_MOMENTUM = 1 - 0.9997  # torchvision's (torch's convention: weight of the new batch statistic)


def _mnas_bn(c):
    return nn.BatchNorm2d(c, momentum=_MNAS_BN_MOMENTUM)


class _MnasInvertedResidual(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, expansion_factor):
        super().__init__()
        mid = cin * expansion_factor
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), _mnas_bn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, stride=stride, groups=mid, bias=False),
            _mnas_bn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), _mnas_bn(cout))

    def forward(self, x):
        return self.layers(x) + x if self.apply_residual else self.layers(x)


class MNASNet(nn.Module):
    """torchvision's MNASNet (alpha 1.0 only): layers.0-7 the stem and first depthwise-separable conv, layers.8-13
    six stacks of inverted residuals, layers.14-16 the 1x1 conv to 1280; classifier dropout + linear."""
    # (output channels, kernel, first stride, expansion, repeats) of the six stacks
    STACKS = [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2), (192, 5, 2, 6, 4),
              (320, 3, 1, 6, 1)]

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        layers = [nn.Conv2d(in_channels, 32, 3, padding=1, stride=1 if cifar else 2, bias=False), _mnas_bn(32),
                  nn.ReLU(inplace=True),
                  nn.Conv2d(32, 32, 3, padding=1, stride=1, groups=32, bias=False), _mnas_bn(32),
                  nn.ReLU(inplace=True),
                  nn.Conv2d(32, 16, 1, padding=0, stride=1, bias=False), _mnas_bn(16)]
        cin = 16
        for cout, k, s, e, r in self.STACKS:
            layers.append(nn.Sequential(_MnasInvertedResidual(cin, cout, k, s, e),
                                        *[_MnasInvertedResidual(cout, cout, k, 1, e) for _ in range(r - 1)]))
            cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, padding=0, stride=1, bias=False), _mnas_bn(1280), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="sigmoid")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(_global_mean(self.layers(x)))


def mnasnet1_0(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.2, in_channels: int = 3,
               seed: int | None = None) -> MNASNet:
    """torchvision's mnasnet1_0 (4,383,312 parameters); cifar=True: the first conv at stride 1."""
    _seed(seed)
    return MNASNet(num_classes, dropout, cifar, in_channels)


# ------------------------------------------------------------------ RegNetY
class BottleneckTransform(nn.Sequential):
    """RegNet's f: a (1x1) - b (3x3 grouped, group width g, stride) - [se (squeeze = round(se_ratio * w_in))]
    - c (1x1, no activation)."""

    def __init__(self, w_in, w_out, stride, group_width, bottleneck_multiplier, se_ratio):
        w_b = int(round(w_out * bottleneck_multiplier))
        layers = OrderedDict()
        layers["a"] = Conv2dNormActivation(w_in, w_b, kernel_size=1, activation=nn.ReLU)
        layers["b"] = Conv2dNormActivation(w_b, w_b, stride=stride, groups=w_b // group_width, activation=nn.ReLU)
        if se_ratio:
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * w_in)), activation=nn.ReLU)
        layers["c"] = Conv2dNormActivation(w_b, w_out, kernel_size=1, activation=None)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    """relu(proj(x) + f(x)); proj (1x1 conv + BN, stride) only where the width or the resolution changes."""

    def __init__(self, w_in, w_out, stride, group_width, bottleneck_multiplier=1.0, se_ratio=None):
        super().__init__()
        self.proj = None
        if w_in != w_out or stride != 1:
            self.proj = Conv2dNormActivation(w_in, w_out, kernel_size=1, stride=stride, activation=None)
        self.f = BottleneckTransform(w_in, w_out, stride, group_width, bottleneck_multiplier, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


class RegNet(nn.Module):
    """torchvision's RegNet with the simple stem (3x3 stride-2 conv + BN + ReLU, 32 channels) and ResBottleneck
    blocks: trunk_output.block<i>.block<i>-<j>; every stage starts at stride 2."""

    def __init__(self, stages, group_width, se_ratio=None, num_classes: int = 1000, stem_width: int = 32,
                 cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        self.stem = Conv2dNormActivation(in_channels, stem_width, stride=1 if cifar else 2, activation=nn.ReLU)
        blocks, w_in = [], stem_width
        for i, (w, d) in enumerate(stages):
            stage = nn.Sequential()
            for j in range(d):
                stage.add_module(f"block{i + 1}-{j}", ResBottleneckBlock(w_in if j == 0 else w, w, 2 if j == 0 else 1,
                                                                         group_width, 1.0, se_ratio))
            blocks.append((f"block{i + 1}", stage))
            w_in = w
        self.trunk_output = nn.Sequential(OrderedDict(blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.weight.shape
                nn.init.normal_(m.weight, mean=0.0, std=(2.0 / (k[2] * k[3] * k[0])) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.trunk_output(self.stem(x))
        return self.fc(self.avgpool(x).flatten(1))


# RegNetY-400MF: torchvision's BlockParams.from_init_params(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8,
# se_ratio=0.25) quantizes to these (stage width, depth); the tests recompute them with the twin's formula
_REGNET_Y_400MF = [(48, 1), (104, 3), (208, 6), (440, 6)]


def regnet_y_400mf(num_classes: int = 1000, cifar: bool = False, in_channels: int = 3,
                   seed: int | None = None) -> RegNet:
    """torchvision's regnet_y_400mf (4,344,144 parameters): widths 48/104/208/440, depths 1/3/6/6, group width 8,
    squeeze-excitation 0.25; cifar=True: the stem conv at stride 1."""
    _seed(seed)
    return RegNet(_REGNET_Y_400MF, 8, 0.25, num_classes, 32, cifar, in_channels)


# ------------------------------------------------------------------ Inception v3
class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return F.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return F.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = m(d)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return F.cat([self.branch1x1(x), b7, d, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return F.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b = self.branch3x3_1(x)
        b3 = F.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = F.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return F.cat([self.branch1x1(x), b3, d, bp], 1)


class InceptionAux(nn.Module):
    """The auxiliary classifier's weights (AuxLogits.*), kept so torchvision's state_dict loads; Inception3's
    forward does not run it (a model returns one tensor)."""

    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        return self.fc(F.adaptive_avg_pool2d(x, (1, 1)).flatten(1))


class Inception3(nn.Module):
    """torchvision's Inception v3 with transform_input=False. aux_logits=True (torchvision's default, needed to load
    its weights) keeps the AuxLogits head's parameters, but forward returns the main logits only, in training too:
    the aux head gets no gradient (torchvision trains with loss + 0.4 * aux loss). Needs >= 75x75 (cifar=True:
    Conv2d_1a_3x3 at stride 1 and no maxpool1 / maxpool2, for 32x32)."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.5, cifar: bool = False,
                 in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar, 299)
        self.Conv2d_1a_3x3 = BasicConv2d(in_channels, 32, kernel_size=3, stride=1 if cifar else 2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        # torchvision: trunc_normal(0, stddev, [-2, 2]) with stddev 0.1, AuxLogits.conv1 0.01, AuxLogits.fc 0.001
        special = {} if self.AuxLogits is None else {id(self.AuxLogits.conv1.conv): 0.01, id(self.AuxLogits.fc): 0.001}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=special.get(id(m), 0.1), a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, "Mixed_" + name)(x)
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))


def inception_v3(num_classes: int = 1000, cifar: bool = False, aux_logits: bool = True, dropout: float = 0.5,
                 in_channels: int = 3, seed: int | None = None) -> Inception3:
    """torchvision's inception_v3 (27,161,264 parameters with the aux head, as its weights; transform_input=False);
    the aux head is not run (Inception3). Needs >= 75x75; cifar=True: stride-1 stem, no max pools, for 32x32."""
    _seed(seed)
    return Inception3(num_classes, aux_logits, dropout, cifar, in_channels)


# ------------------------------------------------------------------ ConvNeXt-Tiny
class _ChannelsLastLinear(nn.Linear):
    """torch.nn.Linear applied over the last dim of [..., in_features] (ConvNeXt's MLP on NHWC): the leading dims
    flattened into rows and restored. Parameters as nn.Linear's."""

    def forward(self, x):
        lead = tuple(x.shape[:-1])
        y = super().forward(x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, self.weight.shape[0])


class CNBlock(nn.Module):
    """ConvNeXt's block: x + stochastic_depth(layer_scale * block(x)), block = 7x7 depthwise conv (bias) - NHWC -
    LayerNorm (eps 1e-6) - Linear (4x) - GELU - Linear - NCHW (block.0 .. block.6); layer_scale [C, 1, 1]."""

    def __init__(self, dim, layer_scale, stochastic_depth_prob):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True), nn.Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6), _ChannelsLastLinear(dim, 4 * dim), nn.GELU(), _ChannelsLastLinear(4 * dim, dim),
            nn.Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(np.full((dim, 1, 1), layer_scale, np.float32))
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, x):
        return self.stochastic_depth(self._tensor("layer_scale") * self.block(x)) + x


class ConvNeXt(nn.Module):
    """torchvision's ConvNeXt: features.0 the 4x4 stride-4 patchify conv + LayerNorm2d, then stages of CNBlocks
    (features.1, 3, 5, 7) with LayerNorm2d + 2x2 stride-2 conv downsamplers between (features.2, 4, 6); classifier
    LayerNorm2d - Flatten - Linear. Stochastic depth grows linearly to stochastic_depth_prob over the blocks."""

    def __init__(self, stages=((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)), num_classes: int = 1000,
                 stochastic_depth_prob: float = 0.1, layer_scale: float = 1e-6, cifar: bool = False,
                 in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        c0 = stages[0][0]
        stride, padding = (2, 1) if cifar else (4, 0)
        layers = [nn.Sequential(nn.Conv2d(in_channels, c0, kernel_size=4, stride=stride, padding=padding, bias=True),
                                nn.LayerNorm2d(c0, eps=1e-6))]
        total, k = sum(s[2] for s in stages), 0
        for cin, cout, n in stages:
            stage = []
            for _ in range(n):
                stage.append(CNBlock(cin, layer_scale, stochastic_depth_prob * k / (total - 1.0)))
                k += 1
            layers.append(nn.Sequential(*stage))
            if cout is not None:
                layers.append(nn.Sequential(nn.LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, cout, kernel_size=2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        c = stages[-1][1] or stages[-1][0]
        self.classifier = nn.Sequential(nn.LayerNorm2d(c, eps=1e-6), nn.Flatten(1), nn.Linear(c, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def convnext_tiny(num_classes: int = 1000, cifar: bool = False, stochastic_depth_prob: float = 0.1,
                  in_channels: int = 3, seed: int | None = None) -> ConvNeXt:
    """torchvision's convnext_tiny (28,589,128 parameters); cifar=True: the patchify conv at stride 2, padding 1
    (a 2x2 map at the end of a 32x32 input instead of 1x1)."""
    _seed(seed)
    return ConvNeXt(((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)), num_classes,
                    stochastic_depth_prob, 1e-6, cifar, in_channels)


# ------------------------------------------------------------------ FCN-ResNet50 (segmentation)
class DilatedBottleneck(Bottleneck):
    """cnnnative.models.Bottleneck whose 3x3 conv has a dilation (padding = dilation), as torchvision's with
    replace_stride_with_dilation."""

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__(inplanes, planes, stride, downsample)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)


class _DilatedResNet50(nn.Module):
    """torchvision's resnet50(replace_stride_with_dilation=[False, True, True]) up to layer4 (output stride 8; no
    avgpool / fc, as IntermediateLayerGetter keeps it); forward returns layer4's output."""

    def __init__(self, in_channels=3):
        super().__init__()
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, 2)
        self.layer3 = self._make_layer(256, 6, 2, dilate=True)
        self.layer4 = self._make_layer(512, 3, 2, dilate=True)

    def _make_layer(self, planes, blocks, stride=1, dilate=False):
        previous = self.dilation
        if dilate:  # the stride becomes a dilation from the next block on
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [DilatedBottleneck(self.inplanes, planes, stride, downsample, previous)]
        self.inplanes = planes * 4
        layers += [DilatedBottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class FCNHead(nn.Sequential):
    """3x3 conv (no bias) to in/4 channels - BN - ReLU - Dropout(0.1) - 1x1 conv to the classes (names 0 .. 4)."""

    def __init__(self, in_channels, channels):
        inter = in_channels // 4
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(),
                         nn.Dropout(0.1), nn.Conv2d(inter, channels, 1))


class FCN(nn.Module):
    """torchvision's fcn_resnet50: backbone.* (dilated ResNet-50), classifier (FCNHead(2048)), logits upsampled
    bilinearly (align_corners=False) to the input's size: [N, num_classes, H, W]. aux_loss=True (torchvision's
    weights have it) keeps aux_classifier (FCNHead(1024) on layer3) for loading, but forward returns the "out"
    logits only, in training too (the aux head gets no gradient; torchvision trains with 0.5 x its loss)."""

    def __init__(self, num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3):
        super().__init__()
        self.input_shape = (1, in_channels, 520, 520)  # torchvision's evaluation size for its weights
        self.backbone = _DilatedResNet50(in_channels)
        self.classifier = FCNHead(2048, num_classes)
        self.aux_classifier = FCNHead(1024, num_classes) if aux_loss else None
        for m in self.backbone.modules():  # the backbone is torchvision's resnet50 (its init); heads: torch's
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        size = tuple(x.shape[2:])
        return F.interpolate(self.classifier(self.backbone(x)), size=size, mode="bilinear", align_corners=False)


def fcn_resnet50(num_classes: int = 21, aux_loss: bool = True, in_channels: int = 3,
                 seed: int | None = None) -> FCN:
    """torchvision's fcn_resnet50 (35,322,218 parameters with the aux head, as its weights; 21 classes);
    output [N, num_classes, H, W]. A segmentation model: no cifar option (output stride 8, any H, W >= 8)."""
    _seed(seed)
    return FCN(num_classes, aux_loss, in_channels)


# ------------------------------------------------------------------ LRASPP-MobileNetV3-Large (segmentation)
class LRASPPHead(nn.Module):
    """Lite R-ASPP: cbr(high) * scale(high) (a sigmoid gate from the global average), upsampled bilinearly to the
    low-level map and classified, plus a 1x1 classifier of the low-level map."""

    def __init__(self, low_channels, high_channels, num_classes, inter_channels):
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                 nn.BatchNorm2d(inter_channels), nn.ReLU(inplace=True))
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low, high):
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=tuple(low.shape[2:]), mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPP(nn.Module):
    """torchvision's lraspp_mobilenet_v3_large: backbone.0 .. backbone.16 = the features of a dilated
    MobileNetV3-Large (torchvision's init), "low" taken after backbone.4 (output stride 8, 40 channels), "high"
    after backbone.16 (960 channels, output stride 16); classifier = LRASPPHead (128 channels); logits upsampled
    bilinearly (align_corners=False) to the input: [N, num_classes, H, W]."""

    def __init__(self, num_classes: int = 21, inter_channels: int = 128, in_channels: int = 3):
        super().__init__()
        self.input_shape = (1, in_channels, 520, 520)  # torchvision's evaluation size for its weights
        self.backbone = MobileNetV3("large", in_channels=in_channels, dilated=True).features
        self.classifier = LRASPPHead(40, 960, num_classes, inter_channels)

    def forward(self, x):
        h = x
        for i, m in enumerate(self.backbone):
            h = m(h)
            if i == 4:
                low = h
        out = self.classifier(low, h)
        return F.interpolate(out, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)


def lraspp_mobilenet_v3_large(num_classes: int = 21, in_channels: int = 3, seed: int | None = None) -> LRASPP:
    """torchvision's lraspp_mobilenet_v3_large (3,221,538 parameters at 21 classes); output [N, num_classes, H, W].
    A segmentation model: no cifar option (any input >= 16x16)."""
    _seed(seed)
    return LRASPP(num_classes, 128, in_channels)


MODERN_MODELS = {
    "resnext50_32x4d": resnext50_32x4d, "wide_resnet50_2": wide_resnet50_2, "squeezenet1_1": squeezenet1_1,
    "mobilenet_v2": mobilenet_v2, "mobilenet_v3_small": mobilenet_v3_small, "mobilenet_v3_large": mobilenet_v3_large,
    "efficientnet_b0": efficientnet_b0, "shufflenet_v2_x1_0": shufflenet_v2_x1_0, "mnasnet1_0": mnasnet1_0,
    "regnet_y_400mf": regnet_y_400mf, "inception_v3": inception_v3,
    "convnext_tiny": convnext_tiny, "fcn_resnet50": fcn_resnet50,
    "lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large,
}
