"""Model files (.cnn): round trips, rebatching on load, the byte layout (checked by an independent Python
reader/writer of the documented format), every class of malformed or hostile file, atomic writes."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn

# ---- an independent reader/writer of the documented layout (docs/cpp.md) ----
MAGIC = b"\x89CNN\r\n\x1a\n"
META, GRAPH, TENSORS, DATA = 1, 2, 3, 4


def _u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def _s(t):
    b = t.encode() if isinstance(t, str) else t
    return _u32(len(b)) + b


def _shape(s):
    return _u32(len(s)) + b"".join(struct.pack("<q", d) for d in s)


def _ids(v):
    return _u32(len(v)) + b"".join(struct.pack("<i", x) for x in v)


def _align(v, a):
    return (v + a - 1) // a * a


def fix_crc(b):
    b = bytearray(b)
    b[60:64] = _u32(zlib.crc32(bytes(b[64:]), zlib.crc32(bytes(b[:60]))))
    return bytes(b)


def build(input_shape, extra, values, nodes, inputs, outputs, tensors, version=1):
    """Bytes of a .cnn file, laid out exactly as the C++ writer does. tensors: dicts name, trainable,
    shape, data (float32 array); optional offset / nbytes override what the record says."""
    meta = _shape(input_shape) + _u32(len(extra)) + b"".join(_s(n) + struct.pack("<q", v) for n, v in extra)
    g = _u32(len(values)) + b"".join(bytes([k, dt]) + _s(n) + _shape(sh) for k, dt, n, sh in values)
    g += _u32(len(nodes))
    for nd in nodes:
        g += _s(nd["op"]) + _s(nd["name"]) + _u32(len(nd["ints"]))
        for k in sorted(nd["ints"]):
            g += _s(k) + _u32(len(nd["ints"][k])) + b"".join(struct.pack("<q", x) for x in nd["ints"][k])
        g += _u32(len(nd["floats"])) + b"".join(_s(k) + struct.pack("<d", nd["floats"][k]) for k in sorted(nd["floats"]))
        g += _ids(nd["inputs"]) + _ids(nd["outputs"])
    g += _ids(inputs) + _ids(outputs)
    meta_off = 64 + 4 * 24
    graph_off = _align(meta_off + len(meta), 8)
    recs = []
    for t in tensors:
        recs.append(_s(t["name"]) + bytes([t["trainable"]]) + _shape(t["shape"]))
    tens_len = 4 + sum(len(r) + 16 for r in recs)
    tens_off = _align(graph_off + len(g), 8)
    data_off = _align(tens_off + tens_len, 64)
    end, offs = data_off, []
    for t in tensors:
        end = _align(end, 64)
        offs.append(end)
        end += np.asarray(t["data"]).size * 4  # placed by the data given, described by the shape
    tens = _u32(len(tensors))
    for r, t, o in zip(recs, tensors, offs):
        nbytes = int(np.prod(t["shape"], dtype=object)) * 4
        tens += r + struct.pack("<QQ", t.get("offset", o), t.get("nbytes", nbytes))
    out = bytearray(end)
    out[0:8] = MAGIC
    out[8:40] = struct.pack("<IIQIIQ", version, 64, end, 4, 0, 64)
    for i, (kind, off, size) in enumerate([(META, meta_off, len(meta)), (GRAPH, graph_off, len(g)),
                                           (TENSORS, tens_off, len(tens)), (DATA, data_off, end - data_off)]):
        out[64 + 24 * i:88 + 24 * i] = struct.pack("<IIQQ", kind, 0, off, size)
    out[meta_off:meta_off + len(meta)] = meta
    out[graph_off:graph_off + len(g)] = g
    out[tens_off:tens_off + len(tens)] = tens
    for t, o in zip(tensors, offs):
        d = np.ascontiguousarray(t["data"], dtype="<f4").tobytes()
        out[o:o + len(d)] = d
    return fix_crc(out)


class _R:
    def __init__(self, b, off):
        self.b, self.p = b, off

    def un(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.p)
        self.p += struct.calcsize("<" + fmt)
        return v if len(v) > 1 else v[0]

    def s(self):
        n = self.un("I")
        self.p += n
        return self.b[self.p - n:self.p].decode()

    def shape(self):
        return [self.un("q") for _ in range(self.un("I"))]

    def ids(self):
        return [self.un("i") for _ in range(self.un("I"))]


def parse(b):
    """The file as build() arguments, plus 'sections' {kind: (offset, size)} and per-tensor offsets."""
    assert b[:8] == MAGIC
    version, hsize, fsize, nsec, flags, toff = struct.unpack_from("<IIQIIQ", b, 8)
    assert (hsize, fsize, flags, toff) == (64, len(b), 0, 64)
    secs = {}
    for i in range(nsec):
        kind, _, off, size = struct.unpack_from("<IIQQ", b, toff + 24 * i)
        secs[kind] = (off, size)
    r = _R(b, secs[META][0])
    input_shape = r.shape()
    extra = [(r.s(), r.un("q")) for _ in range(r.un("I"))]
    r = _R(b, secs[GRAPH][0])
    values = []
    for _ in range(r.un("I")):
        k, dt = r.un("BB")
        values.append((k, dt, r.s(), r.shape()))
    nodes = []
    for _ in range(r.un("I")):
        nd = {"op": r.s(), "name": r.s()}
        nd["ints"] = {}
        for _ in range(r.un("I")):
            k = r.s()
            nd["ints"][k] = [r.un("q") for _ in range(r.un("I"))]
        nd["floats"] = {}
        for _ in range(r.un("I")):
            k = r.s()
            nd["floats"][k] = r.un("d")
        nd["inputs"], nd["outputs"] = r.ids(), r.ids()
        nodes.append(nd)
    inputs, outputs = r.ids(), r.ids()
    assert r.p == sum(secs[GRAPH])
    r = _R(b, secs[TENSORS][0])
    tensors, offsets = [], []
    for _ in range(r.un("I")):
        name, tr, shape = r.s(), r.un("B"), r.shape()
        off, nbytes = r.un("QQ")
        data = np.frombuffer(b, "<f4", int(np.prod(shape, dtype=np.int64)), off).reshape(shape)
        tensors.append({"name": name, "trainable": tr, "shape": shape, "data": data})
        offsets.append((off, nbytes))
    return dict(input_shape=input_shape, extra=extra, values=values, nodes=nodes, inputs=inputs, outputs=outputs,
                tensors=tensors, version=version), secs, offsets


# ---- models ----
class ResBN(nn.Module):
    """Conv-BN-ReLU, then a residual block (conv-BN + identity), global pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.bn1(self.conv1(x)).relu()
        y = (self.bn2(self.conv2(y)) + y).relu()
        return self.fc(self.pool(y).flatten(1))


