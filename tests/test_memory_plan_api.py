"""Session.memory_plan(): the planner's decisions as the pictures (cnnnative.viz.memory_plan) read them."""
import pytest

import cnnnative as cn
from cnnnative import models


def _compile(mode, **kw):
    m = models.get_model("lenet5")
    if mode == "train":
        kw.setdefault("optimizer", cn.optim.SGD(lr=0.1))
    return m.compile((8, 1, 28, 28), mode=mode, **kw)


def _aligned(n):
    return (n + 63) // 64 * 64


@pytest.mark.parametrize("mode,kw", [("infer", {}), ("train", {}), ("train", {"recompute": "none"}),
                                     ("train", {"recompute": "segments"})])
def test_memory_plan_agrees_with_the_report(mode, kw):
    s = _compile(mode, **kw)
    rep = s.memory_report()
    plan = s.memory_plan()
    arena = [b for b in plan if b["kind"] != "workspace"]
    work = [b for b in plan if b["kind"] == "workspace"]
    assert len(arena) == rep["num_planned_buffers"]
    assert max(b["offset"] + _aligned(b["bytes"]) for b in arena) == rep["arena_bytes"]
    assert sum(_aligned(b["bytes"]) for b in arena) == rep["naive_bytes"]
    n_steps = len(s.schedule())
    # buffers live at a common step never share bytes; the lower bound is the most bytes live at one step
    live = [0] * (n_steps + 1)
    for i, a in enumerate(arena):
        assert 0 <= a["first"] <= a["last"] <= n_steps and a["offset"] % 64 == 0
        for t in range(a["first"], a["last"] + 1):
            live[t] += _aligned(a["bytes"])
        for b in arena[i + 1:]:
            if a["first"] <= b["last"] and b["first"] <= a["last"]:
                assert a["offset"] + a["bytes"] <= b["offset"] or b["offset"] + b["bytes"] <= a["offset"], (a, b)
    assert max(live) == rep["lower_bound_bytes"]
    assert max(b["bytes"] for b in work) == rep["scratch_bytes"]
    assert all(b["first"] == b["last"] and b["node"] for b in work)
    kinds = {b["kind"] for b in arena}
    if mode == "infer":
        assert kinds == {"activation"} and s.num_forward_steps == n_steps
    else:
        assert "gradient" in kinds and 0 < s.num_forward_steps < n_steps
        assert all(b["first"] >= s.num_forward_steps for b in arena if b["kind"] in ("gradient", "recomputed"))
        assert ("recomputed" in kinds) == (rep["num_recomputed"] > 0)
        if kw.get("recompute") == "none":
            assert rep["num_recomputed"] == 0
        if kw.get("recompute") == "segments":
            assert rep["num_recomputed"] > 0
