"""cn.use_deterministic_algorithms(True): whole training runs of zoo models give bitwise the same losses, weights
and BatchNorm statistics at 1, 2 and 3 threads (3 oversubscribes the 2-core machine, which is fine: only the
summation order could change). Covers everything a step runs: convolutions (direct and Winograd), transposed
convolutions, linear layers, batch norm, pooling, dropout, concat, upsample, the losses and the optimizers.
Per-op checks: tests/test_determinism_ops.py and tests/test_large_reductions.py."""
import numpy as np
import pytest

import cnnnative as cn

THREADS = (1, 2, 3)


@pytest.fixture(autouse=True)
def restore():
    n, d = cn.get_num_threads(), cn.are_deterministic_algorithms_enabled()
    yield
    cn.set_num_threads(n)
    cn.use_deterministic_algorithms(d)


def _train(build, shape, target, loss, opt, threads, steps=3, seed=0):
    cn.set_num_threads(threads)
    model = build()
    sess = model.compile(shape, mode="train", optimizer=opt(), loss=loss, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    losses = [sess.step(x, target) for _ in range(steps)]
    return np.array(losses), {k: np.array(v) for k, v in model.state_dict().items()}


CASES = {
    # Winograd 3x3 layers (64-512 channels), stride-2 and 1x1 convolutions, BN, global pooling, SGD+Nesterov
    "resnet18": (lambda: cn.models.resnet18(num_classes=10, cifar=True, seed=0), (8, 3, 32, 32), "cross_entropy",
                 lambda: cn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)),
    # transposed convolutions, concat, BN at U-Net's first-layer shape, max pooling, BCE, AdamW
    "unet": (lambda: cn.models.unet(in_channels=1, num_classes=1, depth=3, base=16, seed=0), (2, 1, 32, 32),
             "bce_with_logits", lambda: cn.optim.AdamW(lr=1e-3)),
    # dropout, LRN-free AlexNet: large linear layers, max pooling, Adam with amsgrad
    "alexnet": (lambda: cn.models.alexnet(num_classes=10, cifar=True, seed=0), (4, 3, 32, 32), "cross_entropy",
                lambda: cn.optim.Adam(lr=1e-3, amsgrad=True)),
    # GoogLeNet: inception concats, 1x1/3x3/5x5 branches, BN
    "googlenet": (lambda: cn.models.googlenet(num_classes=10, cifar=True, seed=0), (2, 3, 32, 32), "cross_entropy",
                  lambda: cn.optim.SGD(lr=0.01, momentum=0.9)),
}


def _target(name, shape):
    rng = np.random.default_rng(1)
    if name == "unet":
        return (rng.random((shape[0], 1) + shape[2:]) > 0.5).astype(np.float32)
    return rng.integers(0, 10, shape[0]).astype(np.int32)


@pytest.mark.parametrize("name", ["resnet18", "unet", pytest.param("alexnet", marks=pytest.mark.slow),
                                  pytest.param("googlenet", marks=pytest.mark.slow)])
def test_training_is_bitwise_independent_of_the_thread_count(name):
    build, shape, loss, opt = CASES[name]
    target = _target(name, shape)
    cn.use_deterministic_algorithms(True)
    runs = [_train(build, shape, target, loss, opt, t) for t in THREADS]
    for t, (losses, sd) in zip(THREADS[1:], runs[1:]):
        np.testing.assert_array_equal(losses, runs[0][0], err_msg=f"losses at {t} threads")
        for k in sd:
            assert np.array_equal(sd[k], runs[0][1][k]), f"{k} differs at {t} threads"


def test_deterministic_mode_is_the_same_math():
    # deterministic=True changes summation orders only: a few steps stay close to the default mode
    build, shape, loss, opt = CASES["resnet18"]
    target = _target("resnet18", shape)
    cn.use_deterministic_algorithms(True)
    l1, sd1 = _train(build, shape, target, loss, opt, 2, steps=2)
    cn.use_deterministic_algorithms(False)
    l0, sd0 = _train(build, shape, target, loss, opt, 2, steps=2)
    np.testing.assert_allclose(l1, l0, rtol=1e-4)
    # measured ~1e-3 of each tensor's largest magnitude: rounding differences of ~1e-7 that flip a ReLU mask or
    # two in BN outputs near zero move the weights feeding them, as any change of summation order would
    for k in ("conv1.weight", "layer4.1.conv2.weight", "fc.weight"):
        assert np.max(np.abs(sd1[k] - sd0[k])) < 1e-2 * np.max(np.abs(sd0[k])), k


def test_compile_option_overrides_the_global_switch():
    cn.use_deterministic_algorithms(True)
    m = cn.models.lenet5(seed=0)
    assert m.compile((2, 1, 28, 28)).deterministic is True
    assert m.compile((2, 1, 28, 28), deterministic=False).deterministic is False
    cn.use_deterministic_algorithms(False)
    assert m.compile((2, 1, 28, 28)).deterministic is False
    assert m.compile((2, 1, 28, 28), deterministic=True).deterministic is True
    with pytest.raises(TypeError):
        cn.use_deterministic_algorithms(1)