def resbn(seed=0):
    cn.manual_seed(seed)
    m = ResBN()
    rng = np.random.default_rng(seed)
    for bn in (m.bn1, m.bn2):
        with cn.no_grad():
            bn.running_mean[...] = rng.normal(0, 0.5, 8)
            bn.running_var[...] = rng.uniform(0.5, 2, 8)
            bn.weight[...] = rng.uniform(0.5, 1.5, 8)
            bn.bias[...] = rng.normal(0, 0.2, 8)
        bn._extra_state["num_batches_tracked"][...] = 7
    return m


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    m = cn.models.lenet5(seed=0)
    path = cn.save(m, tmp_path_factory.mktemp("m") / "lenet5.cnn", (1, 1, 28, 28))
    with open(path, "rb") as f:
        return m, path, f.read()


# ---- round trips ----
def test_roundtrip_lenet5_identical_outputs(lenet_file):
    m, path, _ = lenet_file
    gm = cn.load(path)
    assert isinstance(gm, cn.GraphModule) and isinstance(gm, nn.Module)
    assert gm.input_shape == (1, 1, 28, 28) and gm.output_shape == (1, 10)
    x = _x((4, 1, 28, 28))
    np.testing.assert_array_equal(gm.compile((4, 1, 28, 28)).run(x), m.compile((4, 1, 28, 28)).run(x))
    sd, sd2 = m.state_dict(), gm.state_dict()
    assert set(sd) == set(sd2)
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd2[k])
    assert gm.num_parameters() == m.num_parameters()


