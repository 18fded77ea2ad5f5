"""Memory planner (cnnnative._core.plan_memory / validate_plan): golden plans and random properties."""
import numpy as np
import pytest

from cnnnative import _core


def plan(reqs, alignment=64, enabled=True):
    sizes, firsts, lasts = (list(c) for c in zip(*reqs)) if reqs else ([], [], [])
    return _core.plan_memory(sizes, firsts, lasts, alignment, enabled)


def validate(reqs, p, alignment=64):
    sizes, firsts, lasts = (list(c) for c in zip(*reqs)) if reqs else ([], [], [])
    return _core.validate_plan(sizes, firsts, lasts, p["offsets"], p["arena_bytes"], alignment)


# The golden plans (hand-checked offsets) are in cpp/tests/test_planner.cpp, run by test_cpp_units.py; this file
# checks the Python binding and random properties.


def test_disabled_is_naive_layout():
    reqs = [(10, 0, 2), (20, 1, 3), (30, 2, 4)]
    p = plan(reqs, 16, enabled=False)
    assert p == {"offsets": [0, 16, 48], "arena_bytes": 80, "lower_bound": 80, "naive_sum": 80}
    assert validate(reqs, p, 16) == ""


def test_validator_catches_bad_plans():
    reqs = [(10, 0, 2), (20, 1, 3), (30, 2, 4)]
    good = {"offsets": [0, 16, 48], "arena_bytes": 80}
    assert validate(reqs, good, 16) == ""
    overlap = validate(reqs, {"offsets": [0, 16, 32], "arena_bytes": 80}, 16)
    assert overlap.startswith("buffers 1") and "2" in overlap
    assert validate(reqs, {"offsets": [0, 16, 40], "arena_bytes": 80}, 16).startswith("buffer 2")
    assert "exceeds arena" in validate(reqs, {"offsets": [0, 16, 64], "arena_bytes": 80}, 16)
    # Disjoint lifetimes may share bytes.
    assert validate([(64, 0, 0), (64, 1, 1)], {"offsets": [0, 0], "arena_bytes": 64}) == ""


def test_bad_arguments():
    with pytest.raises(ValueError):
        _core.plan_memory([1, 2], [0], [0, 1])
    with pytest.raises(ValueError):
        _core.validate_plan([1], [0, 1], [0], [0], 64)
    with pytest.raises(ValueError):
        plan([(1, 2, 1)])
    with pytest.raises(ValueError):
        plan([(1, -1, 1)])
    with pytest.raises(ValueError):
        plan([(1, 0, 1)], alignment=0)
    with pytest.raises(ValueError):
        plan([(1, 0, 1)], alignment=48)


def test_random_properties():
    rng = np.random.default_rng(20240601)
    for _ in range(300):
        alignment = int(2 ** rng.integers(0, 8))
        n = int(rng.integers(0, 40))
        steps = int(rng.integers(1, 30))
        ends = np.sort(rng.integers(0, steps, size=(n, 2)), axis=1)
        sizes = rng.integers(0, 5000, size=n).tolist()
        firsts, lasts = ends[:, 0].tolist(), ends[:, 1].tolist()
        reqs = list(zip(sizes, firsts, lasts))

        p = plan(reqs, alignment)
        assert validate(reqs, p, alignment) == ""
        assert p["lower_bound"] <= p["arena_bytes"] <= p["naive_sum"]
        assert all(o % alignment == 0 for o in p["offsets"])
        assert plan(reqs, alignment) == p

        naive = plan(reqs, alignment, enabled=False)
        assert validate(reqs, naive, alignment) == ""
        assert naive["arena_bytes"] == p["naive_sum"]
        assert naive["lower_bound"] == p["lower_bound"]
