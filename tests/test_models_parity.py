"""The model zoo against PyTorch twins with torchvision's structure and names (cnnnative/bench/torch_models.py): the
torch model's state_dict loads into ours strictly, eval outputs agree (max|a-b|/max|b| <= 1e-4), and one
SGD-with-momentum training run (two steps) agrees in losses, every parameter's update and the BN running
statistics (<= 1e-3 relative; measured ~1e-5). A gradient jumps where a ReLU input crosses zero, so before
each step the biases feeding ReLUs are nudged (by <= 2.6e-4 of that layer's largest input) until no ReLU
input lies within float32 rounding of zero (_untie_relus), and updates are compared up to the float32
rounding of the stored weights (_update_err). Also the new layers one by one. Skipped without torch.
Small batches and the smallest inputs each architecture allows keep the default tier short (every model
runs at 32x32 but torchvision's AlexNet, at 63x63); the other VGGs, ResNet-101/152 and the 224x224 runs
are marked slow (each under 15 s on 2 cores, the slow tier about a minute)."""
import numpy as np
import pytest

import cnnnative as cn
from cnnnative import functional as F
from cnnnative import nn

torch = pytest.importorskip("torch")
from cnnnative.bench import torch_models as tw  # noqa: E402  (imports torch)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def _randomize_bn(ref, seed=0):
    """Non-trivial BN affine parameters and running statistics, so eval mode exercises them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.num_batches_tracked.fill_(3)


def _pair(name, seed=0, randomize_bn=True, **kw):
    """(ours, torch twin) with the twin's weights copied into ours through state_dict (torch -> numpy)."""
    torch.manual_seed(seed)
    ref = tw.build(name, **kw)
    if randomize_bn:
        _randomize_bn(ref, seed)
    with nn.no_init():
        ours = cn.models.get_model(name, **kw)
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()}, strict=True)
    return ours, ref


def _eval_case(name, shape, **kw):
    ours, ref = _pair(name, **kw)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = ours.compile(shape).run(x)
    ref.eval()
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert out.shape == expected.shape
    err = _rel(out, expected)
    print(f"\n[parity] {name} {kw} {list(shape)}: eval max rel err {err:.2e}")
    assert err <= 1e-4, (name, kw, err)


S = pytest.mark.slow
EVAL_CASES = [
    # (name, input shape, kwargs)
    ("lenet5", (4, 1, 28, 28), {}),
    ("alexnet", (2, 3, 63, 63), {}),  # the smallest input torchvision's AlexNet takes; 1x1 -> 6x6 adaptive pool
    ("alexnet", (2, 3, 32, 32), {"cifar": True}),
    ("vgg11_bn", (2, 3, 32, 32), {"cifar": True}),
    ("vgg11", (2, 3, 32, 32), {}),  # torchvision's: a 1x1 -> 7x7 adaptive pool, 133M parameters (~3 s)
    pytest.param("vgg13", (2, 3, 32, 32), {}, marks=S),
    pytest.param("vgg16", (2, 3, 32, 32), {}, marks=S),
    pytest.param("vgg19", (2, 3, 32, 32), {}, marks=S),
    pytest.param("vgg11_bn", (2, 3, 32, 32), {}, marks=S),
    pytest.param("vgg13_bn", (2, 3, 32, 32), {}, marks=S),
    ("vgg16_bn", (2, 3, 32, 32), {}),
    pytest.param("vgg19_bn", (2, 3, 32, 32), {}, marks=S),
    pytest.param("vgg16", (1, 3, 224, 224), {}, marks=S),
    ("resnet18", (2, 3, 32, 32), {}),
    ("resnet18", (2, 3, 32, 32), {"cifar": True}),
    ("resnet34", (2, 3, 32, 32), {}),
    ("resnet50", (2, 3, 32, 32), {}),
    pytest.param("resnet101", (2, 3, 32, 32), {}, marks=S),
    pytest.param("resnet152", (2, 3, 32, 32), {}, marks=S),
    pytest.param("resnet50", (1, 3, 224, 224), {}, marks=S),
    ("googlenet", (2, 3, 32, 32), {}),
    ("googlenet", (2, 3, 32, 32), {"cifar": True}),
    pytest.param("googlenet", (1, 3, 224, 224), {}, marks=S),
    ("densenet121", (2, 3, 32, 32), {}),
    ("densenet121", (2, 3, 32, 32), {"cifar": True}),
    pytest.param("densenet121", (1, 3, 224, 224), {}, marks=S),
    ("unet", (1, 1, 32, 32), {}),
    ("unet", (2, 3, 24, 40), {"in_channels": 3, "num_classes": 2, "depth": 3, "base": 8}),
    ("conv_autoencoder", (4, 1, 28, 28), {}),
    ("conv_autoencoder", (2, 3, 32, 32), {"in_channels": 3, "base": 8, "final_activation": None}),
]