def test_roundtrip_bn_residual_identical_outputs(tmp_path):
    m = resbn()
    path = cn.save(m, tmp_path / "res.cnn", (2, 3, 12, 12))
    gm = cn.load(path)
    x = _x((2, 3, 12, 12))
    np.testing.assert_array_equal(gm.compile().run(x), m.compile((2, 3, 12, 12)).run(x))
    sd, sd2 = m.state_dict(), gm.state_dict()
    assert set(sd) == set(sd2) and int(sd2["bn1.num_batches_tracked"]) == 7
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd2[k])
    ops = [s.split()[0] for s in gm.graph.node_ops()]
    assert "batch_norm" in ops and "add" in ops
    # a loaded model saves back to the very same bytes
    assert cn.io.dumps(gm) == open(path, "rb").read()


def test_batch_size_change_on_load(lenet_file):
    m, path, _ = lenet_file
    gm = cn.load(path)
    for n in (1, 3, 7):
        x = _x((n, 1, 28, 28), seed=n)
        s = gm.compile((n, 1, 28, 28))
        assert s.output_shape == (n, 10)
        np.testing.assert_array_equal(s.run(x), m.compile((n, 1, 28, 28)).run(x))
    assert gm.compile(5).input_shape == (5, 1, 28, 28)  # an int is a batch size
    with pytest.raises(cn.Error, match=r"takes input \[N, 1, 28, 28\] \(any batch size N\), got \[2, 3, 28, 28\]"):
        gm.compile((2, 3, 28, 28))
    # re-saving at another batch size keeps the weights
    gm8 = cn.load(cn.io.dumps(gm, (8, 1, 28, 28)))
    assert gm8.input_shape == (8, 1, 28, 28)


def test_a_reshape_to_the_traced_batch_follows_the_batch(tmp_path):
    """x.reshape(2, 12) traced at batch 2 is what x.reshape(x.size(0), 12) traces to: at batch 3 it is [3, 12]
    (tests/test_rebatch.py has the rest, and the sizes that cannot follow)."""
    class Baked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(x.reshape(2, 12))

    m = Baked()
    gm = cn.load(cn.io.dumps(m, (2, 3, 4)))
    gm.compile((2, 3, 4))
    x = _x((3, 3, 4))
    np.testing.assert_array_equal(gm.compile((3, 3, 4)).run(x), m.fc.compile((3, 12)).run(x.reshape(3, 12)))


def test_state_dict_by_name_and_train_mode_rejected(lenet_file):
    _, path, _ = lenet_file
    gm = cn.load(path)
    sess = gm.compile((2, 1, 28, 28))
    other = cn.models.lenet5(seed=5)
    gm.load_state_dict(other.state_dict())  # into the store every session of gm reads
    x = _x((2, 1, 28, 28))
    np.testing.assert_array_equal(sess.run(x), other.compile((2, 1, 28, 28)).run(x))
    with pytest.raises(ValueError, match="unexpected keys: extra"):
        gm.load_state_dict({**other.state_dict(), "extra": np.zeros(1)})
    with pytest.raises(cn.Error, match="inference only"):
        gm.compile((2, 1, 28, 28), mode="train")
    with pytest.raises(cn.Error, match="compile"):
        nn.Sequential(gm).compile((1, 1, 28, 28))


