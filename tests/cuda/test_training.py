"""Whole sessions on the cuda backend against the CPU: the zoo's training steps from the same initial weights (LeNet-5,
CIFAR ResNet-18, U-Net, DenseNet-121 small), inference, the optimizers' updates, zero device allocations per step
after warm-up, CUDA-graph replay against eager runs, two sessions on two threads, and refused steps (NaN input,
label out of range) that leave the weights as they were. float32 with TF32 off, so the CPU is the reference."""
import threading

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn
from cudacheck import BACKEND, device_kw, sync

STEP_RTOL = 2e-4  # losses; weights compared as max|a - b| / max|b| per tensor


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) if b.size else 0.0


def _twins(name, **kw):
    """Two instances of a zoo model with identical weights and buffers."""
    a = cn.models.get_model(name, seed=0, **kw)
    with nn.no_init():
        b = cn.models.get_model(name, **kw)
    b.load_state_dict({k: np.array(v) for k, v in a.state_dict().items()}, strict=True)
    return a, b


def _state(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def _assert_states_close(got, ref, what, tol=STEP_RTOL):
    assert got.keys() == ref.keys()
    worst = max(((_rel(got[k], ref[k]), k) for k in ref), default=(0.0, ""))
    assert worst[0] <= tol, f"{what}: {worst[1]} differs by {worst[0]:.2e} (relative to its max)"
    return worst[0]


def _data(name, shape, loss, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if loss == "cross_entropy":
        y = rng.integers(0, classes, shape[0]).astype(np.int32)
    else:  # dense targets of the output's shape (U-Net: [N, 1, H, W])
        y = (rng.random((shape[0], classes) + shape[2:]) < 0.5).astype(np.float32)
    return x, y


ZOO = [
    # (name, model kwargs, input shape, loss, classes / output channels)
    ("lenet5", {}, (8, 1, 28, 28), "cross_entropy", 10),
    ("resnet18", {"num_classes": 10, "cifar": True}, (4, 3, 32, 32), "cross_entropy", 10),
    ("unet", {"in_channels": 1, "num_classes": 1, "depth": 2, "base": 8}, (2, 1, 32, 32), "bce_with_logits", 1),
    pytest.param("densenet121", {"num_classes": 10, "cifar": True}, (2, 3, 32, 32), "cross_entropy", 10,
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, kw, shape, loss, classes", ZOO)
def test_zoo_training_steps_match_cpu(name, kw, shape, loss, classes):
    a, b = _twins(name, **kw)
    opt = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)
    sa = a.compile(shape, mode="train", optimizer=cn.optim.SGD(**opt), loss=loss, **device_kw())
    sb = b.compile(shape, mode="train", optimizer=cn.optim.SGD(**opt), loss=loss)
    for step in range(3):
        x, y = _data(name, shape, loss, classes, seed=step)
        la, lb = sa.step(x, y), sb.step(x, y)
        assert np.isfinite(la) and abs(la - lb) <= STEP_RTOL * max(1.0, abs(lb)), (step, la, lb)
    sync(sa)
    err = _assert_states_close(_state(a), _state(b), f"{name} weights and BN statistics after 3 steps")
    print(f"\n[cuda] {name}: max relative weight difference after 3 steps {err:.2e}")
    # the trained weights in an inference session on each device
    x, _ = _data(name, shape, loss, classes, seed=9)
    ya = a.compile(shape, **device_kw()).run(x)
    yb = b.compile(shape).run(x)
    assert _rel(ya, yb) <= STEP_RTOL, _rel(ya, yb)


@pytest.mark.parametrize("name, kw, shape", [
    ("lenet5", {}, (1, 1, 28, 28)),
    ("resnet18", {"num_classes": 10, "cifar": True}, (16, 3, 32, 32)),
    pytest.param("resnet50", {"num_classes": 1000}, (2, 3, 224, 224), marks=pytest.mark.slow),
])
def test_inference_matches_cpu(name, kw, shape):
    a, b = _twins(name, **kw)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    s = a.compile(shape, **device_kw())
    ref = b.compile(shape).run(x)
    for r in range(3):  # eager, then graph replays
        assert _rel(s.run(x), ref) <= 1e-4, r
    kinds = {k["impl"] for k in s.kernels()}
    print(f"\n[cuda] {name} kernels: {sorted(kinds)}")
    if BACKEND == "cuda":
        assert "reference" not in kinds, s.kernels()


OPTIMIZERS = {
    "sgd_momentum_dampening": lambda: cn.optim.SGD(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    "sgd_nesterov": lambda: cn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_plain": lambda: cn.optim.SGD(lr=0.1),
    "adam": lambda: cn.optim.Adam(lr=1e-3, weight_decay=1e-3),
    "adamw_amsgrad": lambda: cn.optim.AdamW(lr=1e-3, weight_decay=1e-2, amsgrad=True),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_updates_match_cpu(opt):
    a, b = _twins("lenet5")
    shape = (8, 1, 28, 28)
    sa = a.compile(shape, mode="train", optimizer=OPTIMIZERS[opt](), **device_kw())
    sb = b.compile(shape, mode="train", optimizer=OPTIMIZERS[opt]())
    for step in range(4):
        x, y = _data("lenet5", shape, "cross_entropy", 10, seed=step)
        if step == 2:  # the learning rate is read at each step (schedules)
            sa.lr = sb.lr = sb.lr * 0.5
        la, lb = sa.step(x, y), sb.step(x, y)
        assert abs(la - lb) <= STEP_RTOL * max(1.0, abs(lb)), (opt, step, la, lb)
    sync(sa)
    _assert_states_close(_state(a), _state(b), f"{opt}: weights after 4 steps")
    st_a, st_b = sa.optimizer_state(), sb.optimizer_state()
    assert set(st_a) == set(st_b), (set(st_a), set(st_b))
    for k in st_b:
        assert _rel(st_a[k], st_b[k]) <= 1e-3, (opt, k, _rel(st_a[k], st_b[k]))
    # state written back into the device session continues identically
    sa.load_optimizer_state(st_b)
    a.load_state_dict(_state(b), strict=True)
    x, y = _data("lenet5", shape, "cross_entropy", 10, seed=7)
    la, lb = sa.step(x, y), sb.step(x, y)
    assert abs(la - lb) <= STEP_RTOL * max(1.0, abs(lb)), (opt, la, lb)


@pytest.mark.parametrize("name, kw, shape", [
    ("lenet5", {}, (16, 1, 28, 28)),
    ("resnet18", {"num_classes": 10, "cifar": True}, (8, 3, 32, 32)),
])
def test_no_allocation_per_step_after_warmup(name, kw, shape):
    m = cn.models.get_model(name, seed=0, **kw)
    s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9), **device_kw())
    x, y = _data(name, shape, "cross_entropy", 10)
    s.step(x, y)
    s.step(x, y)
    before = cn.allocation_count()
    for _ in range(5):
        s.step(x, y)
    sync(s)
    assert cn.allocation_count() == before, f"{cn.allocation_count() - before} allocations in 5 training steps"
    inf = m.compile(shape, **device_kw())
    inf.run(x)
    inf.run(x)
    before = cn.allocation_count()
    for _ in range(5):
        inf.run(x)
    assert cn.allocation_count() == before, f"{cn.allocation_count() - before} allocations in 5 inference runs"


def _same_or_close(a, b, sa, sb, what):
    """CUDA-graph replay must reproduce the eager run exactly when both sessions run the same kernels (the same
    cuDNN algorithms); when autotuning picked different algorithms for the two sessions, closeness is all that
    can be asked (the test prints the difference)."""
    if np.array_equal(a, b):
        return
    ka = [k["impl"] for k in sa.kernels()]
    kb = [k["impl"] for k in sb.kernels()]
    assert ka != kb, f"{what}: graph replay differs from eager with the same kernels (max diff " \
                     f"{np.max(np.abs(np.asarray(a) - np.asarray(b))):.3g})"
    print(f"\n[cuda] {what}: sessions chose different algorithms; rel diff {_rel(a, b):.2e}")
    assert _rel(a, b) <= 1e-4, what


def test_cuda_graph_replay_equals_eager():
    a, b = _twins("resnet18", num_classes=10, cifar=True)
    shape = (8, 3, 32, 32)
    opt = dict(lr=0.02, momentum=0.9)
    sg = a.compile(shape, mode="train", optimizer=cn.optim.SGD(**opt), **device_kw(cuda_graphs=True))
    se = b.compile(shape, mode="train", optimizer=cn.optim.SGD(**opt), **device_kw(cuda_graphs=False))
    for step in range(4):
        x, y = _data("resnet18", shape, "cross_entropy", 10, seed=step)
        lg, le = sg.step(x, y), se.step(x, y)
        _same_or_close(np.float32(lg), np.float32(le), sg, se, f"loss at step {step}")
    sync(sg)
    ga, gb = _state(a), _state(b)
    for k in gb:
        _same_or_close(ga[k], gb[k], sg, se, f"{k} after 4 steps")
    x, _ = _data("resnet18", shape, "cross_entropy", 10, seed=11)
    ig, ie = a.compile(shape, **device_kw(cuda_graphs=True)), b.compile(shape, **device_kw(cuda_graphs=False))
    for r in range(3):
        _same_or_close(ig.run(x), ie.run(x), ig, ie, f"inference run {r}")


def test_two_sessions_on_two_threads():
    """Two sessions (own streams) stepped concurrently from two Python threads give what they give one after the
    other."""
    shape = (8, 3, 32, 32)
    kw = {"num_classes": 10, "cifar": True}
    batches = [[_data("resnet18", shape, "cross_entropy", 10, seed=10 * t + i) for i in range(4)] for t in range(2)]

    def train(model, data, out):
        s = model.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.02, momentum=0.9), **device_kw())
        out.extend(s.step(x, y) for x, y in data)
        sync(s)
        y = model.compile(shape, **device_kw()).run(data[0][0])
        out.append(y)

    seq_models = [_twins("resnet18", **kw)[0] for _ in range(2)]
    seq = [[], []]
    for t in range(2):
        train(seq_models[t], batches[t], seq[t])
    par_models = [_twins("resnet18", **kw)[0] for _ in range(2)]
    par = [[], []]
    errors = []

    def worker(t):
        try:
            train(par_models[t], batches[t], par[t])
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not errors, errors
    for t in range(2):
        assert len(par[t]) == len(seq[t])
        for i, (p, s) in enumerate(zip(par[t], seq[t])):
            assert _rel(p, s) <= 1e-5, (t, i, _rel(p, s))  # same kernels, same data: equal up to atomics order
        sp, ss = _state(par_models[t]), _state(seq_models[t])
        _assert_states_close(sp, ss, f"thread {t} weights", tol=1e-5)


@pytest.mark.parametrize("bad", ["nan_input", "inf_input", "label_out_of_range", "negative_label"])
def test_refused_step_leaves_weights_unchanged(bad):
    m = cn.models.resnet18(num_classes=10, cifar=True, seed=0)
    shape = (4, 3, 32, 32)
    s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.02, momentum=0.9), **device_kw())
    x, y = _data("resnet18", shape, "cross_entropy", 10)
    s.step(x, y)
    s.step(x, y)
    sync(s)
    before, opt_before, step_before = _state(m), s.optimizer_state(), s.step_count
    xb, yb = x.copy(), y.copy()
    if bad == "nan_input":
        xb[1, 2, 3, 4] = np.nan
    elif bad == "inf_input":
        xb[0, 0, 0, 0] = np.inf
    elif bad == "label_out_of_range":
        yb[2] = 10
    else:
        yb[0] = -1
    with pytest.raises(cn.Error) as ei:
        s.step(xb, yb)
    print(f"\n[cuda] {bad}: {ei.value}")
    sync(s)
    after = _state(m)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=f"{bad} changed {k}")
    for k, v in s.optimizer_state().items():
        np.testing.assert_array_equal(v, opt_before[k], err_msg=f"{bad} changed the optimizer state {k}")
    assert s.step_count == step_before
    # the session still works, and continues as a CPU session would from the same weights
    ref = cn.models.resnet18(num_classes=10, cifar=True)
    ref.load_state_dict(before, strict=True)
    rs = ref.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.02, momentum=0.9))
    rs.load_optimizer_state(opt_before)
    rs.step_count = step_before
    la, lb = s.step(x, y), rs.step(x, y)
    assert abs(la - lb) <= STEP_RTOL * max(1.0, abs(lb)), (la, lb)


@pytest.mark.slow
def test_cli_trains_on_cuda(tmp_path):
    import subprocess
    import sys
    if BACKEND != "cuda":
        pytest.skip("the CLI's --device takes cpu or cuda")
    r = subprocess.run([sys.executable, "-m", "cnnnative", "train", "resnet18", "--device", "cuda", "--epochs", "1",
                        "--samples", "256", "--batch-size", "32", "--no-progress", "--out", str(tmp_path / "c.npz")],
                       capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(r.stdout[-1500:])