@pytest.mark.parametrize("name,shape,kw", EVAL_CASES)
def test_eval_outputs_match_torch(name, shape, kw):
    _eval_case(name, shape, **kw)


# ---- training: two SGD-with-momentum steps --------------------------------------------------------
def _targets(loss, out_shape, n, rng):
    if loss == "cross_entropy":
        return rng.integers(0, out_shape[1], n).astype(np.int32)
    if loss == "bce_with_logits":
        return (rng.random(out_shape) > 0.5).astype(np.float32)
    return rng.random(out_shape).astype(np.float32)


def _torch_loss(loss, out, t):
    tf = torch.nn.functional
    if loss == "cross_entropy":
        return tf.cross_entropy(out, torch.from_numpy(t).long())
    if loss == "bce_with_logits":
        return tf.binary_cross_entropy_with_logits(out, torch.from_numpy(t))
    return tf.mse_loss(out, torch.from_numpy(t))


TRAIN_CASES = [
    # LeNet-5's training steps are compared with each optimizer in test_torch_parity.py
    ("resnet18", (2, 3, 32, 32), {"cifar": True, "num_classes": 10}, "cross_entropy", 0.05),
    ("unet", (2, 1, 32, 32), {"depth": 3, "base": 8}, "bce_with_logits", 0.1),
    ("unet", (2, 2, 16, 16), {"in_channels": 2, "num_classes": 3, "depth": 2, "base": 4}, "mse", 0.1),
    ("conv_autoencoder", (4, 1, 28, 28), {}, "mse", 0.5),
]


def _untie_relus(ref, x, tau=2e-5):
    """Shifts of the biases feeding ReLUs so that no ReLU input of this batch lies within tau * max|input| of
    zero. Training compares gradients, and a ReLU input within float32 rounding (~1e-6 relative) of zero can
    take the other branch in either engine: that gradient then differs by a whole term, percents at a 4x4
    map (torch float32 against float64 shows it too, on some inputs). Runs a float64 copy of ref in train
    mode; at each ReLU the module that ran last before it carries the bias that shifts that ReLU's input
    channel one to one (BN -> ReLU, BN + identity -> ReLU, conv/linear + bias -> ReLU in these models); the
    shifted input flows on, so one pass fixes every layer. Returns {parameter name: shift}."""
    import copy
    ref64 = copy.deepcopy(ref).double().train()
    names = {m: n for n, m in ref64.named_modules()}
    last, shifts, hooks = [None], {}, []

    def on_biased(m, inp, out):
        last[0] = m

    def on_relu(m, inp):
        v = inp[0]
        vc = v.transpose(0, 1).reshape(v.shape[1], -1)
        t = tau * float(vc.abs().max())
        bad = (vc.abs() < t).any(1).nonzero().flatten()
        if not len(bad):
            return None
        steps = torch.tensor([1, -1, 2, -2, 3, -3, 5, -5, 8, -8, 13, -13], dtype=v.dtype) * t
        ok = ((vc[bad][None] + steps[:, None, None]).abs().min(2).values >= t)  # [steps, bad channels]
        assert ok.any(0).all(), "no shift clears every ReLU input of a channel"
        delta = torch.zeros(v.shape[1], dtype=v.dtype)
        delta[bad] = steps[ok.int().argmax(0)]
        key = names[last[0]] + ".bias"
        shifts[key] = shifts.get(key, 0) + delta.float()
        return (v + delta.view([1, -1] + [1] * (v.dim() - 2)),)

    for m in ref64.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)) \
                and m.bias is not None:
            hooks.append(m.register_forward_hook(on_biased))
        elif isinstance(m, torch.nn.ReLU):
            hooks.append(m.register_forward_pre_hook(on_relu))
    with torch.no_grad():
        ref64(torch.from_numpy(x).double())
    return shifts


