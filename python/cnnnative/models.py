"""cnnnative.models: the model zoo, built from cnnnative.nn modules with torchvision's structure and names,
so a torchvision state_dict (as numpy arrays) loads one to one with load_state_dict(strict=True), BN
num_batches_tracked included, and parameter counts equal torchvision's.

Every builder takes num_classes (or channels), seed (calls cn.manual_seed(seed), which seeds the calling
thread's generator only, so a seeded build gives the same weights whatever other threads do; None: continue
this thread's generator) and, where torchvision's stem would shrink a 32x32 input to almost nothing, cifar=True:
  resnet*      conv1 = 3x3 stride 1 (padding 1) and no max pool (maxpool is an Identity)
  densenet121  conv0 = 3x3 stride 1 (padding 1) and no pool0
  googlenet    conv1 = 3x3 stride 1 (padding 1) and no maxpool1/maxpool2
  alexnet      features.0 = 3x3 stride 1 (padding 1) and avgpool to 1x1, classifier from 256 features
  vgg*         avgpool to 1x1 and classifier from 512 features (torchvision's 7x7 pool of a 1x1 map
               would repeat it 49 times into a 25088-wide layer)
Names stay torchvision's; only those layers' shapes change. Without cifar, every model but AlexNet
(which needs at least 63x63) also runs at 32x32 exactly as torchvision would.

Initialization follows torchvision's (same distributions, numpy's generator): torch's defaults
(kaiming_uniform(a=sqrt(5)) for conv/linear, BN ones/zeros) plus torchvision's overrides:
  resnet       conv kaiming_normal(fan_out, relu); BN 1/0
  vgg          conv kaiming_normal(fan_out, relu), bias 0; linear normal(0, 0.01), bias 0; BN 1/0
  densenet     conv kaiming_normal (fan_in); linear bias 0; BN 1/0
  googlenet    conv and linear weights trunc_normal(0, 0.01, [-2, 2]); BN 1/0
  alexnet, lenet5, unet, conv_autoencoder: torch's defaults.

Every model declares the input it is built for as `input_shape` (1, C, H, W): torchvision's evaluation crop
(224x224; inception_v3 299x299; the segmentation models 520x520), 32x32 with cifar=True, 28x28 for lenet5 and
conv_autoencoder, 64x64 for unet; model.compile(16) compiles for a batch of 16 of it. Any other size the model
takes is given in full (compile((16, 3, 64, 64))).

A model asked for an input it cannot take fails at compile, naming the layer and the shapes."""
from __future__ import annotations

from collections import OrderedDict

from . import functional as F
from . import nn

__all__ = ["LeNet5", "AlexNet", "VGG", "ResNet", "BasicBlock", "Bottleneck", "GoogLeNet", "Inception", "BasicConv2d",
           "DenseNet", "UNet", "ConvAutoencoder", "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19",
           "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet152", "googlenet", "densenet121", "unet", "conv_autoencoder", "get_model", "MODELS"]


def _seed(seed):
    # per thread (nn.manual_seed): the seed never reaches the draws of other threads' builders
    if seed is not None:
        nn.manual_seed(seed)


def _image_input(in_channels, cifar, size=224):
    """A classifier's declared input shape (compile(16) compiles for a batch of 16 of it): torchvision's evaluation
    crop (224x224; Inception v3 299x299) with cifar=False, 32x32 with cifar=True. Any other size the model can take
    is given in full: compile((16, 3, 64, 64))."""
    return (1, int(in_channels), 32, 32) if cifar else (1, int(in_channels), size, size)


def _expect_4d(name, x, channels=None):
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        c = "C" if channels is None else str(channels)
        raise ValueError(f"{name}: expected input [N, {c}, H, W], got {list(x.shape)}")


