"""Hostile and huge model files: the loader checks the header, the section table and the sizes before it
reads the body. Sparse files (os.truncate) stand in for huge ones: a 64 GiB file with a bad magic or a bogus
header, a valid header claiming huge sections, the issue's 6 GB case, weights larger than the memory, an
allocation that fails. Each load of a huge file runs in a child process that measures its time and peak RSS
growth (ru_maxrss) and caps its address space (RLIMIT_AS = current + 1 GiB), so a loader that reads the whole
file fails fast with MemoryError instead of using the machine's memory. Also: truncation at every section
boundary (the error says where the file ends), files whose size does not match their tensors, and the writer
refusing what the reader would refuse."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn
from test_model_file import DATA, GRAPH, META, TENSORS, build, fix_crc, parse

GiB = 1 << 30
NAMES = {META: "meta", GRAPH: "graph", TENSORS: "tensors", DATA: "data"}

_CHILD = r"""
import json, os, resource, sys, time
import cnnnative as cn
paths, as_extra = json.loads(sys.argv[1]), int(sys.argv[2])
try:
    cn.load(b"warm-up")
except cn.Error:
    pass
if as_extra:
    vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + as_extra, vm + as_extra))
out = []
for p in paths:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        cn.load(p)
        kind, msg = "loaded", ""
    except BaseException as e:
        kind, msg = ("Error" if isinstance(e, cn.Error) else type(e).__name__), str(e)
    dt = time.perf_counter() - t0
    out.append({"path": p, "kind": kind, "msg": msg, "s": dt,
                "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0})
print(json.dumps(out))
"""


def _load_in_child(paths, as_extra=GiB):
    r = subprocess.run([sys.executable, "-B", "-c", _CHILD, json.dumps([str(p) for p in paths]), str(as_extra)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _sparse(path, head: bytes, size: int):
    """`head` followed by zeros up to `size` bytes, as a sparse file; skips when the filesystem refuses."""
    with open(path, "wb") as f:
        f.write(head)
    try:
        os.truncate(path, size)
    except OSError as e:
        os.unlink(path)
        pytest.skip(f"the filesystem refuses a sparse {size}-byte file: {e}")
    if os.stat(path).st_blocks * 512 > (64 << 20):
        os.unlink(path)
        pytest.skip("the filesystem does not keep files sparse")
    return path


@pytest.fixture
def sparse(tmp_path):
    made = []

    def make(name, head, size):
        made.append(_sparse(tmp_path / name, head, size))
        return made[-1]
    yield make
    for p in made:  # do not leave 64 GiB (apparent) files in the temporary folders pytest keeps
        if os.path.exists(p):
            os.unlink(p)


def _check_fast(results, pattern_by_path, max_s=1.0, max_rss_mb=16):
    for r in results:
        assert r["kind"] == "Error", r
        import re
        assert re.search(pattern_by_path[r["path"]], r["msg"]), (r["msg"], pattern_by_path[r["path"]])
        assert r["msg"].startswith(f"model file '{r['path']}': "), r["msg"]
        assert r["s"] < max_s, r
        assert r["rss_kb"] < max_rss_mb * 1024, r


@pytest.fixture(scope="module")
def lenet():
    return cn.io.dumps(cn.models.lenet5(seed=0), (1, 1, 28, 28))


def _header(b, **fields):
    """`b` with header fields replaced: size (u64 at 16), nsec (u32 at 24), flags (u32 at 28), toff (u64 at 32),
    version (u32 at 8), hsize (u32 at 12)."""
    b = bytearray(b)
    at = {"version": (8, "I"), "hsize": (12, "I"), "size": (16, "Q"), "nsec": (24, "I"), "flags": (28, "I"),
          "toff": (32, "Q")}
    for k, v in fields.items():
        struct.pack_into("<" + at[k][1], b, at[k][0], v)
    return bytes(b)


def _section(b, kind, off=None, size=None):
    """`b` with the table entry of section `kind` given a new offset and/or size."""
    b = bytearray(b)
    for i in range(struct.unpack_from("<I", b, 24)[0]):
        e = 64 + 24 * i
        if struct.unpack_from("<I", b, e)[0] == kind:
            if off is not None:
                struct.pack_into("<Q", b, e + 8, off)
            if size is not None:
                struct.pack_into("<Q", b, e + 16, size)
    return bytes(b)


# ---- huge sparse files ----
def test_sparse_64gb_bad_magic_refused_in_milliseconds(sparse):
    size = 64 * GiB
    zip_like = sparse("zip.cnn", b"PK\x03\x04" + b"\0" * 60, size)
    zeros = sparse("zeros.cnn", b"", size)
    res = _load_in_child([zip_like, zeros])
    _check_fast(res, {str(zip_like): r"not a cnnnative model file \(bad magic bytes\)$",
                      str(zeros): r"not a cnnnative model file \(bad magic bytes\)$"})


def test_sparse_64gb_bogus_header_refused_in_milliseconds(sparse, lenet):
    size = 64 * GiB
    head = lenet[:2752]  # header, table and structure sections of a real file
    cases = {
        "version": (_header(head, version=7), r"format version 7 is not supported"),
        "header size": (_header(head, hsize=4096), r"header size 4096, expected 64"),
        "size field": (_header(head, size=2**63), r"truncated: 68719476736 bytes, the header says 9223372036854775808"),
        "small size field": (head, r"68719476736 bytes, but the header says 249768 \(trailing data\)"),
        "flags": (_header(head, size=size, flags=5), r"unknown header flags 0x00000005"),
        "sections": (_header(head, size=size, nsec=2**31), r"2147483648 sections \(1 to 16 expected\)"),
        "table offset": (_header(head, size=size, toff=size), r"the section table \(offset 68719476736, 4 entries\) lies outside"),
    }
    paths = {k: sparse(k.replace(" ", "_") + ".cnn", h, size) for k, (h, _) in cases.items()}
    _check_fast(_load_in_child(list(paths.values())), {str(paths[k]): m for k, (_, m) in cases.items()})


def test_valid_header_claiming_huge_sections(sparse, lenet):
    """A real file's header and table, the file and one section stretched to 64 GiB: the section limits and
    the layout checks refuse it from the table alone, without reading the section."""
    size = 64 * GiB
    head = _header(lenet[:2752], size=size)
    _, secs, _ = parse(lenet)
    big = size - 4 * GiB
    cases = {
        "graph": (_section(head, GRAPH, size=big),
                  r"graph section is 64424509440 bytes \(60\.0 GiB\) long, more than the format's limit of 67108864 bytes \(64\.0 MiB\)"),
        "meta": (_section(head, META, size=big), r"meta section is 64424509440 bytes .* limit of 4194304 bytes \(4\.0 MiB\)"),
        "tensors": (_section(head, TENSORS, off=secs[TENSORS][0], size=big), r"tensors section is .* limit of 16777216 bytes"),
        # the data section fills the file: everything about the structure is right, but the 10 tensors need
        # 247016 bytes, not 64 GiB (this one reads the 2752 structure bytes, not the data)
        "data": (_section(head, DATA, size=size - secs[DATA][0]),
                 rf"the data section is {size - secs[DATA][0]} bytes \(64\.0 GiB\) long, but the 10 tensors take 247016 bytes "
                 r"\(the file size does not match its tensors\)"),
        # the data section moved to the end of a 64 GiB hole
        "hole": (_section(head, DATA, off=size - 247040, size=247040),
                 rf"{size - 247040 - sum(secs[TENSORS])} unaccounted bytes between the tensors section and the data section "
                 r"\(at most 63 bytes of alignment padding\)"),
    }
    paths = {k: sparse(k + ".cnn", h, size) for k, (h, _) in cases.items()}
    _check_fast(_load_in_child(list(paths.values())), {str(paths[k]): m for k, (_, m) in cases.items()})


def test_6gb_file_from_the_issue(sparse, lenet):
    """The issue's case, a 6 GB file: with a bad magic, a real model followed by 6 GB of zeros, and the same
    with the header's size field saying 6 GB (so only the tensor table shows the data section is wrong)."""
    size = 6 * 10**9
    _, secs, _ = parse(lenet)
    padded = _section(_header(lenet, size=size), DATA, size=size - secs[DATA][0])
    cases = {
        "magic": (b"\0" * 8 + lenet[8:], r"bad magic bytes"),
        "appended": (lenet, r"6000000000 bytes, but the header says 249768 \(trailing data\)"),
        "padded": (padded, r"the data section is 5999997248 bytes \(5\.6 GiB\) long, but the 10 tensors take 247016 bytes"),
    }
    paths = {k: sparse(k + ".cnn", h, size) for k, (h, _) in cases.items()}
    _check_fast(_load_in_child(list(paths.values())), {str(paths[k]): m for k, (_, m) in cases.items()})


def _big_linear(rows, cols):
    """The first bytes of a consistent file for x [1, cols] @ weight [rows, cols]^T, and its full size: the
    header, table and data section size say rows * cols * 4 weight bytes (zeros; the CRC is not computed,
    the loader must refuse the file before it reads the weights)."""
    args = dict(input_shape=[1, cols], extra=[], values=[(0, 0, "x", [1, cols]), (1, 0, "weight", [rows, cols]),
                                                         (3, 0, "linear", [1, rows])],
                nodes=[{"op": "linear", "name": "linear", "ints": {}, "floats": {}, "inputs": [0, 1], "outputs": [2]}],
                inputs=[0], outputs=[2],
                tensors=[{"name": "weight", "trainable": 1, "shape": [rows, cols], "data": np.zeros(1, np.float32)}])
    b = build(**args)  # places 4 data bytes, declares rows * cols * 4
    d0 = len(b) - 4
    nbytes = rows * cols * 4
    return _section(_header(b[:d0], size=d0 + nbytes), DATA, size=nbytes), d0 + nbytes


def test_allocation_failure_is_an_error_naming_the_file(sparse):
    """A consistent file with 2 GiB of weights, loaded with 1 GiB of address space to spare: the failed
    allocation is a cnn.Error naming the file, not a MemoryError (std::bad_alloc)."""
    head, size = _big_linear(8192, 65536)
    p = sparse("big.cnn", head, size)
    res = _load_in_child([p], as_extra=GiB)
    _check_fast(res, {str(p): r"cannot allocate the weights \(2147483648 bytes \(2\.0 GiB\)\): out of memory"})


def test_weights_larger_than_the_memory_refused_before_allocating(sparse):
    phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    rows = 1
    while rows * 65536 * 4 <= phys:  # the next power of two above the memory
        rows *= 2
    if rows > 2**31 - 1 or rows * 65536 > 2**40:
        pytest.skip("this machine has more memory than one tensor of a file may hold")
    head, size = _big_linear(rows, 65536)
    p = sparse("huge.cnn", head, size)
    res = _load_in_child([p], as_extra=GiB)
    _check_fast(res, {str(p): r"the weights take \d+ bytes \(\d+\.\d GiB\), more than this machine's memory"})


# ---- truncation ----
def _boundaries(b):
    _, secs, offsets = parse(b)
    cuts = {8, 40, 64, 64 + 24, 64 + 4 * 24, len(b) - 1}
    for off, size in secs.values():
        cuts |= {off, off + 1, off + size - 1}
    for off, nbytes in offsets:
        cuts |= {off, off + nbytes}
    spans = sorted(secs.values())
    for (off, size), (nxt, _) in zip(spans, spans[1:]):  # inside the alignment padding between two sections
        if off + size < nxt:
            cuts.add(off + size)
    return sorted(c for c in cuts if 0 < c < len(b)), secs


def _where(cut, secs):
    if cut < 64 + 4 * 24:
        return r"the file ends inside the section table"
    for kind, (off, size) in secs.items():
        if off <= cut < off + size:
            return rf"the file ends inside the {NAMES[kind]} section, which spans bytes \[{off}, {off + size}\)"
    kind, (off, _) = min(((k, v) for k, v in secs.items() if v[0] > cut), key=lambda kv: kv[1][0])
    return rf"the file ends before the {NAMES[kind]} section, which starts at byte {off}"


class _BN(nn.Module):  # a meta section of 110 bytes: padding before the graph section
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn2(self.bn1(self.conv(x)).relu())


@pytest.mark.parametrize("model", ["lenet", "bn"])
def test_truncated_at_every_section_boundary(tmp_path, lenet, model):
    """Cut at every section and tensor boundary (and inside the padding between sections): the error says
    the file is truncated and where it ends; with the size field and CRC repaired, the section the cut
    reaches is named as lying outside the file. From bytes and from a path alike."""
    b = lenet if model == "lenet" else cn.io.dumps(_BN(), (1, 1, 6, 6))
    cuts, secs = _boundaries(b)
    assert len(cuts) > 15
    seen = set()
    p = tmp_path / "cut.cnn"
    for cut in cuts:
        t = b[:cut]
        if cut < 64:
            want = rf"truncated: {cut} bytes, shorter than the 64-byte header$"
        else:
            where = _where(cut, secs)
            seen.add(where.split(",")[0])
            want = rf"truncated: {cut} bytes, the header says {len(b)} \({where}\)$"
        repaired = fix_crc(_header(t, size=cut)) if cut >= 64 else None
        for origin, load in (("<bytes>", lambda d: cn.load(d)), (str(p), lambda d: (p.write_bytes(d), cn.load(p)))):
            with pytest.raises(cn.Error) as e:
                load(t)
            assert str(e.value).startswith(f"model file '{origin}': ")
            assert __import__("re").search(want, str(e.value)), (cut, str(e.value), want)
            if repaired is not None and cut >= 64 + 4 * 24:
                with pytest.raises(cn.Error, match=r"section \(offset \d+, size \d+\) lies outside the file \(" + str(cut)):
                    load(repaired)
    # every section was cut inside, and the padding case happened for the BN model
    assert {f"the file ends inside the {n} section" for n in NAMES.values()} <= seen
    if model == "bn":
        assert any("ends before" in s for s in seen), seen


# ---- sizes that do not match the tensors, from bytes and from a path ----
def _relayout(b, extra_data=0, gap_before_data=0):
    """`b` with `extra_data` zero bytes after the last tensor (inside the data section), or the data section
    moved `gap_before_data` bytes further (tensor offsets follow it); size fields and CRC repaired."""
    args, secs, offsets = parse(b)
    d0, dsize = secs[DATA]
    head, data = bytearray(b[:d0]), b[d0:]
    if gap_before_data:
        head += b"\0" * gap_before_data
        head = bytearray(_section(bytes(head), DATA, off=d0 + gap_before_data))
        tens_off, tens_size = secs[TENSORS]
        r = tens_off + 4
        for _ in range(struct.unpack_from("<I", head, tens_off)[0]):
            n = struct.unpack_from("<I", head, r)[0]
            r += 4 + n + 1
            rank = struct.unpack_from("<I", head, r)[0]
            r += 4 + 8 * rank
            off = struct.unpack_from("<Q", head, r)[0]
            struct.pack_into("<Q", head, r, off + gap_before_data)
            r += 16
    out = bytes(head) + data + b"\0" * extra_data
    out = _section(out, DATA, size=dsize + extra_data)
    return fix_crc(_header(out, size=len(out)))


@pytest.mark.parametrize("case", ["slack after the tensors", "gap between tensors", "gap before the data section"])
def test_data_section_must_match_the_tensors(tmp_path, lenet, case):
    """Files the loader used to accept: a data section larger than its tensors need, or a section placed
    after a gap. The size of the file is now fully determined by the structure sections and the tensors."""
    if case == "slack after the tensors":
        bad, msg = _relayout(lenet, extra_data=4096), r"the data section is 251112 bytes long, but the 10 tensors take 247016 bytes"
    elif case == "gap between tensors":  # fc3.bias (the last tensor) moved 64 bytes further, the data section grown by 64
        args, secs, offsets = parse(lenet)
        assert args["tensors"][-1]["name"] == "fc3.bias"
        off = offsets[-1][0]
        b = bytearray(_relayout(lenet, extra_data=64))
        b[off + 64:off + 104], b[off:off + 40] = b[off:off + 40], b"\0" * 40
        i = bytes(b).index(struct.pack("<QQ", off, 40), secs[TENSORS][0])
        struct.pack_into("<Q", b, i, off + 64)
        bad, msg = fix_crc(bytes(b)), r"the data section is 247080 bytes long, but the 10 tensors take 247016 bytes"
    else:
        bad, msg = _relayout(lenet, gap_before_data=128), r"128 unaccounted bytes between the tensors section and the data section"
    with pytest.raises(cn.Error, match=r"^model file '<bytes>': " + msg):
        cn.load(bad)
    p = tmp_path / "bad.cnn"
    p.write_bytes(bad)
    with pytest.raises(cn.Error, match=rf"^model file '{p}': " + msg):
        cn.load(p)


def test_sections_out_of_order_refused(lenet):
    _, secs, _ = parse(lenet)
    # swap the table entries' offsets of meta and graph (sizes too): each still lies inside the file
    b = _section(lenet, META, off=secs[GRAPH][0], size=secs[GRAPH][1])
    b = _section(b, GRAPH, off=secs[META][0], size=secs[META][1])
    with pytest.raises(cn.Error, match=r"graph section \(offset 160\) overlaps or comes before the meta section \(which ends at byte "
                                       r"2248\); the sections follow the table in the order meta, graph, tensors, data"):
        cn.load(fix_crc(b))


# ---- the writer refuses what the reader would refuse ----
def test_writer_refuses_a_meta_section_over_the_limit(tmp_path):
    m = cn.load(cn.io.dumps(cn.models.lenet5(seed=0), (1, 1, 28, 28)))
    core = cn._core.Model(m.graph, m._ensure_store(), [1, 1, 28, 28],
                          [(f"s{i:04d}" + "x" * 4000, i) for i in range(1100)])  # ~4.4 MB of extra state names
    with pytest.raises(cn.Error, match=r"the meta section would be \d+ bytes long, more than the format's limit of 4194304"):
        core.to_bytes()
    with pytest.raises(cn.Error, match=r"save_model\('.*m.cnn'\): the meta section would be"):
        core.save(str(tmp_path / "m.cnn"))
    assert os.listdir(tmp_path) == []


def test_huge_batch_on_rebatch_is_an_error(lenet):
    gm = cn.load(lenet)
    with pytest.raises(cn.Error, match=r"batch size 4611686018427387904: input 'x': shape \[4611686018427387904, 1, 28, 28\] "
                                       r"has more than 2\^40 elements"):
        cn._core.rebatch(gm.graph, 2**62)
