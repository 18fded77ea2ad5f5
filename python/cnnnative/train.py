"""Training and evaluation loops used by the CLI (and usable directly): fixed-shape sessions, a
tqdm bar per epoch, per-epoch loss/accuracy/throughput, checkpoints written atomically at the end of every
epoch, and runs resumed from them (fit(..., checkpoint=PATH, resume=PATH)) with the numbers an
uninterrupted run gives (same thread count). The returned History holds one record per epoch (loss, the
metric, the learning rate, throughput) and one per step (loss and its smoothed value); fit(...,
history_file=PREFIX) also writes it as PREFIX.history.json and .csv at the end of every epoch.

Checkpoint format: a .npz (zip of .npy members, stored uncompressed, never pickle):
  <name>.npy                       one per model.state_dict() entry, as save_checkpoint always wrote them
                                   (np.load or cn.load_checkpoint read the weights of any checkpoint)
  train_state/meta.json            resumable checkpoints only: JSON with format/version, epoch and epochs,
                                   the settings a resume must match, the caller's config (the CLI's
                                   arguments), the optimizer's hyper-parameters and step count, the schedule's
                                   state, the DataLoader's generator states, the history so far and the
                                   loss of every step so far ("step_losses")
  train_state/optimizer.<s>.npy    the optimizer's flat float32 state blocks (momentum_buffer; exp_avg, ...)

Loading checks everything before anything is written: member names (no duplicates, nothing but .npy and
the JSON member), each member's uncompressed size declared in the zip directory (bounded by what its
expected shape needs, before decompressing), the .npy header's shape and dtype (before reading data), and
the values (finite in float32)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
import zipfile

import numpy as np

from ._atomic import write_atomic
from .data import DataLoader

_NS = "train_state/"
_META = _NS + "meta.json"
_OPT = _NS + "optimizer."
_FORMAT, _VERSION = "cnnnative-checkpoint", 1
_NPY_HEADER_MAX = 10000      # numpy's own bound on a .npy header
_MEMBER_SLACK = 16384        # bytes a .npy member may hold beyond its data (magic, version, header)
_META_MAX = 16 << 20         # the JSON member
_KILL_ENV = "_CNNNATIVE_TEST_KILL_AFTER_EPOCH"  # test hook: SIGKILL this process after that epoch's checkpoint


def predict(model, x: np.ndarray, batch_size: int = 256, session=None) -> np.ndarray:
    """Model outputs for every row of x, through one infer session of a fixed batch size (the last
    partial batch is zero-padded, which is exact since inference treats samples independently)."""
    n = len(x)
    bs = min(batch_size, n)
    sess = session or model.compile((bs,) + tuple(x.shape[1:]), mode="infer")
    outs = []
    buf = np.zeros((bs,) + tuple(x.shape[1:]), np.float32)
    for i in range(0, n, bs):
        chunk = x[i:i + bs]
        if len(chunk) == bs:
            outs.append(sess.run(np.ascontiguousarray(chunk, np.float32)))
        else:
            buf[:len(chunk)] = chunk
            buf[len(chunk):] = 0
            outs.append(sess.run(buf)[:len(chunk)])
    return np.concatenate(outs)


def accuracy(model, x, y, batch_size=256, session=None) -> float:
    return float(np.mean(np.argmax(predict(model, x, batch_size, session), axis=1) == y))


# ------------------------------------------------------------------------------------------------------
# training history
# ------------------------------------------------------------------------------------------------------

SMOOTHING = 0.9  # the per-step loss is smoothed as an exponential moving average with this factor, debiased

_TASK_OF_LOSS = {"cross_entropy": "classify", "bce_with_logits": "segment", "mse": "denoise"}
_FIRST, _LAST = ("epoch", "loss", "train_acc", "test_acc"), ("lr", "images_per_s", "seconds")


def _ordered(rec: dict) -> dict:
    """An epoch record with its keys in the files' order (records restored from a checkpoint come sorted)."""
    keys = [k for k in _FIRST if k in rec] + sorted(k for k in rec if k not in _FIRST + _LAST)
    return {k: rec[k] for k in keys + [k for k in _LAST if k in rec]}