def _update_err(w, w_ref, w0):
    """max |dw - dw_ref| / max |dw_ref| for the updates dw = w - w0, less the float32 rounding of the stored
    weights (4 ulp: each engine rounds w once per step): a BN weight of 1 moved by 1e-5 keeps 2 digits."""
    w, w_ref, w0 = (np.asarray(a, np.float64) for a in (w, w_ref, w0))
    slack = 4 * np.finfo(np.float32).eps * np.abs(w_ref)
    return float(np.max(np.maximum(np.abs((w - w0) - (w_ref - w0)) - slack, 0)) / (np.max(np.abs(w_ref - w0)) + 1e-30))


def _apply_shifts(shifts, ours, ref, before):
    """Adds the shifts to both models (and to the snapshot the updates are measured from)."""
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    with torch.no_grad(), cn.no_grad():  # both spell the in-place edit the same way
        for k, d in shifts.items():
            ref_sd[k].add_(d)
            before[k].add_(d)
            ours_sd[k][...] += d.numpy()


@pytest.mark.parametrize("name,shape,kw,loss,lr", TRAIN_CASES)
def test_training_steps_match_torch(name, shape, kw, loss, lr):
    ours, ref = _pair(name, randomize_bn=False, **kw)
    before = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    sess = ours.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=lr, momentum=0.9), loss=loss)
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9)
    ref.train()
    rng = np.random.default_rng(2)
    worst = loss_err = 0.0
    for i in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        if name == "conv_autoencoder":
            x = rng.random(shape).astype(np.float32)
        t = _targets(loss, sess.output_shape, shape[0], rng)
        _apply_shifts(_untie_relus(ref, x), ours, ref, before)
        got = sess.step(x, t)
        opt.zero_grad()
        tl = _torch_loss(loss, ref(torch.from_numpy(x)), t)
        tl.backward()
        opt.step()
        # step 0 starts from identical weights; step 1 from updates that agree to float rounding
        tol = 1e-4 if i == 0 else 1e-3
        loss_err = max(loss_err, abs(got - tl.item()) / abs(tl.item()))
        assert abs(got - tl.item()) <= tol * abs(tl.item()), (i, got, tl.item())
    sd, params = ref.state_dict(), dict(ref.named_parameters())
    for k, v in ours.state_dict().items():
        v = np.asarray(v)
        if k in params:  # the update (w_after - w_before) carries the gradients: compare it, not just w
            err = _update_err(v, sd[k].numpy(), before[k].numpy())
        elif k.endswith("num_batches_tracked"):
            assert int(v) == int(sd[k]) == 2, k
            continue
        else:  # BN running statistics
            err = _rel(v, sd[k].numpy())
        worst = max(worst, err)
        assert err <= 1e-3, (k, err)
    print(f"\n[parity] {name} {kw} train ({loss}): loss rel err {loss_err:.2e}, worst rel err over updates and "
          f"running stats {worst:.2e}")