# ---- layout ----
def test_layout_little_endian_aligned_checksummed(lenet_file):
    m, _, b = lenet_file
    args, secs, offsets = parse(b)
    assert struct.unpack_from("<I", b, 8)[0] == cn.io.FORMAT_VERSION == 1
    assert struct.unpack_from("<I", b, 60)[0] == zlib.crc32(b[64:], zlib.crc32(b[:60]))  # CRC-32 as zlib's
    assert secs[DATA][0] % 64 == 0
    sd = m.state_dict()
    assert [t["name"] for t in args["tensors"]] == [n for n in sd if "num_batches" not in n]
    for t, (off, nbytes) in zip(args["tensors"], offsets):
        assert off % 64 == 0 and secs[DATA][0] <= off and off + nbytes <= sum(secs[DATA])
        assert nbytes == sd[t["name"]].size * 4
        np.testing.assert_array_equal(t["data"], sd[t["name"]])  # little-endian float32 in place
    assert args["input_shape"] == [1, 1, 28, 28]
    assert [nd["op"] for nd in args["nodes"]][:3] == ["conv2d", "relu", "max_pool2d"]
    # the independent writer reproduces the file byte for byte
    assert build(**args) == b


# ---- malformed and hostile files ----
def _mutate(b, fn):
    args, _, _ = parse(b)
    fn(args)
    return build(**args)


def _node(args, op):
    return next(n for n in args["nodes"] if n["op"] == op)


def _patch(b, off, fmt, v, crc=True):
    b = bytearray(b)
    struct.pack_into("<" + fmt, b, off, v)
    return fix_crc(bytes(b)) if crc else bytes(b)


def _sec(b, kind):
    return parse(b)[1][kind]


def _set_tensor(args, name, **kw):
    next(t for t in args["tensors"] if t["name"] == name).update(kw)


def _node_count_at(b):  # offset of the graph section's u32 node count
    args, secs, _ = parse(b)
    return secs[GRAPH][0] + 4 + sum(2 + 4 + len(n.encode()) + 4 + 8 * len(sh) for _, _, n, sh in args["values"])


def _widen_fc1(a):  # consistent file, inconsistent graph: fc1 takes 401 features but gets 400
    for i, v in enumerate(a["values"]):
        if v[2] == "fc1.weight":
            a["values"][i] = (v[0], v[1], v[2], [120, 401])
    _set_tensor(a, "fc1.weight", shape=[120, 401], data=np.zeros((120, 401), np.float32))