# ------------------------------------------------------------------ LeNet-5
class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs: conv5x5(6, pad 2)-pool-conv5x5(16)-pool-fc120-fc84-fc10 (ReLU, max pool)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.input_shape = (1, in_channels, 28, 28)  # the declared input: compile(16) is (16, C, 28, 28)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        if x.dim() != 4 or tuple(x.shape[2:]) != (28, 28):
            raise ValueError(f"lenet5: expected input [N, C, 28, 28], got {list(x.shape)}")
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10, in_channels: int = 1, seed: int | None = None) -> LeNet5:
    _seed(seed)
    return LeNet5(num_classes, in_channels)


# ------------------------------------------------------------------ AlexNet (torchvision's one-GPU variant)
class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        stem = nn.Conv2d(in_channels, 64, 3, padding=1) if cifar else nn.Conv2d(in_channels, 64, 11, stride=4,
                                                                                  padding=2)
        self.features = nn.Sequential(
            stem, nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2))
        pool = 1 if cifar else 6
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * pool * pool, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def alexnet(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.5, in_channels: int = 3,
            seed: int | None = None) -> AlexNet:
    """AlexNet as torchvision (61,100,840 parameters at 1000 classes); needs >= 63x63 unless cifar=True."""
    _seed(seed)
    return AlexNet(num_classes, dropout, cifar, in_channels)


# ------------------------------------------------------------------ VGG
_VGG_CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def _vgg_features(cfg, batch_norm, in_channels=3):
    layers = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features, num_classes: int = 1000, dropout: float = 0.5, cifar: bool = False):
        super().__init__()
        stem = next((m for m in features.modules() if isinstance(m, nn.Conv2d)), None)
        self.input_shape = _image_input(3 if stem is None else stem.in_channels, cifar)
        pool = 1 if cifar else 7
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(512 * pool * pool, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout), nn.Linear(4096, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def _vgg(cfg, batch_norm, num_classes, cifar, dropout, in_channels, seed):
    _seed(seed)
    return VGG(_vgg_features(_VGG_CFGS[cfg], batch_norm, in_channels), num_classes, dropout, cifar)


def _vgg_builder(name, cfg, bn):
    def build(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.5, in_channels: int = 3,
              seed: int | None = None) -> VGG:
        return _vgg(cfg, bn, num_classes, cifar, dropout, in_channels, seed)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"VGG configuration {cfg}{' with batch norm' if bn else ''} as torchvision's {name}; "
                     "needs >= 32x32 (five 2x2 max pools).")
    return build


vgg11 = _vgg_builder("vgg11", "A", False)
vgg13 = _vgg_builder("vgg13", "B", False)
vgg16 = _vgg_builder("vgg16", "D", False)
vgg19 = _vgg_builder("vgg19", "E", False)
vgg11_bn = _vgg_builder("vgg11_bn", "A", True)
vgg13_bn = _vgg_builder("vgg13_bn", "B", True)
vgg16_bn = _vgg_builder("vgg16_bn", "D", True)
vgg19_bn = _vgg_builder("vgg19_bn", "E", True)


# ------------------------------------------------------------------ ResNet
def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 conv (conv2)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes: int = 1000, cifar: bool = False, in_channels: int = 3,
                 zero_init_residual: bool = False):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        self.inplanes = 64
        if cifar:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _resnet_builder(name, block, layers, count):
    def build(num_classes: int = 1000, cifar: bool = False, in_channels: int = 3, zero_init_residual: bool = False,
              seed: int | None = None) -> ResNet:
        _seed(seed)
        return ResNet(block, layers, num_classes, cifar, in_channels, zero_init_residual)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"torchvision's {name} ({block.__name__} x {layers}; {count:,} parameters at 1000 classes). "
                     "cifar=True: 3x3 stride-1 conv1 and no max pool, for 32x32 inputs.")
    return build


