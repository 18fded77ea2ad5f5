"""Writes the fuzzer's seed corpus (fuzz/corpus/): small valid .cnn files covering every inference op and
attribute form, plus truncations and bit flips of them (with the CRC repaired, so they reach the parser), and
files near the layout checks: a data section with slack after the tensors, a gap before the data section.
Needs cnnnative installed:  python fuzz/make_corpus.py"""
import os
import struct
import zlib

import numpy as np

import cnnnative as cn
from cnnnative import nn
from cnnnative.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(self.pool(self.bn(self.conv(x)).relu()).flatten(1))


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, groups=2, bias=False)
        self.act = nn.LeakyReLU(0.1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.avg = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.act(self.c1(x))
        y = (self.c2(y).sigmoid() + y).tanh()
        return F.softmax(self.fc(self.gap(self.avg(y)).flatten(1)))


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1))
        self.mp = nn.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True)

    def forward(self, x):
        return self.mp(self.conv(x)).flatten(2).reshape(x.shape[0], -1)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(5, 4)
        self.l2 = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.l2(self.l1(x.flatten(1)).relu())


def fix(b):
    b = bytearray(b)
    b[60:64] = struct.pack("<I", zlib.crc32(bytes(b[64:]), zlib.crc32(bytes(b[:60]))))
    return bytes(b)


def _sections(b):
    n = struct.unpack_from("<I", b, 24)[0]
    return {struct.unpack_from("<I", b, 64 + 24 * i)[0]: 64 + 24 * i for i in range(n)}  # kind -> table entry


def slack(b, extra):
    """The data section grown by `extra` zero bytes after the last tensor."""
    t = bytearray(b + b"\0" * extra)
    e = _sections(t)[4]
    struct.pack_into("<Q", t, e + 16, struct.unpack_from("<Q", t, e + 16)[0] + extra)
    t[16:24] = struct.pack("<Q", len(t))
    return fix(t)


def gap(b, extra):
    """`extra` zero bytes inserted before the data section (its offset moved; the tensors' offsets are not)."""
    e = _sections(b)[4]
    d0 = struct.unpack_from("<Q", b, e + 8)[0]
    t = bytearray(b[:d0] + b"\0" * extra + b[d0:])
    struct.pack_into("<Q", t, e + 8, d0 + extra)
    t[16:24] = struct.pack("<Q", len(t))
    return fix(t)


def main():
    cn.manual_seed(0)
    models = {"convbn": (ConvBN(), (1, 1, 6, 6)), "branches": (Branches(), (2, 2, 9, 9)),
              "pools": (Pools(), (1, 1, 7, 8)), "mlp": (MLP(), (3, 5))}
    out = os.path.join(HERE, "corpus")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    rng = np.random.default_rng(0)
    n = 0
    for name, (m, shape) in models.items():
        b = cn.io.dumps(m, shape)
        cn.load(b)
        files = {f"{name}.cnn": b, f"{name}-slack.cnn": slack(b, 64), f"{name}-gap.cnn": gap(b, 128)}
        for k, cut in enumerate(sorted(rng.integers(64, len(b), 2))):
            t = bytearray(b[:cut])
            t[16:24] = struct.pack("<Q", len(t))
            files[f"{name}-cut{k}.cnn"] = fix(t)
        for k in range(2):
            t = bytearray(b)
            i = int(rng.integers(160, min(len(t), 1200)))
            t[i] ^= 1 << int(rng.integers(8))
            files[f"{name}-flip{k}.cnn"] = fix(t)
        for fname, data in files.items():
            with open(os.path.join(out, fname), "wb") as f:
                f.write(data)
            n += 1
    print(f"wrote {n} files to {out}")


if __name__ == "__main__":
    main()