# ---- the new layers one by one ------------------------------------------------------------------
class _Fn(nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.fn = fn
        for i, m in enumerate(mods):
            self.add_module(f"m{i}", m)

    def forward(self, x):
        return self.fn(self, x)


def _run(fn, x, *mods):
    return _Fn(fn, *mods).compile(x.shape).run(x)


@pytest.mark.parametrize("cfg", [
    dict(cin=4, cout=6, k=2, stride=2),
    dict(cin=4, cout=6, k=3, stride=2, padding=1, output_padding=1),
    dict(cin=4, cout=6, k=3, stride=(2, 1), padding=(1, 0), groups=2, dilation=(1, 2)),
    dict(cin=3, cout=2, k=(2, 3), stride=3, padding=1, output_padding=2, bias=False),
])
def test_conv_transpose2d_module_matches_torch(cfg):
    cfg = dict(cfg)
    cin, cout, k = cfg.pop("cin"), cfg.pop("cout"), cfg.pop("k")
    ours = nn.ConvTranspose2d(cin, cout, k, **cfg)
    ref = torch.nn.ConvTranspose2d(cin, cout, k, **cfg)
    assert ours.weight.shape == tuple(ref.weight.shape)
    # torch's init bound 1/sqrt(weight.size(1) * R * S), the same for weight and bias
    bound = 1 / np.sqrt(ref.weight.shape[1] * ref.weight.shape[2] * ref.weight.shape[3])
    assert np.abs(ours.weight).max() <= bound and np.abs(ours.weight).max() > 0.8 * bound
    ours.load_state_dict({n: v.detach().numpy() for n, v in ref.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, cin, 5, 6)).astype(np.float32)
    out = ours.compile(x.shape).run(x)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert _rel(out, expected) <= 1e-5


def test_lrn_upsample_adaptive_pool_cat_match_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 8, 5)).astype(np.float32)
    tx = torch.from_numpy(x)
    tf = torch.nn.functional
    cases = [
        (lambda s, x: s.m0(x), [nn.LocalResponseNorm(3, alpha=1e-2, beta=0.75, k=2.0)],
         tf.local_response_norm(tx, 3, alpha=1e-2, beta=0.75, k=2.0)),
        (lambda s, x: F.local_response_norm(x, 4), [], tf.local_response_norm(tx, 4)),
        (lambda s, x: s.m0(x), [nn.Upsample(scale_factor=2)], tf.interpolate(tx, scale_factor=2, mode="nearest")),
        (lambda s, x: F.interpolate(x, scale_factor=(2, 3)), [], tf.interpolate(tx, scale_factor=(2, 3))),
        (lambda s, x: F.interpolate(x, size=(16, 15)), [], tf.interpolate(tx, size=(16, 15))),
        (lambda s, x: s.m0(x), [nn.AdaptiveAvgPool2d((3, 2))], tf.adaptive_avg_pool2d(tx, (3, 2))),
        (lambda s, x: F.adaptive_avg_pool2d(x, (11, 7)), [], tf.adaptive_avg_pool2d(tx, (11, 7))),
        (lambda s, x: F.adaptive_avg_pool2d(x, (None, 3)), [], tf.adaptive_avg_pool2d(tx, (None, 3))),
        (lambda s, x: F.adaptive_avg_pool2d(x, (4, 5)), [], tf.adaptive_avg_pool2d(tx, (4, 5))),  # avg_pool2d path
        (lambda s, x: F.cat([x, s.m0(x)], 1), [nn.ReLU()], torch.cat([tx, tx.relu()], 1)),
        (lambda s, x: F.cat([x, x.relu(), x], dim=-1), [], torch.cat([tx, tx.relu(), tx], -1)),
        (lambda s, x: F.cat([x, x.relu()]), [], torch.cat([tx, tx.relu()])),  # torch's default dim 0
    ]
    for i, (fn, mods, expected) in enumerate(cases):
        out = _run(fn, x, *mods)
        assert out.shape == tuple(expected.shape), i
        assert _rel(out, expected.numpy()) <= 1e-5, i
