import numpy as np
import pytest

import cnnnative as cn
from cnnnative import nn


def test_lenet_names_and_count():
    m = cn.models.lenet5(seed=0)
    names = [n for n, _ in m.named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                     "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert m.num_parameters() == 61706  # same as the torch definition (6*25+6 + 16*150+16 + 400*120+120 + ...)


def test_parameters_are_views_of_one_block():
    m = cn.models.lenet5(seed=0)
    sd = m.state_dict()
    bases = {id(np.asarray(v).base if np.asarray(v).base is not None else v) for v in sd.values()}
    # every array is a view (not an owner) of the core's store
    assert all(not v.flags.owndata for v in sd.values())
    w = m.conv1.weight
    with cn.no_grad():
        w[0, 0, 0, 0] = 42.0
    assert m.state_dict()["conv1.weight"][0, 0, 0, 0] == 42.0
    assert len(bases) >= 1


def test_init_is_seeded_and_torch_like():
    a = cn.models.lenet5(seed=3).state_dict()
    b = cn.models.lenet5(seed=3).state_dict()
    c = cn.models.lenet5(seed=4).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])
    bound = 1 / np.sqrt(400)  # kaiming_uniform(a=sqrt(5)) bound for fc1 (fan_in 400)
    w = a["fc1.weight"]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_state_dict_round_trip_and_errors():
    m1, m2 = cn.models.lenet5(seed=1), cn.models.lenet5(seed=2)
    m2.load_state_dict(m1.state_dict())
    for k, v in m1.state_dict().items():
        np.testing.assert_array_equal(v, m2.state_dict()[k])
    sd = dict(m1.state_dict())
    sd.pop("fc3.bias")
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["fc1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"missing keys: fc3.bias.*unexpected keys: extra.weight.*fc1.weight"):
        m2.load_state_dict(sd)


def test_batchnorm_buffers_in_state_dict():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    keys = list(m.state_dict())
    assert keys == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]


def test_calling_model_outside_compile_is_a_clear_error():
    with pytest.raises(RuntimeError, match="compile"):
        cn.models.lenet5()(np.zeros((1, 1, 28, 28), np.float32))


def test_layers_without_bias_register_it_as_none_and_compile():
    # as torch: bias=False registers the slot as None (m.bias is None, not in state_dict); a Parameter
    # assigned later is used
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for layer in (nn.Conv2d(3, 4, 3, bias=False), nn.ConvTranspose2d(3, 4, 3, bias=False)):
        assert layer.bias is None and list(layer.state_dict()) == ["weight"]
        y0 = layer.compile(x.shape).run(x)
        layer.bias = nn.Parameter(np.full(4, 2.0))
        assert list(layer.state_dict()) == ["weight", "bias"]
        np.testing.assert_allclose(layer.compile(x.shape).run(x), y0 + 2, rtol=1e-5, atol=1e-5)
    lin = nn.Linear(3, 2, bias=False)
    assert lin.bias is None
    w = np.asarray(lin.weight)
    np.testing.assert_allclose(lin.compile((2, 3)).run(x[:, :, 0, 0]), x[:, :, 0, 0] @ w.T, rtol=1e-5, atol=1e-6)


def test_load_state_dict_checks_every_tensor_before_writing_any():
    # the last tensor is bad: nothing may be written (the "nine overwritten before the NaN")
    m = cn.models.lenet5(seed=0)
    before = {k: np.array(v) for k, v in m.state_dict().items()}
    keys = list(before)
    cases = []
    for bad in (np.nan, np.inf):
        s = {k: v + 1 for k, v in before.items()}
        s[keys[-1]] = s[keys[-1]].copy()
        s[keys[-1]].flat[3] = bad
        cases.append((s, "not finite in float32"))
    s = {k: (v + 1).astype(np.float64) for k, v in before.items()}
    s[keys[-1]].flat[0] = 1e39  # finite in float64, inf in float32
    cases.append((s, "not finite in float32"))
    for dt, what in ((np.int32, "dtype int32"), (bool, "dtype bool"), ("datetime64[s]", "dtype datetime64"),
                     ("U3", "dtype <U3"), (np.complex64, "dtype complex64")):
        s = {k: v + 1 for k, v in before.items()}
        s[keys[-1]] = np.zeros(before[keys[-1]].shape, dt)
        cases.append((s, what))
    for state, msg in cases:
        with pytest.raises(ValueError, match=f"nothing was loaded: {keys[-1]}: .*{msg}"):
            m.load_state_dict(state)
        for k in keys:
            assert np.array_equal(np.asarray(m.state_dict()[k]), before[k]), k
    # float16 and float64 that fit are fine
    m.load_state_dict({k: v.astype(np.float64) for k, v in before.items()})
    m.load_state_dict({k: v.astype(np.float16) for k, v in before.items()})


def test_parameters_and_buffers_built_by_modules_are_read_only():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.src = np.arange(4, dtype=np.float32)
            self.w = nn.Parameter(self.src)  # a copy: later writes to src could not reach a compiled model
            self.register_buffer("b", np.ones(3))  # float64: converted (a copy)

    m = M()
    assert not m.w.flags.writeable and not m.b.flags.writeable and isinstance(m.b, nn.Buffer)
    assert not np.shares_memory(m.w, m.src)
    with pytest.raises(ValueError, match="read-only"):
        m.w[0] = 1
    with pytest.raises(ValueError, match="read-only"):  # nor through the view's base
        m.w.base[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        m.b += 1
    m.w = m.w * 2  # arithmetic makes new memory; assigned as a parameter it is read-only as every other
    assert not m.w.flags.writeable
    with cn.no_grad():
        m.w[0] = -1
        m.b += 1
    np.testing.assert_array_equal(m.w, [-1, 2, 4, 6])
    np.testing.assert_array_equal(m.b, [2, 2, 2])
    assert not m.w.flags.writeable and not m.b.flags.writeable
    assert m.src.flags.writeable  # the user's own array keeps its flag
