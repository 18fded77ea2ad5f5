"""Optimizers (cnnnative.optim) and learning-rate schedules. The update itself runs in C++ over the
model's flat parameter and gradient blocks; these objects hold hyper-parameters, as torch.optim does,
and push the learning rate to the sessions they drive. The update writes the parameters in place (they are
read-only to Python outside `with cn.no_grad():`, not to the library) and bumps the store's version, so
inference sessions on the same model rebuild their prepared weights.

state_dict()/load_state_dict() as in PyTorch, for checkpoints and resumed runs: an optimizer's state dict
holds its hyper-parameters (JSON-able) and the flat float32 state blocks and step count of the training
session it drives; a schedule's holds its position (last_epoch) and settings. Every load checks the whole
state before it changes anything."""
from __future__ import annotations

import math
import numbers

import numpy as np


def _plain(group: dict) -> dict:
    """Hyper-parameters as JSON-able values (betas as a list)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


class Optimizer:
    kind = ""

    def __init__(self, params=None, **hyper):
        """params as torch.optim takes them: None (every parameter of the model the optimizer is compiled with),
        an iterable of parameters (model.fc.parameters(): only those are updated, the others stay as they are, as
        in PyTorch fine-tuning), or parameter groups ({'params': ..., option: value}) whose options equal the
        optimizer's own (groups with options of their own, a per-group lr say, are refused: one set of
        hyper-parameters applies to every parameter updated)."""
        name = type(self).__name__
        lr = hyper["lr"]
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"{name}: lr must be finite and >= 0, got {lr}")
        self.defaults = dict(hyper)
        self.param_groups = [dict(hyper)]
        self._sessions = []
        self._params = None if params is None else self._collect(name, params, hyper)

    @staticmethod
    def _collect(name, params, hyper) -> list:
        if isinstance(params, np.ndarray):
            raise TypeError(f"{name}: params must be an iterable of parameters or of parameter groups (dicts), "
                            f"got one array; pass [array] or model.parameters()")
        items = list(params)
        if not items:
            raise ValueError(f"{name}: got an empty parameter list")
        out = []
        for i, it in enumerate(items):
            if isinstance(it, dict):
                if "params" not in it:
                    raise ValueError(f"{name}: parameter group {i} has no 'params'")
                unknown = sorted(k for k in it if k != "params" and k not in hyper)
                if unknown:
                    raise ValueError(f"{name}: parameter group {i} has unknown options {unknown}; "
                                     f"{name} takes {sorted(hyper)}")
                own = {k: v for k, v in it.items() if k != "params" and _plain({k: v})[k] != _plain(hyper)[k]}
                if own:
                    raise ValueError(
                        f"{name}: parameter group {i} sets its own {', '.join(f'{k}={v!r}' for k, v in own.items())}"
                        f"; cnnnative applies one set of hyper-parameters to every parameter it updates. Train the "
                        f"groups with separate optimizers and sessions, or leave parameters out of the optimizer to "
                        f"keep them fixed")
                group = it["params"]
                group = [group] if isinstance(group, np.ndarray) else list(group)
                if not group:
                    raise ValueError(f"{name}: parameter group {i} is empty")
                out.extend(group)
            elif isinstance(it, np.ndarray):
                out.append(it)
            else:
                raise TypeError(f"{name}: params must hold parameters (arrays) or parameter groups (dicts), got "
                                f"{type(it).__name__} at position {i}")
        return out

    def _frozen_for(self, session) -> list:
        """Store entries the update of `session` must leave as they are: the store's trainable parameters that are
        not the session's model's (a submodule compiled onto its parent's store), and, where the optimizer was given
        parameters, the model's parameters it was not given. Raises ValueError for a given parameter that is not
        one of the model's."""
        from . import nn as _nn
        store = getattr(session, "_store", None)
        model = getattr(session, "model", None)
        if store is None or model is None:
            return []
        trainable = [n for n in store.names() if isinstance(store.array(n), _nn.Parameter)]
        own = set()
        for pname, p in model.named_parameters():
            e = _nn._entry_of(p)
            if e is not None and e[0] is store:
                own.add(e[1])
        keep = own
        if self._params is not None:
            keep = set()
            for i, p in enumerate(self._params):
                e = _nn._entry_of(_nn._latest(p))
                if e is None or e[0] is not store or e[1] not in own:
                    raise ValueError(f"{type(self).__name__}: parameter {i} of the optimizer (shape "
                                     f"{list(np.shape(p))}) is not a parameter of the model it is compiled with")
                keep.add(e[1])
        return [n for n in trainable if n not in keep]

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value >= 0 and math.isfinite(value)):
            # checked before anything changes: the optimizer and its sessions keep the rate they had
            raise ValueError(f"{type(self).__name__}: lr must be finite and >= 0, got {value!r}")
        self.param_groups[0]["lr"] = float(value)
        for s in self._sessions:
            s.lr = float(value)

    def _train_session(self):
        """The training session this optimizer drives (the last live one compiled with it), or None. A session
        retired because its model's structure changed holds no core session (_s is None) and is skipped."""
        for sess in reversed(self._sessions):
            if getattr(sess, "mode", "train") == "train" and getattr(sess, "_s", True) is not None:
                return sess
        return None

    def _attach(self, session) -> None:
        if getattr(session, "mode", "train") == "train" and getattr(session, "_s", None) is not None:
            frozen = self._frozen_for(session)
            if frozen:
                session._s.set_frozen(frozen)
        self._sessions.append(session)
        session.lr = self.lr
        pending = self.__dict__.pop("_pending_state", None)
        if pending is not None and getattr(session, "mode", "train") == "train":
            self._load_into(session, *pending)

    def state_dict(self) -> dict:
        """{'kind', 'defaults', 'param_groups', 'state', 'step'}: the hyper-parameters (the current lr in
        param_groups, the constructor's in defaults), the optimizer state of the training session it drives
        as {name: float32 flat block} ('momentum_buffer'; 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq') and that
        session's step count (Adam's bias correction). state is empty and step 0 before a session is compiled."""
        sess = self._train_session()
        state = {k: np.array(v, np.float32) for k, v in sess.optimizer_state().items()} if sess is not None else {}
        return {"kind": self.kind, "defaults": _plain(self.defaults),
                "param_groups": [_plain(g) for g in self.param_groups], "state": state,
                "step": int(sess.step_count) if sess is not None else 0}

    def _check_state_dict(self, sd) -> tuple:
        """Validates a state_dict() against this optimizer; returns (lr, state, step). Raises ValueError."""
        name = type(self).__name__
        if not isinstance(sd, dict) or not isinstance(sd.get("param_groups"), list):
            raise ValueError(f"{name}.load_state_dict: expected a dict from state_dict() with 'param_groups'")
        if sd.get("kind") != self.kind:
            raise ValueError(f"{name}.load_state_dict: the state is of a {sd.get('kind')!r} optimizer, "
                             f"this one is {self.kind!r}")
        if len(sd["param_groups"]) != 1 or not isinstance(sd["param_groups"][0], dict):
            raise ValueError(f"{name}.load_state_dict: expected one parameter group, got {len(sd['param_groups'])}")
        group, own = _plain(sd["param_groups"][0]), _plain(self.param_groups[0])
        if set(group) != set(own):
            raise ValueError(f"{name}.load_state_dict: hyper-parameters {sorted(group)} do not match "
                             f"{sorted(own)}")
        diff = [f"{k} {group[k]!r} (this optimizer: {own[k]!r})" for k in own if k != "lr" and group[k] != own[k]]
        if diff:
            raise ValueError(f"{name}.load_state_dict: the state was saved with " + ", ".join(diff) +
                             "; only lr may differ (the others are fixed when a session is compiled)")
        lr = group["lr"]
        if not _is_real(lr) or lr < 0:
            raise ValueError(f"{name}.load_state_dict: lr must be finite and >= 0, got {lr!r}")
        state = sd.get("state") or {}
        if not isinstance(state, dict):
            raise ValueError(f"{name}.load_state_dict: 'state' must be a dict of arrays")
        step = sd.get("step", 0)
        if not _is_int(step) or not 0 <= step < 2 ** 62:
            raise ValueError(f"{name}.load_state_dict: step must be a non-negative int, got {step!r}")
        return float(lr), state, int(step)

    def _load_into(self, sess, state, step) -> None:
        if state:
            sess.load_optimizer_state(state)  # checks names, sizes and values before writing any
        sess.step_count = step

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores state_dict(): the lr (pushed to the sessions), and, into the training session this
        optimizer drives, the state blocks and step count; without a session yet, those are kept and loaded
        into the next training session compiled with this optimizer. Hyper-parameters other than lr must
        match this optimizer's (they are fixed at compile); everything is checked before anything changes."""
        lr, state, step = self._check_state_dict(state_dict)
        sess = self._train_session()
        if sess is not None:
            self._load_into(sess, state, step)
        else:
            self._pending_state = (state, step)
        self.lr = lr

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
    _settings = ()  # hyper-parameter attributes besides base_lr, with their checks

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr()

    def get_last_lr(self):
        return [self.optimizer.lr]

    def state_dict(self) -> dict:
        """{'type', 'last_epoch', 'base_lr', and the schedule's settings} (JSON-able), as torch's
        scheduler.state_dict()."""
        d = {"type": type(self).__name__, "last_epoch": int(self.last_epoch), "base_lr": float(self.base_lr)}
        for k, _ in self._settings:
            d[k] = getattr(self, k)
        return d

    def _check_state_dict(self, sd) -> dict:
        name = type(self).__name__
        if not isinstance(sd, dict):
            raise ValueError(f"{name}.load_state_dict: expected a dict from state_dict()")
        if sd.get("type") != name:
            raise ValueError(f"{name}.load_state_dict: the state is of a {sd.get('type')!r} schedule")
        keys = {"type", "last_epoch", "base_lr"} | {k for k, _ in self._settings}
        if set(sd) != keys:
            raise ValueError(f"{name}.load_state_dict: expected keys {sorted(keys)}, got {sorted(sd)}")
        if not _is_int(sd["last_epoch"]) or not 0 <= sd["last_epoch"] < 2 ** 31:
            raise ValueError(f"{name}.load_state_dict: last_epoch must be a non-negative int, "
                             f"got {sd['last_epoch']!r}")
        if not _is_real(sd["base_lr"]) or sd["base_lr"] < 0:
            raise ValueError(f"{name}.load_state_dict: base_lr must be finite and >= 0, got {sd['base_lr']!r}")
        for k, ok in self._settings:
            if not ok(sd[k]):
                raise ValueError(f"{name}.load_state_dict: invalid {k} {sd[k]!r}")
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores state_dict() (checked first) and sets the optimizer's lr to the schedule's value at
        that position, so a schedule restored alone also restores the lr."""
        sd = self._check_state_dict(state_dict)
        self.last_epoch, self.base_lr = int(sd["last_epoch"]), float(sd["base_lr"])
        for k, _ in self._settings:
            setattr(self, k, type(getattr(self, k))(sd[k]))
        self.optimizer.lr = self.get_lr() if self.last_epoch > 0 else self.base_lr


class StepLR(_Schedule):
    _settings = (("step_size", lambda v: _is_int(v) and v >= 1), ("gamma", _is_real))

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def get_lr(self):
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    _settings = (("T_max", lambda v: _is_int(v) and v >= 1), ("eta_min", _is_real))

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def get_lr(self):
        # PyTorch's closed form, past T_max too: the rate climbs back after eta_min, as torch's does (no clamp)
        t = self.last_epoch
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