HOSTILE = {
    "empty": (lambda b: b"", r"truncated: 0 bytes"),
    "truncated header": (lambda b: b[:40], r"truncated: 40 bytes, shorter than the 64-byte header"),
    "truncated body": (lambda b: b[:len(b) // 2], r"truncated: \d+ bytes, the header says \d+"),
    "trailing data": (lambda b: b + b"\0" * 8, r"trailing data"),
    "bit flip": (lambda b: b[:5000] + bytes([b[5000] ^ 4]) + b[5001:], r"checksum mismatch .* the file is corrupted"),
    "bad magic": (lambda b: b"PK\x03\x04" + b[4:], r"not a cnnnative model file \(bad magic bytes\)"),
    "wrong version": (lambda b: _patch(b, 8, "I", 2), r"format version 2 is not supported \(this build reads version 1\)"),
    "section past the end": (lambda b: _patch(b, 64 + 24 + 8, "Q", len(b) + 64),
                             r"graph section \(offset \d+, size \d+\) lies outside the file"),
    "huge section size": (lambda b: _patch(b, 64 + 24 + 16, "Q", 2**63), r"graph section .*lies outside the file"),
    "section count": (lambda b: _patch(b, 24, "I", 2**31), r"2147483648 sections"),
    "huge value count": (lambda b: _patch(b, _sec(b, GRAPH)[0], "I", 2**32 - 1), r"4294967295 values \(at most 16777216\)"),
    "count larger than the file": (lambda b: _patch(b, _sec(b, GRAPH)[0], "I", 1_000_000),
                                   r"1000000 values cannot fit in the \d+ bytes left"),
    "negative dim": (lambda b: _mutate(b, lambda a: a.update(input_shape=[1, -1, 28, 28])),
                     r"meta section: input shape has dimension -1"),
    "huge dim": (lambda b: _mutate(b, lambda a: _set_tensor(a, "fc3.bias", shape=[2**40], data=np.zeros(1))),
                 r"tensor 'fc3.bias' has dimension 1099511627776"),
    "shape product overflows int64": (
        lambda b: _mutate(b, lambda a: _set_tensor(a, "fc3.bias", shape=[2**31 - 1] * 5, data=np.zeros(1), nbytes=4)),
        r"tensor 'fc3.bias' shape \[2147483647, .*\] has more than 2\^40 elements"),
    "data offset past the end": (lambda b: _mutate(b, lambda a: _set_tensor(a, "fc3.bias", offset=2**62)),
                                 r"tensor 'fc3.bias': data \[4611686018427387904, \+40\) lies outside the data section"),
    "misaligned data": (lambda b: _mutate(b, lambda a: _set_tensor(a, "conv1.bias", offset=_sec(b, DATA)[0] + 4)),
                        r"data offset \d+ is not a multiple of 64"),
    "overlapping data": (lambda b: _mutate(b, lambda a: _set_tensor(a, "conv1.bias", offset=_sec(b, DATA)[0])),
                         r"tensor data ranges overlap"),
    "wrong data size": (lambda b: _mutate(b, lambda a: _set_tensor(a, "conv1.bias", nbytes=2**60)),
                        r"1152921504606846976 data bytes for shape \[6\]"),
    "unknown op": (lambda b: _mutate(b, lambda a: _node(a, "relu").update(op="gelu_fast")), r"unknown op 'gelu_fast'"),
    "attribute list too long": (lambda b: _mutate(b, lambda a: _node(a, "conv2d")["ints"].update(stride=[1] * 1000)),
                                r"1000 integers in attribute 'stride' .*\(at most 64\)"),
    "too many attributes": (
        lambda b: _mutate(b, lambda a: _node(a, "conv2d")["ints"].update({f"k{i}": [1] for i in range(70)})),
        r"integer attributes of node .* \(at most 64\)"),
    "huge attribute value": (lambda b: _mutate(b, lambda a: _node(a, "conv2d")["ints"].update(padding=[2**62])),
                             r"attribute 'padding' value 4611686018427387904 is out of range"),
    "value id out of range": (lambda b: _mutate(b, lambda a: _node(a, "relu").update(inputs=[10**6])),
                              r"node 1 \('relu'\): input value id 1000000 is out of range \(the graph has \d+ values\)"),
    "negative value id": (lambda b: _mutate(b, lambda a: a.update(outputs=[-3])), r"the graph: output value id -3 is out of range"),
    "cyclic reference": (lambda b: _mutate(b, lambda a: _node(a, "relu").update(inputs=_node(a, "relu")["outputs"])),
                         r"reads value id \d+, which is not defined before it \(forward or cyclic reference\)"),
    "forward reference": (lambda b: _mutate(b, lambda a: _node(a, "conv2d").update(
        inputs=[_node(a, "linear")["outputs"][0]] + _node(a, "conv2d")["inputs"][1:])),
        r"not defined before it \(forward or cyclic reference\)"),
    "unknown value kind": (lambda b: _mutate(b, lambda a: a["values"].__setitem__(0, (9,) + a["values"][0][1:])),
                           r"value 0: unknown kind 9"),
    "inconsistent graph": (lambda b: _mutate(b, _widen_fc1), r"op 'linear' \(node 'fc1'\): x \[1, 400\] has IN = 400"),
    "stored shape disagrees": (lambda b: _mutate(b, lambda a: a["values"].__setitem__(
        -1, a["values"][-1][:3] + ([1, 11],))), r"is stored as \[1, 11\] float32, shape inference .* gives .*\[1, 10\]"),
    "missing tensor": (lambda b: _mutate(b, lambda a: a.update(tensors=a["tensors"][1:])),
                       r"the graph's parameter 'conv1.weight' has no tensor"),
    "trainable flag": (lambda b: _mutate(b, lambda a: _set_tensor(a, "conv1.bias", trainable=0)),
                       r"tensor 'conv1.bias' is \[6\] non-trainable, the graph expects \[6\] trainable"),
    "two inputs": (lambda b: _mutate(b, lambda a: (a["values"].append((0, 0, "y", [1])), a["inputs"].append(
        len(a["values"]) - 1))), r"the graph has 2 inputs \(a model takes exactly one\)"),
    "name not UTF-8": (lambda b: _mutate(b, lambda a: _node(a, "relu").update(name=b"relu\xff")),
                       r"node 1 name is not valid UTF-8 text"),
    "long name": (lambda b: _mutate(b, lambda a: _node(a, "relu").update(name="n" * 5000)),
                  r"name is 5000 bytes long \(at most 4096\)"),
    "long attribute name": (lambda b: _mutate(b, lambda a: _node(a, "conv2d")["ints"].update({"k" * 5000: [1]})),
                            r"attribute name is 5000 bytes long \(at most 4096\)"),
    "huge node count": (lambda b: _patch(b, _node_count_at(b), "I", 2**32 - 1), r"graph section: 4294967295 nodes \(at most 16777216\)"),
    "node count larger than the section": (lambda b: _patch(b, _node_count_at(b), "I", 10**6),
                                           r"graph section: 1000000 nodes cannot fit in the \d+ bytes left"),
    "huge tensor count": (lambda b: _patch(b, _sec(b, TENSORS)[0], "I", 2**32 - 1), r"tensors section: 4294967295 tensors \(at most"),
    "huge extra state count": (lambda b: _patch(b, _sec(b, META)[0] + 4 + 4 * 8, "I", 2**31),
                               r"meta section: 2147483648 extra state entries \(at most 16777216\)"),
    "too many node inputs": (lambda b: _mutate(b, lambda a: _node(a, "relu").update(inputs=[0] * 65)),
                             r"65 inputs of node 1 \('relu'\) \(at most 64\)"),
    "too many float attributes": (lambda b: _mutate(b, lambda a: _node(a, "relu")["floats"].update({f"f{i}": 1.0 for i in range(65)})),
                                  r"65 float attributes of node 1 \('relu'\) \(at most 64\)"),
    "rank over 8": (lambda b: _mutate(b, lambda a: a.update(input_shape=[1] * 9)), r"meta section: input shape has rank 9 \(at most 8\)"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_malformed_file_clear_error(lenet_file, tmp_path, case):
    _, _, b = lenet_file
    make, msg = HOSTILE[case]
    bad = make(b)
    with pytest.raises(cn.Error, match=r"^model file '<bytes>': .*" + msg):
        cn.load(bad)
    p = tmp_path / "bad.cnn"
    p.write_bytes(bad)
    with pytest.raises(cn.Error, match=r"^model file '" + str(p) + "': .*" + msg):
        cn.load(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(cn.Error, match=r"model file '.*nope.cnn': cannot open: No such file"):
        cn.load(tmp_path / "nope.cnn")
    with pytest.raises(cn.Error, match=r"not a regular file"):
        cn.load(tmp_path)


# ---- atomic writes ----
def _listing(d):
    return sorted(os.listdir(d))


def test_save_overwrites_atomically(tmp_path):
    p = tmp_path / "m.cnn"
    cn.save(cn.models.lenet5(seed=1), p, (1, 1, 28, 28))
    cn.save(cn.models.lenet5(seed=2), p, (1, 1, 28, 28))
    assert _listing(tmp_path) == ["m.cnn"]
    assert p.read_bytes() == cn.io.dumps(cn.models.lenet5(seed=2), (1, 1, 28, 28))


def test_save_failure_leaves_no_partial_file(tmp_path):
    m = cn.models.lenet5(seed=0)
    with pytest.raises(cn.Error, match=r"save_model\('.*/missing/m.cnn'\): cannot create .*No such file"):
        cn.save(m, tmp_path / "missing" / "m.cnn", (1, 1, 28, 28))
    (tmp_path / "dir.cnn").mkdir()
    with pytest.raises(cn.Error, match=r"cannot rename the temporary file over it"):
        cn.save(m, tmp_path / "dir.cnn", (1, 1, 28, 28))
    assert _listing(tmp_path) == ["dir.cnn"] and _listing(tmp_path / "dir.cnn") == []


def test_write_failure_midway_keeps_the_old_file(tmp_path):
    """The file-size limit makes write(2) fail after ~100 kB of the 250 kB file (a real mid-write error)."""
    p = tmp_path / "m.cnn"
    cn.save(cn.models.lenet5(seed=1), p, (1, 1, 28, 28))
    old = p.read_bytes()
    code = ("import resource, signal, sys, cnnnative as cn\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "m = cn.models.lenet5(seed=0)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))\n"
            "try:\n    cn.save(m, sys.argv[1], (1, 1, 28, 28)); print('saved')\n"
            "except cn.Error as e:\n    print('error:', e)\n")
    r = subprocess.run([sys.executable, "-B", "-c", code, str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "error: save_model(" in r.stdout and "write failed after" in r.stdout, r.stdout
    assert _listing(tmp_path) == ["m.cnn"] and p.read_bytes() == old


def _dead_pid():
    """The pid of a child that has exited and been reaped (kill(pid, 0) fails with ESRCH)."""
    c = subprocess.Popen([sys.executable, "-c", "pass"])
    c.wait()
    return c.pid


def test_save_removes_stale_temporaries_of_dead_writers(tmp_path):
    """What a killed save leaves, `<name>.tmp.<pid>.<n>` of a pid that no longer exists, is removed by the
    next successful save of the same path; temporaries of live writers (this process included), of other
    targets, and names that only look similar stay."""
    p = tmp_path / "m.cnn"
    cn.save(cn.models.lenet5(seed=1), p, (1, 1, 28, 28))
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [f"m.cnn.tmp.{dead}.0", f"m.cnn.tmp.{dead}.17"]
        kept = [f"m.cnn.tmp.{live.pid}.0", f"m.cnn.tmp.{os.getpid()}.999", f"other.cnn.tmp.{dead}.0",
                f"m.cnn.tmp.{dead}", f"m.cnn.tmp.{dead}.x", "m.cnn.tmp.0.0", f"m.cnn.tmp.-{dead}.0", f"m.cnn.tmpx.{dead}.0",
                f"m.cnn.tmp.{dead}.1.2", "m.cnn.tmp.99999999999.0"]
        for n in stale + kept:
            (tmp_path / n).write_bytes(b"partial")
        assert cn.load(p).num_parameters() > 0  # the temporaries do not disturb the file
        cn.save(cn.models.lenet5(seed=2), p, (1, 1, 28, 28))
        assert _listing(tmp_path) == sorted(["m.cnn"] + kept)
        assert p.read_bytes() == cn.io.dumps(cn.models.lenet5(seed=2), (1, 1, 28, 28))
    finally:
        live.kill()
        live.wait()


_KILLED_SAVER = """
import sys, cnnnative as cn
from cnnnative import nn
cn.manual_seed(0)
m = nn.Linear(4096, 4096)  # 64 MiB of weights: the save takes a while
print("ready", flush=True)
cn.save(m, sys.argv[1], (1, 4096))
print("saved", flush=True)
"""


def test_save_killed_midway_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path):
    """A child saving a 64 MiB model is SIGKILLed once its temporary file has data in it: the target keeps
    its old bytes (loadable), the temporary stays behind, and the next good save removes it."""
    import signal
    import time
    p = tmp_path / "m.cnn"
    cn.save(cn.models.lenet5(seed=1), p, (1, 1, 28, 28))
    old = p.read_bytes()
    for attempt in range(5):  # the kill may land after the rename on a very fast disk: try again
        child = subprocess.Popen([sys.executable, "-B", "-c", _KILLED_SAVER, str(p)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        prefix = f"m.cnn.tmp.{child.pid}."
        t0 = time.monotonic()
        tmp = None
        while time.monotonic() - t0 < 60 and child.poll() is None:
            tmp = next((n for n in os.listdir(tmp_path) if n.startswith(prefix)), None)
            if tmp and os.stat(tmp_path / tmp).st_size > 0:
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if tmp and (tmp_path / tmp).exists():
            break
        p.write_bytes(old)  # the child finished first: restore and retry
    else:
        pytest.fail("could not kill the child in the middle of its save")
    assert child.returncode == -signal.SIGKILL
    assert _listing(tmp_path) == sorted(["m.cnn", tmp])
    assert p.read_bytes() == old and cn.load(p).num_parameters() == cn.models.lenet5(seed=1).num_parameters()
    cn.save(cn.models.lenet5(seed=2), p, (1, 1, 28, 28))
    assert _listing(tmp_path) == ["m.cnn"]
    assert p.read_bytes() == cn.io.dumps(cn.models.lenet5(seed=2), (1, 1, 28, 28))


def test_save_takes_input_shapes_as_compile_does(tmp_path):
    """cn.save(model, path, 1) (a batch size) and cn.save(zoo_model, path) (its declared shape), as compile()."""
    m = cn.models.lenet5(seed=0)
    p1 = cn.save(m, tmp_path / "a.cnn", 4)
    p2 = cn.save(m, tmp_path / "b.cnn")
    assert cn.load(p1).input_shape == (4, 1, 28, 28)
    assert cn.load(p2).input_shape == tuple(m.input_shape)
    assert cn.load(cn.io.dumps(cn.load(p1), 2)).input_shape == (2, 1, 28, 28)

    class NoShape(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match="NoShape declares no input shape; give the full input_shape"):
        cn.save(NoShape(), tmp_path / "c.cnn")
    with pytest.raises(TypeError, match="input_shape must be a shape"):
        cn.save(NoShape(), tmp_path / "c.cnn", "1,3")
    assert not (tmp_path / "c.cnn").exists()


def test_paths_with_a_nul_byte_are_refused(tmp_path):
    """A NUL cut the path in the system calls: save wrote 'a.cnn' for 'a.cnn\\0.bak', load read it."""
    from cnnnative import _core
    m = cn.models.lenet5(seed=0)
    bad = str(tmp_path / "a.cnn") + "\0.bak"
    with pytest.raises(ValueError, match="embedded null byte"):
        cn.save(m, bad, 1)
    assert not (tmp_path / "a.cnn").exists()
    cn.save(m, tmp_path / "a.cnn", 1)
    with pytest.raises(ValueError, match="embedded null byte"):
        cn.load(str(tmp_path / "a.cnn") + "\0junk")
    # the C++ loader and writer refuse it too (C++ callers and anything that passes the Python layer)
    with pytest.raises(cn.Error, match="the path contains a NUL byte"):
        _core.Model.load(str(tmp_path / "a.cnn") + "\0junk")
    core = cn.io._core_model(m, (1, 1, 28, 28))
    with pytest.raises(cn.Error, match="the path contains a NUL byte"):
        core.save(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.cnn"]


def test_modern_zoo_models_are_functions_of_cnnnative_models():
    for name in ("mobilenet_v2", "efficientnet_b0", "convnext_tiny", "shufflenet_v2_x1_0", "inception_v3"):
        assert getattr(cn.models, name) is cn.models.MODELS[name]
        assert name in cn.models.__all__
