"""The compile pipeline (cpp/src/core/compile.*): the pass list, what each pass records for a session
(session.passes()), the per-pass dumps (compile(dump_passes=...), CNNNATIVE_DUMP_PASSES), the kernel choice
(session.kernels(), the reference-fallback warning and strict=True). The rewriting passes have their own test
files too: fusion (test_fusion.py), ReLU/pool swap (test_relu_pool_swap.py), recompute (test_recompute.py),
layouts (test_layouts*.py), memory plan (test_planner.py); the verifier is tested in test_backend_seam.py."""
import os
import warnings

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import _core, nn

PASSES = ["check", "fold_pad", "fuse", "int8", "swap_relu_pool", "autodiff", "recompute", "layouts", "interface", "storage",
          "lifetimes", "inplace", "memory_plan", "kernels"]


def _net(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 5))


def _passes(s):
    return {p["name"]: p for p in s.passes()}


def test_the_pipeline_is_a_list_in_order():
    names = _core.compile_passes()
    assert [p for p in PASSES if p in names] == names or names == [p for p in PASSES if p != "fold_pad"], names


def test_every_session_records_every_pass():
    s = _net().compile((2, 3, 8, 8))
    recs = s.passes()
    assert [r["name"] for r in recs] == _core.compile_passes()
    assert all(r["ms"] >= 0 for r in recs)


def test_check_pass_refuses_bad_options_before_anything_else():
    m = _net()
    with pytest.raises(cn.Error, match="unknown backend 'nope'"):
        m.compile((2, 3, 8, 8), backend="nope")
    with pytest.raises(cn.Error, match="unknown layout"):
        m.compile((2, 3, 8, 8), layout="nchw32")


def test_fuse_pass_folds_batch_norm_of_an_nn_model_in_inference():
    s = _net().compile((2, 3, 8, 8))
    p = _passes(s)
    assert p["fuse"]["ran"] and "1 with batch norm folded" in p["fuse"]["summary"], p["fuse"]
    ops = [k["op"] for k in s.kernels()]
    assert "batch_norm" not in ops and ops.count("fused_conv2d") == 2, ops
    # not in training (BN must see the batch) nor with optimize=False
    t = _net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01))
    assert not _passes(t)["fuse"]["ran"] and "batch_norm" in [k["op"] for k in t.kernels()]
    assert not _passes(_net().compile((2, 3, 8, 8), optimize=False))["fuse"]["ran"]


def test_swap_and_autodiff_passes_run_in_training_only():
    t = _passes(_net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01)))
    assert t["swap_relu_pool"]["ran"] and t["swap_relu_pool"]["summary"].startswith("1 pairs")
    assert t["autodiff"]["ran"] and "backward nodes" in t["autodiff"]["summary"]
    assert t["autodiff"]["nodes"] > t["swap_relu_pool"]["nodes"]
    # the default ('auto') recomputes where it makes the plan smaller: this tiny net's plan is the same without
    assert not t["recompute"]["ran"]
    c = _passes(_net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute="cheap"))
    assert c["recompute"]["ran"]
    n = _passes(_net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute="none"))
    assert not n["recompute"]["ran"]
    r = _passes(_net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01), recompute="segments"))
    assert r["recompute"]["ran"] and r["recompute"]["summary"].startswith("segments: ")
    i = _passes(_net().compile((2, 3, 8, 8)))
    assert not i["swap_relu_pool"]["ran"] and not i["autodiff"]["ran"]


def test_layout_pass_and_plain_policy():
    a = _passes(_net().compile((2, 3, 8, 8)))
    assert a["layouts"]["ran"] and "reorders inserted" in a["layouts"]["summary"]
    assert not _passes(_net().compile((2, 3, 8, 8), layout="plain"))["layouts"]["ran"]
    assert not _passes(_net().compile((2, 3, 8, 8), backend="reference"))["layouts"]["ran"]