def history_paths(history_file) -> tuple:
    """(json path, csv path) for fit's history_file: a path ending in .json or .csv names both files (the
    other extension beside it); any other path is a prefix (a trailing .npz is dropped, so a checkpoint's
    path works): PREFIX.history.json and PREFIX.history.csv."""
    p = os.fspath(history_file)
    root, ext = os.path.splitext(p)
    if ext.lower() in (".json", ".csv"):
        return root + ".json", root + ".csv"
    if ext.lower() == ".npz":
        p = root
    return p + ".history.json", p + ".history.csv"


class History(list):
    """What fit and fit_dense return first: a list with one dict per epoch ({"epoch", "loss", "lr",
    "images_per_s", "seconds"} and "train_acc"/"test_acc" for classifiers or the metric of fit_dense, e.g.
    "IoU" or "MSE"), plus `steps`: one dict per training step {"step", "epoch", "loss", "loss_smooth"}
    (loss_smooth: the debiased exponential moving average with factor SMOOTHING). model, task ("classify",
    "segment", "denoise") and metric ("test_acc", the metric's name or None) describe the run; to_dict() is
    the history file's JSON and write(history_file) writes it and the CSV (one row per epoch) atomically."""

    def __init__(self, records=(), model=None, task=None, metric=None):
        super().__init__(records)
        self.model, self.task, self.metric = model, task, metric
        self.steps = []
        self._ema = 0.0

    def add_step(self, step: int, epoch: int, loss: float) -> None:
        """Records training step `step` (counted from 1 over the whole run) of `epoch` with its loss."""
        loss = float(loss)
        n = len(self.steps) + 1
        self._ema = SMOOTHING * self._ema + (1 - SMOOTHING) * loss
        self.steps.append({"step": int(step), "epoch": int(epoch), "loss": loss,
                           "loss_smooth": self._ema / (1 - SMOOTHING ** n)})

    def step_losses(self) -> list:
        return [s["loss"] for s in self.steps]

    def to_dict(self) -> dict:
        """{"model", "task", "metric", "epochs": [...], "steps": [...]}; non-finite numbers become null."""
        def clean(rec):
            return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in rec.items()}
        return {"model": self.model, "task": self.task, "metric": self.metric,
                "epochs": [clean(_ordered(r)) for r in self], "steps": [clean(s) for s in self.steps]}

    def csv_text(self) -> str:
        import csv
        import io
        columns = list(_ordered({k: None for r in self for k in r}))
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        for r in self:
            w.writerow([("" if r.get(k) is None else repr(r[k]) if isinstance(r[k], float) else r[k])
                        for k in columns])
        return out.getvalue()

    def write(self, history_file) -> tuple:
        """Writes the JSON and CSV files (see history_paths), each atomically; returns their paths."""
        js, cs = history_paths(history_file)
        d = self.to_dict()
        lines = [json.dumps({k: d[k] for k in ("model", "task", "metric")}, allow_nan=False)[:-1] + ","]
        for key in ("epochs", "steps"):  # one record a line
            recs = [" " + json.dumps(r, allow_nan=False) for r in d[key]]
            lines.append(f' "{key}": [' + ("\n" + ",\n".join(recs) + "\n" if recs else "") + "]" +
                         ("," if key == "epochs" else "}"))
        blob = ("\n".join(lines) + "\n").encode()
        text = self.csv_text().encode()
        return write_atomic(js, lambda f: f.write(blob)), write_atomic(cs, lambda f: f.write(text))


# ------------------------------------------------------------------------------------------------------
# checkpoint files
# ------------------------------------------------------------------------------------------------------