resnet18 = _resnet_builder("resnet18", BasicBlock, [2, 2, 2, 2], 11_689_512)
resnet34 = _resnet_builder("resnet34", BasicBlock, [3, 4, 6, 3], 21_797_672)
resnet50 = _resnet_builder("resnet50", Bottleneck, [3, 4, 6, 3], 25_557_032)
resnet101 = _resnet_builder("resnet101", Bottleneck, [3, 4, 23, 3], 44_549_160)
resnet152 = _resnet_builder("resnet152", Bottleneck, [3, 8, 36, 3], 60_192_808)


# ------------------------------------------------------------------ GoogLeNet (Inception v1)
class BasicConv2d(nn.Module):
    """conv (no bias) + BatchNorm2d(eps=0.001) + ReLU, as torchvision's googlenet."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's "5x5" branch uses a 3x3 kernel (a known quirk kept for weight compatibility)
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))

    def forward(self, x):
        return F.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet with aux_logits=False and transform_input=False (6,624,904 parameters)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, cifar: bool = False, in_channels: int = 3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        if cifar:
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
            self.maxpool1 = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        x = self.inception4e(self.inception4d(self.inception4c(self.inception4b(x))))
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        x = self.dropout(self.avgpool(x).flatten(1))
        return self.fc(x)


def googlenet(num_classes: int = 1000, cifar: bool = False, dropout: float = 0.2, in_channels: int = 3,
              seed: int | None = None) -> GoogLeNet:
    """Inception v1 as torchvision (aux_logits=False, transform_input=False); cifar=True: 3x3 stride-1 conv1
    and no maxpool1/maxpool2."""
    _seed(seed)
    return GoogLeNet(num_classes, dropout, cifar, in_channels)


# ------------------------------------------------------------------ DenseNet
class _DenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()

    def forward(self, features):
        x = F.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.drop(self.conv2(self.relu2(self.norm2(x))))


class _DenseBlock(nn.Module):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                                              bn_size, drop_rate))

    def forward(self, x):
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return F.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features):
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(num_input_features)), ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)),
            ("pool", nn.AvgPool2d(kernel_size=2, stride=2))]))


class DenseNet(nn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4, drop_rate=0.0,
                 num_classes=1000, cifar=False, in_channels=3):
        super().__init__()
        self.input_shape = _image_input(in_channels, cifar)
        if cifar:
            stem = [("conv0", nn.Conv2d(in_channels, num_init_features, kernel_size=3, stride=1, padding=1,
                                        bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True))]
        else:
            stem = [("conv0", nn.Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3,
                                        bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)), ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]
        self.features = nn.Sequential(OrderedDict(stem))
        c = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, c, bn_size, growth_rate, drop_rate))
            c += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = F.relu(self.features(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(x.flatten(1))


def densenet121(num_classes: int = 1000, cifar: bool = False, drop_rate: float = 0.0, in_channels: int = 3,
                seed: int | None = None) -> DenseNet:
    """torchvision's densenet121 (growth 32, blocks (6, 12, 24, 16), 7,978,856 parameters); cifar=True: 3x3
    stride-1 conv0 and no pool0."""
    _seed(seed)
    return DenseNet(32, (6, 12, 24, 16), 64, 4, drop_rate, num_classes, cifar, in_channels)


# ------------------------------------------------------------------ U-Net
class DoubleConv(nn.Sequential):
    """(conv3x3 (no bias) - BN - ReLU) x 2; names 0..5."""

    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x):
        return self.conv(self.pool(x))


class _Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * cout, cout)

    def forward(self, x, skip):
        return self.conv(F.cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015, with 'same' padding and batch norm): an encoder of `depth` max-pool +
    double-conv stages doubling the width from `base`, a decoder of ConvTranspose2d(2, stride 2) + skip
    concatenation ([skip, upsampled]) + double conv, and a 1x1 conv to num_classes logits (no activation;
    train with bce_with_logits or mse). H and W must be divisible by 2**depth; the output is [N, num_classes,
    H, W]. Names: inc.*, downs.<i>.conv.*, ups.<i>.up, ups.<i>.conv.*, outc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 1, depth: int = 4, base: int = 64):
        super().__init__()
        self.input_shape = (1, in_channels, max(64, 2 ** depth), max(64, 2 ** depth))  # the CLI's segment size
        if depth < 1 or base < 1:
            raise ValueError(f"unet: depth and base must be >= 1, got depth={depth}, base={base}")
        self.depth = int(depth)
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList([_Down(widths[i], widths[i + 1]) for i in range(depth)])
        self.ups = nn.ModuleList([_Up(widths[i + 1], widths[i]) for i in reversed(range(depth))])
        self.outc = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x):
        _expect_4d("unet", x)
        k = 2 ** self.depth
        if x.shape[2] % k or x.shape[3] % k:
            raise ValueError(f"unet: input height and width must be divisible by 2**depth = {k} "
                             f"(depth {self.depth}), got input {list(x.shape)}")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


def unet(in_channels: int = 1, num_classes: int = 1, depth: int = 4, base: int = 64,
         seed: int | None = None) -> UNet:
    _seed(seed)
    return UNet(in_channels, num_classes, depth, base)


# ------------------------------------------------------------------ convolutional autoencoder
class ConvAutoencoder(nn.Module):
    """Encoder: conv3x3 stride 2 (in -> base) - ReLU - conv3x3 stride 2 (base -> 2*base) - ReLU.
    Decoder: ConvTranspose2d(3, stride 2, padding 1, output_padding 1) (2*base -> base) - ReLU -
    ConvTranspose2d(same) (base -> in) - Sigmoid (final_activation='sigmoid', the default, for targets in
    [0, 1] and loss='mse'; None gives logits, e.g. for bce_with_logits). Each stage halves / doubles H and W,
    so the output has the input's shape; H and W must be divisible by 4.
    Names: encoder.0, encoder.2, decoder.0, decoder.2."""

    def __init__(self, in_channels: int = 1, base: int = 16, final_activation: str | None = "sigmoid"):
        super().__init__()
        self.input_shape = (1, in_channels, 28, 28)  # the CLI's denoising digits
        if final_activation not in ("sigmoid", None):
            raise ValueError(f"conv_autoencoder: final_activation must be 'sigmoid' or None, got {final_activation!r}")
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, base, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(base, 2 * base, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        dec = [nn.ConvTranspose2d(2 * base, base, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
               nn.ConvTranspose2d(base, in_channels, 3, stride=2, padding=1, output_padding=1)]
        if final_activation == "sigmoid":
            dec.append(nn.Sigmoid())
        self.decoder = nn.Sequential(*dec)

    def forward(self, x):
        _expect_4d("conv_autoencoder", x)
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"conv_autoencoder: input height and width must be divisible by 4, got {list(x.shape)}")
        return self.decoder(self.encoder(x))


def conv_autoencoder(in_channels: int = 1, base: int = 16, final_activation: str | None = "sigmoid",
                     seed: int | None = None) -> ConvAutoencoder:
    _seed(seed)
    return ConvAutoencoder(in_channels, base, final_activation)


MODELS = {
    "lenet5": lenet5, "alexnet": alexnet,
    "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19,
    "vgg11_bn": vgg11_bn, "vgg13_bn": vgg13_bn, "vgg16_bn": vgg16_bn, "vgg19_bn": vgg19_bn,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101, "resnet152": resnet152,
    "googlenet": googlenet, "densenet121": densenet121, "unet": unet, "conv_autoencoder": conv_autoencoder,
}


# the modern architectures (issue 13), registered under torchvision's names; models_modern imports ResNet,
# Bottleneck and BasicConv2d from this module, so this import stays below their definitions
from .models_modern import MODERN_MODELS  # noqa: E402

MODELS.update(MODERN_MODELS)
# as functions of this module too, like the classic ones: cn.models.mobilenet_v2(...), as torchvision.models has them
globals().update(MODERN_MODELS)
__all__ += sorted(MODERN_MODELS)


def get_model(name: str, **kw) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kw)
