"""Optimizers (cnnnative.optim) and learning-rate schedules. The update itself runs in C++ over the
model's flat parameter and gradient blocks; these objects hold hyper-parameters, as torch.optim does,
and push the learning rate to the sessions they drive."""
from __future__ import annotations

import math


class Optimizer:
    kind = ""

    def __init__(self, params=None, **hyper):
        # params is accepted for PyTorch familiarity; the update always covers every parameter of the model
        lr = hyper["lr"]
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"{type(self).__name__}: lr must be finite and >= 0, got {lr}")
        self.defaults = dict(hyper)
        self.param_groups = [dict(hyper)]
        self._sessions = []

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = float(value)
        for s in self._sessions:
            s.lr = float(value)

    def _attach(self, session) -> None:
        self._sessions.append(session)
        session.lr = self.lr

    def config(self) -> dict:
        c = {k: v for k, v in self.param_groups[0].items() if k != "betas"}
        if "betas" in self.param_groups[0]:
            c["beta1"], c["beta2"] = self.param_groups[0]["betas"]
        c["kind"] = self.kind
        return c


class SGD(Optimizer):
    kind = "sgd"

    def __init__(self, params=None, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")
        super().__init__(params, lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                         weight_decay=float(weight_decay), nesterov=bool(nesterov))


class Adam(Optimizer):
    kind = "adam"

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                         weight_decay=float(weight_decay), amsgrad=bool(amsgrad))


class AdamW(Adam):
    kind = "adamw"

    def __init__(self, params=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class _Schedule:
    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr()

    def get_last_lr(self):
        return [self.optimizer.lr]


class StepLR(_Schedule):
    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def get_lr(self):
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def get_lr(self):
        t = min(self.last_epoch, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