def test_interface_storage_inplace_and_plan_passes():
    s = _net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01))
    p = _passes(s)
    assert p["interface"]["summary"] == "2 feeds, 2 fetches"  # x, labels -> logits, loss
    n_params = len(list(_net().parameters()))
    assert p["storage"]["summary"] == f"{n_params} gradients in the gradient block"
    assert int(p["inplace"]["summary"].split()[0]) == s.memory_report()["num_inplace"] > 0
    mib = s.memory_report()["arena_bytes"] / 2**20
    assert p["memory_plan"]["summary"].split(" values in ")[1].startswith(f"{mib:.2f} MiB")


def test_dump_passes_writes_the_graph_after_each_pass(tmp_path, monkeypatch):
    d = tmp_path / "dump"
    s = _net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01), dump_passes=d)
    files = sorted(os.listdir(d))
    ran = [p["name"] for p in s.passes() if p["ran"]]
    assert files[0] == "00-input.txt" and files[-1] == "plan.txt"
    assert [f[3:-4] for f in files[1:-1]] == ran
    before = (d / "00-input.txt").read_text()
    after = (d / files[-2]).read_text()
    assert "max_pool2d" in before and "# after pass 'kernels'" in after
    assert "relu_grad" not in before and "relu_grad" in (d / "plan.txt").read_text()
    assert "nChw16c" in (d / "plan.txt").read_text()  # the plan listing shows layouts
    # the environment variable does the same for sessions compiled anywhere (e.g. inside a library)
    d2 = tmp_path / "env"
    d2.mkdir()
    monkeypatch.setenv("CNNNATIVE_DUMP_PASSES", str(d2))
    _net().compile((2, 3, 8, 8))
    assert "03-fuse.txt" in os.listdir(d2) or "02-fuse.txt" in os.listdir(d2), os.listdir(d2)


def test_dump_into_an_unwritable_place_is_one_clear_error(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises((cn.Error, OSError)):
        _net().compile((2, 3, 8, 8), dump_passes=f)


def test_graph_text_and_verify_on_a_built_graph():
    g = _core.Graph()
    x = g.add_input("x", [2, 3])
    y = g.add_node("relu", [x], {}, "r")
    g.set_outputs(y)
    assert _core.verify_graph(g) == ""
    txt = _core.graph_text(g)
    assert "relu 'r'" in txt and "input %0 x [2, 3]" in txt


def test_kernels_lists_every_step_with_impl_and_layouts():
    s = _net().compile((2, 3, 8, 8))
    ks = s.kernels()
    assert [f"{k['op']} {k['name']}" for k in ks] == s.schedule()
    assert all(k["impl"] and k["impl"] != "reference" for k in ks), ks
    conv = next(k for k in ks if k["op"] == "fused_conv2d")
    assert conv["out_layouts"] == ["nChw16c"] and conv["in_dtype"] == "float32"
    ref = _net().compile((2, 3, 8, 8), backend="reference")
    assert {k["impl"] for k in ref.kernels()} == {"reference"}
    assert all(set(k["in_layouts"]) <= {"plain"} for k in ref.kernels())


def _graph_with(op, attrs, shape=(2, 4, 6, 6)):
    g = _core.Graph()
    x = g.add_input("x", list(shape))
    y = g.add_node(op, [x], attrs, "the_node")
    g.set_outputs(y)
    return g


def test_a_reference_fallback_warns_once_and_strict_refuses(monkeypatch):
    # a kernel-less op on the cpu backend: pretend by asking for an op only the reference backend has
    train = _net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01))
    ops_without_cpu_kernel = [k["op"] for k in train.kernels() if k["impl"] == "reference"]
    assert ops_without_cpu_kernel == [], ops_without_cpu_kernel  # every op of an ordinary model has a fast kernel
    from cnnnative.session import warn_reference_fallbacks

    class Fake:
        backend = "cpu"

        def reference_fallbacks(self):
            return ["lrn_grad x/grad"]

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        warn_reference_fallbacks(Fake())
    assert len(w) == 1 and "lrn_grad x/grad" in str(w[0].message) and "strict=True" in str(w[0].message)


def test_strict_compiles_when_every_node_has_a_fast_kernel():
    s = _net().compile((2, 3, 8, 8), mode="train", optimizer=cn.optim.SGD(lr=0.01), strict=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.isfinite(s.step(x, np.array([0, 1], np.int32)))
