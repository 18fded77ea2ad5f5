"""LeNet-5 training against plain PyTorch with each optimizer (SGD with Nesterov momentum and weight decay, Adam,
AdamW): losses step by step and the weights after three steps. The eval outputs of LeNet-5 and the other models,
and one SGD training step of the larger ones, are in test_models_parity.py."""
import numpy as np
import pytest

import cnnnative as cn

torch = pytest.importorskip("torch")


from cnnnative.bench import torch_models  # noqa: E402  (imports torch)


def _pair(seed=0):
    ours = cn.models.lenet5(seed=seed)
    ref = torch_models.build("lenet5")
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    return ours, ref


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_training_steps_match(kind):
    ours, ref = _pair()
    if kind == "sgd":
        o = cn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
        t = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    elif kind == "adam":
        o = cn.optim.Adam(lr=1e-3, weight_decay=1e-4)
        t = torch.optim.Adam(ref.parameters(), lr=1e-3, weight_decay=1e-4)
    else:
        o = cn.optim.AdamW(lr=1e-3, weight_decay=1e-2)
        t = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=1e-2)
    sess = ours.compile((16, 1, 28, 28), mode="train", optimizer=o)
    rng = np.random.default_rng(1)
    for i in range(3):
        x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, 16).astype(np.int32)
        loss = sess.step(x, y)
        t.zero_grad()
        tl = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y).long())
        tl.backward()
        t.step()
        assert abs(loss - tl.item()) <= 1e-4 * abs(tl.item()), (i, loss, tl.item())
    sd = ref.state_dict()
    for k, v in ours.state_dict().items():
        assert _rel(np.array(v), sd[k].numpy()) < 1e-3, k