class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (nothing was changed)."""


def _write_checkpoint(model, path, meta=None, arrays=None) -> str:
    members = [(k, np.asarray(v)) for k, v in model.state_dict().items()]
    members += list((arrays or {}).items())
    blob = None if meta is None else json.dumps(meta, sort_keys=True).encode()

    def fill(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in members:
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as m:
                    np.lib.format.write_array(m, arr, allow_pickle=False)
            if blob is not None:
                zf.writestr(zipfile.ZipInfo(_META, date_time=(1980, 1, 1, 0, 0, 0)), blob)
    return write_atomic(path, fill)


def save_checkpoint(model, path: str) -> str:
    """Writes the model's state_dict as .npz atomically (temp file, fsync, rename); returns the path.
    (fit(..., checkpoint=PATH) writes resumable checkpoints: the same weights plus the training state.)"""
    return _write_checkpoint(model, path)


class _Reader:
    """A checkpoint's zip directory, checked; members are read one at a time with bounded sizes."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(2, f"checkpoint not found: {self.path}", self.path)
        try:
            self.zf = zipfile.ZipFile(self.path)
        except Exception as e:  # BadZipFile, OSError, ValueError, EOFError, ...
            raise CheckpointError(f"checkpoint {self.path!r} is not a readable .npz file: {e}") from None
        self.members = {}
        try:
            for info in self.zf.infolist():
                name = info.filename
                if name == _META:
                    key = name
                elif name.endswith(".npy"):
                    key = name[:-4]
                else:
                    self._fail(f"unexpected member {name!r} (a checkpoint holds .npy arrays and {_META})")
                if key in self.members:
                    self._fail(f"member {name!r} appears twice")
                if info.flag_bits & 0x1:
                    self._fail(f"member {name!r} is encrypted")
                self.members[key] = info
        except BaseException:
            self.zf.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zf.close()

    def _fail(self, msg):
        raise CheckpointError(f"checkpoint {self.path}: {msg}")

    def model_keys(self):
        return [k for k in self.members if not k.startswith(_NS)]

    def has_training_state(self):
        return _META in self.members

    def _read_member(self, key, limit, what, body):
        """Opens member `key` after checking its declared uncompressed size against `limit`; body(f) reads it.
        Errors of the zip/npy layers become CheckpointError naming the file and member."""
        info = self.members[key]
        if info.file_size > limit:
            self._fail(f"{what} declares {info.file_size} bytes uncompressed, more than the {limit} it may "
                       f"take (refused before decompressing)")
        try:
            with self.zf.open(info) as f:
                out = body(f)
                if f.read(1):  # also lets zipfile check the CRC at the end
                    self._fail(f"{what}: trailing bytes after its data")
                return out
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"checkpoint {self.path}: {what}: {type(e).__name__}: {e}") from None

    def array(self, key, shape, target):
        """The array in member `key`, which must have exactly `shape` and, for a float target, a float16/32/64
        dtype with values finite in float32 (returned as float32); for an integer target, an integer dtype
        with non-negative values that fit it. Returns a new C-contiguous array of dtype `target`."""
        shape, target = tuple(int(s) for s in shape), np.dtype(target)
        count = math.prod(shape)
        what = f"tensor {key!r}"

        def body(f):
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shp, fortran, dt = np.lib.format.read_array_header_1_0(f, max_header_size=_NPY_HEADER_MAX)
            elif version == (2, 0):
                shp, fortran, dt = np.lib.format.read_array_header_2_0(f, max_header_size=_NPY_HEADER_MAX)
            else:
                self._fail(f"{what}: unsupported .npy format version {version}")
            if tuple(shp) != shape:
                self._fail(f"{what} has shape {tuple(shp)}, expected {shape}")
            if target.kind == "f":
                if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
                    self._fail(f"{what} has dtype {dt}; float tensors must be stored as float16, float32 or "
                               f"float64")
            elif dt.kind not in "iu" or dt.itemsize > 8:
                self._fail(f"{what} has dtype {dt}; expected an integer dtype (as {target})")
            nbytes = count * dt.itemsize
            data = f.read(nbytes)
            if len(data) != nbytes:
                self._fail(f"{what}: truncated data ({len(data)} of {nbytes} bytes)")
            a = np.frombuffer(data, dt).reshape(shape, order="F" if fortran else "C")
            if target.kind == "f":
                with np.errstate(over="ignore", invalid="ignore"):
                    out = np.array(a, dtype=np.float32, order="C")  # (ascontiguousarray makes 0-d 1-d)
                bad = ~np.isfinite(out)
                if bad.any():
                    idx = np.unravel_index(int(np.argmax(bad.ravel())), shape)
                    v = a[idx]
                    why = "overflows float32" if np.isfinite(v) else "is not finite"
                    self._fail(f"{what} holds {v!r} at index {tuple(int(i) for i in idx)}, which {why}")
                return out.astype(target, copy=False)
            if count and (a.min() < 0 or a.max() > np.iinfo(target).max):
                idx = np.unravel_index(int(np.argmax(((a < 0) | (a > np.iinfo(target).max)).ravel())), shape)
                self._fail(f"{what} holds {a[idx]!r} at index {tuple(int(i) for i in idx)}; expected a "
                           f"non-negative count that fits {target}")
            return np.array(a, dtype=target, order="C")

        return self._read_member(key, _MEMBER_SLACK + count * 8, what, body)

    def model_state(self, own, strict=True):
        """{name: array} for every entry of own (a model's state_dict()) found in the file, all checked."""
        keys = self.model_keys()
        missing = [k for k in own if k not in keys]
        unexpected = [k for k in keys if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing tensors: " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
            if unexpected:
                parts.append("unexpected tensors: " + ", ".join(unexpected[:10]) +
                             (" ..." if len(unexpected) > 10 else ""))
            self._fail("does not match the model: " + "; ".join(parts))
        return {k: self.array(k, np.shape(v), np.asarray(v).dtype) for k, v in own.items() if k in keys}

    def meta(self):
        if _META not in self.members:
            self._fail("holds model weights only (no training state): it cannot be resumed; load its weights "
                       "with cnnnative.load_checkpoint(model, path)")

        def body(f):
            raw = f.read(_META_MAX + 1)
            try:
                return json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                self._fail(f"{_META} is not valid JSON: {e}")

        meta = self._read_member(_META, _META_MAX, _META, body)
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            self._fail(f"{_META} is not cnnnative training state")
        if meta.get("version") != _VERSION:
            self._fail(f"training state version {meta.get('version')!r} is not supported (this cnnnative "
                       f"reads version {_VERSION})")
        e, n = meta.get("epoch"), meta.get("epochs")
        if not (_is_int(e) and _is_int(n) and 1 <= e <= n < 2 ** 31):
            self._fail(f"{_META}: invalid epoch {e!r} of {n!r}")
        for k, t in (("settings", dict), ("history", list), ("optimizer", dict), ("loader", dict)):
            if not isinstance(meta.get(k), t):
                self._fail(f"{_META}: {k!r} missing or not a {t.__name__}")
        return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_checkpoint(model, path: str, strict: bool = True):
    """Loads a checkpoint's weights into model (a resumable checkpoint's training state is ignored).
    All-or-nothing: every tensor is checked (names, shapes, float dtype, finite in float32; sizes bounded
    before decompressing; no pickle) before any is written. Raises FileNotFoundError or ValueError."""
    own = model.state_dict()
    with _Reader(path) as r:
        state = r.model_state(own, strict)
    model.load_state_dict(state, strict=strict)
    return model


def checkpoint_info(path) -> dict:
    """The training state of a resumable checkpoint (epoch, epochs, settings, config, history, ...) as a
    dict, checked; ValueError for a weights-only or damaged checkpoint."""
    with _Reader(path) as r:
        return r.meta()


# ------------------------------------------------------------------------------------------------------
# resumable training
# ------------------------------------------------------------------------------------------------------

def _json_norm(v):
    """v as it comes back from JSON (tuples -> lists), for comparing settings."""
    return json.loads(json.dumps(v))


def fingerprint(*arrays) -> str:
    """sha256 over dtypes, shapes and bytes of arrays: identifies a data set in a checkpoint."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _describe(obj):
    """A JSON-able description of a transform: class names and their plain settings."""
    if obj is None:
        return None
    if isinstance(getattr(obj, "transforms", None), (list, tuple)):
        return {"type": type(obj).__qualname__, "transforms": [_describe(t) for t in obj.transforms]}
    if not hasattr(obj, "__dict__") or type(obj).__name__ in ("function", "builtin_function_or_method", "method"):
        return {"type": f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"}
    d = {"type": type(obj).__qualname__}
    for k, v in sorted(vars(obj).items()):
        if isinstance(v, (bool, int, float, str, type(None))) or (
                isinstance(v, (tuple, list)) and all(isinstance(x, (bool, int, float, str)) for x in v)):
            d[k] = v
    return d


class _Resumable:
    """The state a checkpoint holds besides the weights, and its save/resume."""

    def __init__(self, model, sess, optimizer, schedule, loader, epochs, settings, config, log):
        self.model, self.sess, self.optimizer, self.schedule, self.loader = model, sess, optimizer, schedule, loader
        self.epochs, self.log = epochs, log
        self.settings = _json_norm(settings)
        self.config = _json_norm(config) if config is not None else None

    def save(self, path, epoch, history, recompute):
        import cnnnative
        opt = self.optimizer.state_dict()
        meta = {"format": _FORMAT, "version": _VERSION, "epoch": epoch, "epochs": self.epochs,
                "settings": self.settings, "config": self.config,
                "optimizer": {k: opt[k] for k in ("kind", "defaults", "param_groups", "step")},
                "schedule": self.schedule.state_dict() if self.schedule is not None else None,
                "loader": self.loader.state_dict(), "history": list(history),
                "step_losses": history.step_losses(),
                "runtime": {"threads": cnnnative.get_num_threads(), "recompute": recompute,
                            "world_size": self.loader.num_replicas, "cnnnative": cnnnative.__version__}}
        arrays = {_OPT + k: v for k, v in opt["state"].items()}
        return _write_checkpoint(self.model, path, meta, arrays)

    def resume(self, path):
        """Checks the checkpoint against this run in full, then restores it. Returns (history, meta)."""
        with _Reader(path) as r:
            meta = r.meta()
            where = f"checkpoint {r.path}"
            diffs = []
            saved = meta["settings"]
            for k in sorted(set(saved) | set(self.settings)):
                if saved.get(k) != self.settings.get(k):
                    if k == "data":
                        diffs.append("the training data differs (its fingerprint does not match)")
                    else:
                        diffs.append(f"{k}: checkpoint {saved.get(k)!r}, this run {self.settings.get(k)!r}")
            if meta["epochs"] != self.epochs:
                diffs.insert(0, f"epochs: the checkpoint's run has {meta['epochs']} (its learning-rate schedule "
                                f"spans them), this run {self.epochs}; resume with the same number of epochs")
            if diffs:
                raise CheckpointError(f"{where} was written by a different run; refusing to resume: " +
                                      "; ".join(diffs))
            epoch = meta["epoch"]
            history = meta["history"]
            if len(history) != epoch or not all(
                    isinstance(h, dict) and h.get("epoch") == i + 1
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in h.values())
                    for i, h in enumerate(history)):
                r._fail(f"history is not one record of numbers per epoch 1..{epoch}")
            losses = meta.get("step_losses")  # absent in checkpoints of older versions
            if losses is not None and (not isinstance(losses, list) or len(losses) != epoch * len(self.loader)
                                       or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in losses)):
                r._fail(f"step_losses is not one number per step of {epoch} epochs of {len(self.loader)} steps")
            weights = r.model_state(self.model.state_dict(), strict=True)
            own_opt = self.sess.optimizer_state()
            names = {k[len(_OPT):] for k in r.members if k.startswith(_OPT)}
            if names != set(own_opt):
                r._fail(f"optimizer state {sorted(names)} does not match this optimizer's {sorted(own_opt)}")
            opt_sd = dict(meta["optimizer"])
            opt_sd["state"] = {k: r.array(_OPT + k, v.shape, np.float32) for k, v in own_opt.items()}
            steps = epoch * len(self.loader)
            if opt_sd.get("step") != steps:
                r._fail(f"step count {opt_sd.get('step')!r} is not {epoch} epochs of {len(self.loader)} steps")
            try:
                self.optimizer._check_state_dict(opt_sd)
                if self.schedule is not None:
                    if meta.get("schedule") is None:
                        raise ValueError("the checkpoint holds no learning-rate schedule")
                    self.schedule._check_state_dict(meta["schedule"])
                    if meta["schedule"]["last_epoch"] != epoch:
                        raise ValueError(f"schedule position {meta['schedule']['last_epoch']} is not epoch {epoch}")
                elif meta.get("schedule") is not None:
                    raise ValueError("the checkpoint has a learning-rate schedule, this run none")
                self.loader._check_state_dict(meta["loader"])
            except CheckpointError:
                raise
            except ValueError as e:
                raise CheckpointError(f"{where}: {e}") from None
        # everything checked: write
        self.model.load_state_dict(weights, strict=True)
        self.optimizer.load_state_dict(opt_sd)
        if self.schedule is not None:
            self.schedule.load_state_dict(meta["schedule"])
        self.loader.load_state_dict(meta["loader"])
        return list(history), meta


def _note_runtime(meta, recompute, log, world_size=1):
    import cnnnative
    rt = meta.get("runtime") or {}
    now = {"threads": cnnnative.get_num_threads(), "recompute": recompute, "world_size": world_size}
    diff = [f"{k} {rt.get(k)!r} -> {v!r}" for k, v in now.items() if k in rt and rt.get(k) != v]
    if diff:
        log("note: " + ", ".join(diff) + " since the checkpoint; the continued run may differ in the last bits "
            "from an uninterrupted one")


def _after_checkpoint(epoch):
    """Test hook: with _CNNNATIVE_TEST_KILL_AFTER_EPOCH=N, the process SIGKILLs itself right after epoch N's
    checkpoint is written and its line printed (a crash at the worst moment for a resume)."""
    v = os.environ.get(_KILL_ENV)
    if v and v.strip() == str(epoch):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _start(run, resume, recompute, epochs, log, history):
    """The first epoch to train after restoring `resume` (if any) into the model, the optimizer, ... and the
    History `history`."""
    if not resume:
        return 1
    records, meta = run.resume(resume)
    history.extend(_ordered(r) for r in records)
    losses = meta.get("step_losses")
    if losses is None:
        log(f"note: {os.fspath(resume)} was written by an older version without the loss of each step; the "
            f"history's steps begin with epoch {meta['epoch'] + 1}")
    else:
        per_epoch = len(run.loader)
        for i, v in enumerate(losses):
            history.add_step(i + 1, i // per_epoch + 1, v)
    _note_runtime(meta, recompute, log, run.loader.num_replicas)
    if meta["epoch"] >= epochs:
        log(f"checkpoint {os.fspath(resume)}: the run finished all {epochs} epochs; nothing to do")
    else:
        log(f"resuming from {os.fspath(resume)}: epoch {meta['epoch']}/{epochs} done, continuing with epoch "
            f"{meta['epoch'] + 1}")
    return meta["epoch"] + 1


def _optimizer_settings(optimizer):
    return {"kind": optimizer.kind, "defaults": optimizer.state_dict()["defaults"]}


def _schedule_settings(schedule):
    if schedule is None:
        return None
    sd = schedule.state_dict()
    sd.pop("last_epoch")
    return sd


def _quiet(*args, **kwargs):
    pass


class _Parallel:
    """fit's view of data parallelism: the world size and rank (1 and 0 without distributed=True), logging and
    progress on rank 0 only, sums over the ranks for the epoch's statistics."""

    def __init__(self, distributed, log, progress):
        self.dist = None
        self.world, self.rank = 1, 0
        if distributed:
            from . import distributed as dist
            dist.init()
            self.dist, self.world, self.rank = dist, dist.world_size(), dist.rank()
        self.log = log if self.rank == 0 else _quiet
        self.progress = progress and self.rank == 0

    def sum(self, *values):
        """The sums over the ranks of float values (the values themselves on one process)."""
        a = np.array(values, np.float64)
        if self.dist is not None:
            self.dist.allreduce_(a)
        return [float(v) for v in a]

    def session(self, model, shape, **kw):
        from .session import Session
        return Session(model, shape, mode="train", distributed=self.dist is not None, **kw)


def fit(model, data, epochs, batch_size, optimizer, schedule=None, seed=0, progress=True, log=print,
        eval_batch_size=256, transform=None, recompute="auto", dtype="float32", checkpoint=None, resume=None,
        config=None, device="cpu", history_file=None, model_name=None, distributed=False):
    """Trains on data = (x_train, y_train, x_test, y_test); returns (history, session), history a History: one
    dict per epoch {"epoch", "loss", "train_acc", "test_acc", "lr" (the learning rate of that epoch),
    "images_per_s", "seconds"} and history.steps, one dict per step. recompute: the training session's
    recomputation mode; dtype='bfloat16': mixed-precision training and bf16 evaluation (Module.compile).
    history_file: a path prefix (PREFIX.history.json and .csv; a checkpoint's path works) or a .json/.csv path,
    written atomically at the end of every epoch (see History.write); model_name: the model's name there
    (default: its class name).

    checkpoint: a path written atomically at the end of every epoch with the weights and the whole training
    state. resume: a checkpoint of the same run (same model, data, batch size, optimizer, schedule, seed,
    transform, epochs; refused with a ValueError naming what differs) to continue from: the returned history
    covers all epochs, and with the same thread count the continued run gives bitwise what an uninterrupted
    run gives. A checkpoint of a finished run trains nothing. config: a JSON-able dict stored in the
    checkpoint as is (the CLI keeps its arguments there; see checkpoint_info).

    distributed=True (run under mpirun; cnnnative.distributed): data-parallel training. batch_size is the
    per-rank batch; each step trains on a global batch of batch_size x world size (the loader's shards, see
    DataLoader), with the gradients averaged over the ranks: the same steps as one process with that global
    batch for models without BatchNorm or dropout (BN normalizes over each rank's shard unless the model's BN
    layers are nn.SyncBatchNorm, which normalize over the global batch; dropout draws its masks per rank, the
    same stream on every rank). Every rank logs nothing but rank 0; losses and accuracies are over the global batch; checkpoints and
    history files are written by rank 0 only and hold the global batch size, so they resume on any number of
    ranks with the same global batch (e.g. 2 ranks x 32 resume on 1 process with batch_size=64). Every rank
    reads `resume` (a path every rank sees)."""
    from tqdm import tqdm

    par = _Parallel(distributed, log, progress)
    log, progress = par.log, par.progress
    x_tr, y_tr, x_te, y_te = data
    loader = DataLoader(x_tr, y_tr, batch_size, shuffle=True, seed=seed, drop_last=True, transform=transform,
                        num_replicas=par.world, rank=par.rank)
    if len(loader) == 0:
        raise ValueError(f"batch size {batch_size * par.world} is larger than the training set ({len(x_tr)} samples)")
    sess = par.session(model, (batch_size,) + tuple(x_tr.shape[1:]), optimizer=optimizer, seed=seed,
                       recompute=recompute, dtype=dtype, device=device)
    num_classes = sess.num_classes
    from .data import check_labels
    for name, y in (("train labels", y_tr), ("test labels", y_te)):
        check_labels(y, num_classes, f"{name} (the model has {num_classes} classes)")
    bs_eval = min(eval_batch_size, len(x_te))
    eval_sess = model.compile((bs_eval,) + tuple(x_te.shape[1:]), mode="infer", dtype=dtype, device=device)
    run = None
    if checkpoint or resume:
        settings = {"task": "fit", "model": type(model).__name__, "parameters": model.num_parameters(),
                    "batch_size": int(batch_size) * par.world, "seed": int(seed), "dtype": dtype, "loss": "cross_entropy",
                    "eval_batch_size": int(bs_eval), "optimizer": _optimizer_settings(optimizer),
                    "schedule": _schedule_settings(schedule), "transform": _describe(transform),
                    "data": fingerprint(x_tr, y_tr, x_te, y_te)}
        run = _Resumable(model, sess, optimizer, schedule, loader, epochs, settings, config, log)
    history = History(model=model_name or type(model).__name__, task="classify", metric="test_acc")
    first = _start(run, resume, recompute, epochs, log, history)
    for epoch in range(first, epochs + 1):
        t0 = time.perf_counter()
        lr = float(optimizer.lr)
        total, correct, loss_sum, seen = 0, 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
        for xb, yb in bar:
            loss = sess.step(xb, yb)  # distributed: the mean over the global batch
            history.add_step((epoch - 1) * len(loader) + total + 1, epoch, loss)
            correct += int(np.sum(np.argmax(sess.output(), axis=1) == yb))
            seen += len(yb) * par.world
            loss_sum += loss * len(yb) * par.world
            total += 1
            if total % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        dt = time.perf_counter() - t0
        correct = par.sum(correct)[0]
        if schedule is not None:
            schedule.step()
        test_acc = accuracy(model, x_te, y_te, bs_eval, eval_sess)
        rec = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen, "test_acc": test_acc,
               "lr": lr, "images_per_s": seen / dt, "seconds": dt}
        history.append(rec)
        if checkpoint and par.rank == 0:
            run.save(checkpoint, epoch, history, recompute)
        if history_file is not None and par.rank == 0:
            history.write(history_file)
        log(f"epoch {epoch:2d}/{epochs}  loss {rec['loss']:.4f}  train acc {rec['train_acc']:.4f}  "
            f"test acc {test_acc:.4f}  {rec['images_per_s']:.0f} img/s")
        if checkpoint:
            _after_checkpoint(epoch)
    return history, sess


