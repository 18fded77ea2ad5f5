"""A fast, clang-free fuzz pass over the model loader: a few thousand random mutations (truncations, bit
flips, interesting integers over size and count fields, inserted/deleted chunks, splices, random bytes) of
small valid files go to cnnnative.load(bytes). Each must load or raise cnnnative.Error; anything else (another
exception, a crash of the process) fails. Most mutants get their CRC and size field repaired so they reach
the parser instead of stopping at the checksum. The libFuzzer harness (fuzz/) goes deeper under ASan/UBSan."""
import struct
import time
import zlib

import numpy as np

import cnnnative as cn
from cnnnative import nn

N_CASES = 20000
TIME_BUDGET_S = 12.0
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 63, 64, 255, 256, 4095, 4096, 65535, 2**16, 2**24, 2**31 - 1, 2**31, 2**32 - 1,
               2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -(2**31), -(2**63)]


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        x = self.pool(self.bn(self.conv(x)).relu())
        return self.fc(x.flatten(1))


class _Tiny2(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, groups=2, bias=False)
        self.act = nn.LeakyReLU(0.1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.avg = nn.AvgPool2d(2, ceil_mode=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.act(self.c1(x))
        y = (self.c2(y).sigmoid() + y).tanh()
        y = self.gap(self.avg(y)).flatten(1)
        return nn.functional.softmax(self.fc(y))


def _seeds():
    cn.manual_seed(0)
    return [cn.io.dumps(_Tiny(), (1, 1, 6, 6)), cn.io.dumps(_Tiny2(), (2, 2, 9, 9))]


def _fix(b: bytearray) -> bytes:
    if len(b) >= 24:
        struct.pack_into("<Q", b, 16, len(b))
    if len(b) >= 64:
        struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[64:]), zlib.crc32(bytes(b[:60]))))
    return bytes(b)


def _mutate(rng, seeds) -> bytes:
    b = bytearray(seeds[rng.integers(len(seeds))])
    # most of the structure lives before the weights: aim there more often
    limit = len(b) if rng.random() < 0.3 else min(len(b), 64 + 96 + 1200)
    lo = 160 if rng.random() < 0.8 else 0  # past the header and section table, mostly

    def pos(size=1):
        top = min(limit, len(b)) - size + 1
        return int(rng.integers(lo, top)) if top > lo else int(rng.integers(max(1, top)))
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.choice(7, p=[0.1, 0.35, 0.35, 0.05, 0.05, 0.05, 0.05])
        if kind == 0 and len(b) > 1:  # truncate
            del b[int(rng.integers(len(b))):]
        elif kind == 1 and b:  # bit flips
            for _ in range(int(rng.integers(1, 9))):
                i = pos()
                b[i] ^= 1 << int(rng.integers(8))
        elif kind == 2 and len(b) >= 8:  # an interesting integer over a field
            v = INTERESTING[rng.integers(len(INTERESTING))]
            size = 8 if rng.random() < 0.4 else 4
            i = pos(size)
            if rng.random() < 0.7:
                i -= i % 4
            b[i:i + size] = (v % 2 ** (8 * size)).to_bytes(size, "little")
        elif kind == 3:  # insert random bytes
            i = int(rng.integers(len(b) + 1))
            b[i:i] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        elif kind == 4 and len(b) > 2:  # delete a chunk
            i = int(rng.integers(len(b)))
            del b[i:i + int(rng.integers(1, 33))]
        elif kind == 5:  # splice with the other seed
            o = seeds[rng.integers(len(seeds))]
            i, j = int(rng.integers(len(b) + 1)), int(rng.integers(len(o) + 1))
            b = b[:i] + bytearray(o[j:])
        else:  # random bytes, sometimes behind a valid header
            tail = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
            b = bytearray(b[:int(rng.integers(0, 161))] + tail)
    return _fix(b) if rng.random() < 0.85 else bytes(b)


def test_random_mutations_load_or_raise_error():
    seeds = _seeds()
    for s in seeds:  # the seeds themselves are valid
        cn.load(s)
    rng = np.random.default_rng(1234)
    loaded = errors = 0
    messages = set()
    t0 = time.perf_counter()
    for i in range(N_CASES):
        data = _mutate(rng, seeds)
        try:
            cn.load(data)
            loaded += 1
        except cn.Error as e:
            errors += 1
            messages.add(str(e).split(":")[1].strip()[:30])
        except Exception as e:  # noqa: BLE001 - any other exception is a loader bug
            raise AssertionError(f"case {i}: {type(e).__name__}: {e} (input {len(data)} bytes: {data[:200]!r})") from e
        if time.perf_counter() - t0 > TIME_BUDGET_S:
            break
    n = loaded + errors
    assert n >= 1000, f"only {n} cases in {TIME_BUDGET_S} s"
    assert errors > n // 2 and loaded > 0, (loaded, errors)
    assert len(messages) > 10, messages  # the mutations reach many different checks