def iou(logits: np.ndarray, masks: np.ndarray) -> float:
    """Intersection over union of (logits > 0) with binary masks, over the whole set."""
    pred = logits > 0
    truth = masks > 0.5
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def fit_dense(model, x_tr, t_tr, x_te, t_te, epochs, batch_size, optimizer, loss, schedule=None, seed=0,
              progress=True, log=print, metric=None, metric_name="metric", recompute="auto", dtype="float32",
              checkpoint=None, resume=None, config=None, device="cpu", history_file=None, model_name=None,
              distributed=False):
    """Trains a dense-output model (segmentation, denoising) with loss 'mse' or 'bce_with_logits' on float
    targets of the output's shape; metric(pred, target) -> float is reported on the test set per epoch (as
    history[i][metric_name]). Returns (History, session); the history's task is "segment" for
    'bce_with_logits', "denoise" for 'mse'. checkpoint, resume, config, device, history_file, model_name: as
    for fit; distributed: as for fit (batch_size per rank)."""
    from tqdm import tqdm

    par = _Parallel(distributed, log, progress)
    log, progress = par.log, par.progress
    loader = DataLoader(x_tr, t_tr.astype(np.float32), batch_size, shuffle=True, seed=seed, drop_last=True,
                        num_replicas=par.world, rank=par.rank)
    if len(loader) == 0:
        raise ValueError(f"batch size {batch_size * par.world} is larger than the training set ({len(x_tr)} samples)")
    sess = par.session(model, (batch_size,) + tuple(x_tr.shape[1:]), optimizer=optimizer, loss=loss,
                       seed=seed, recompute=recompute, dtype=dtype, device=device)
    bs_eval = min(batch_size, len(x_te))
    eval_sess = model.compile((bs_eval,) + tuple(x_te.shape[1:]), mode="infer", dtype=dtype, device=device)
    run = None
    if checkpoint or resume:
        settings = {"task": "fit_dense", "model": type(model).__name__, "parameters": model.num_parameters(),
                    "batch_size": int(batch_size) * par.world, "seed": int(seed), "dtype": dtype, "loss": loss,
                    "metric": metric_name if metric is not None else None,
                    "optimizer": _optimizer_settings(optimizer), "schedule": _schedule_settings(schedule),
                    "data": fingerprint(x_tr, t_tr, x_te, t_te)}
        run = _Resumable(model, sess, optimizer, schedule, loader, epochs, settings, config, log)
    history = History(model=model_name or type(model).__name__, task=_TASK_OF_LOSS.get(loss),
                      metric=metric_name if metric is not None else None)
    first = _start(run, resume, recompute, epochs, log, history)
    for epoch in range(first, epochs + 1):
        t0 = time.perf_counter()
        lr = float(optimizer.lr)
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
        for i, (xb, tb) in enumerate(bar):
            lv = sess.step(xb, tb)
            history.add_step((epoch - 1) * len(loader) + i + 1, epoch, lv)
            loss_sum += lv * len(xb) * par.world
            seen += len(xb) * par.world
            bar.set_postfix(loss=f"{lv:.4f}")
        bar.close()
        dt = time.perf_counter() - t0
        if schedule is not None:
            schedule.step()
        pred = predict(model, x_te, bs_eval, eval_sess)
        rec = {"epoch": epoch, "loss": loss_sum / seen}
        if metric is not None:
            rec[metric_name] = float(metric(pred, t_te))
        rec.update(lr=lr, images_per_s=seen / dt, seconds=dt)
        history.append(rec)
        if checkpoint and par.rank == 0:
            run.save(checkpoint, epoch, history, recompute)
        if history_file is not None and par.rank == 0:
            history.write(history_file)
        extra = f"  test {metric_name} {rec[metric_name]:.4f}" if metric is not None else ""
        log(f"epoch {epoch:2d}/{epochs}  loss {rec['loss']:.4f}{extra}  {rec['images_per_s']:.0f} img/s")
        if checkpoint:
            _after_checkpoint(epoch)
    return history, sess


def noisy_digits(size=28, noise=0.4, seed=0):
    """Denoising task on the bundled digits in [0, 1]: (noisy_train, clean_train, noisy_test, clean_test)."""
    from .data import load_digits

    x_tr, _, x_te, _, (mean, std) = load_digits(size=size, seed=seed, return_stats=True)
    rng = np.random.default_rng(seed + 1)
    out = []
    for x in (x_tr, x_te):
        clean = np.clip(x * np.float32(std) + np.float32(mean), 0, 1).astype(np.float32)
        noisy = np.clip(clean + rng.normal(0, noise, clean.shape).astype(np.float32), 0, 1)
        out += [noisy, clean]
    return tuple(out)
