"""Training and evaluation loops used by the CLI (and usable directly): fixed-shape sessions, a
tqdm bar per epoch, per-epoch loss/accuracy/throughput, atomic checkpoint writes."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from .data import DataLoader


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


def save_checkpoint(model, path: str) -> str:
    """Writes the model's state_dict as .npz atomically (temp file + rename); returns the path."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in model.state_dict().items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(model, path: str, strict: bool = True):
    try:
        with np.load(path, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} is not a readable .npz file: {e}") from None
    model.load_state_dict(state, strict=strict)
    return model


def fit(model, data, epochs, batch_size, optimizer, schedule=None, seed=0, progress=True, log=print,
        eval_batch_size=256, transform=None, recompute="none", dtype="float32"):
    """Trains on data = (x_train, y_train, x_test, y_test); returns the history (one dict per epoch).
    recompute: the training session's recomputation mode; dtype='bfloat16': mixed-precision training and
    bf16 evaluation (Module.compile)."""
    from tqdm import tqdm

    x_tr, y_tr, x_te, y_te = data
    num_classes = None
    loader = DataLoader(x_tr, y_tr, batch_size, shuffle=True, seed=seed, drop_last=True, transform=transform)
    if len(loader) == 0:
        raise ValueError(f"batch size {batch_size} is larger than the training set ({len(x_tr)} samples)")
    sess = model.compile((batch_size,) + tuple(x_tr.shape[1:]), mode="train", optimizer=optimizer, seed=seed,
                         recompute=recompute, dtype=dtype)
    num_classes = sess.num_classes
    for name, y in (("train", y_tr), ("test", y_te)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}")
    bs_eval = min(eval_batch_size, len(x_te))
    eval_sess = model.compile((bs_eval,) + tuple(x_te.shape[1:]), mode="infer", dtype=dtype)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        total, correct, loss_sum, seen = 0, 0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
        for xb, yb in bar:
            loss = sess.step(xb, yb)
            correct += int(np.sum(np.argmax(sess.output(), axis=1) == yb))
            seen += len(yb)
            loss_sum += loss * len(yb)
            total += 1
            if total % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
        bar.close()
        dt = time.perf_counter() - t0
        if schedule is not None:
            schedule.step()
        test_acc = accuracy(model, x_te, y_te, bs_eval, eval_sess)
        rec = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen, "test_acc": test_acc,
               "images_per_s": seen / dt, "seconds": dt}
        history.append(rec)
        log(f"epoch {epoch:2d}/{epochs}  loss {rec['loss']:.4f}  train acc {rec['train_acc']:.4f}  "
            f"test acc {test_acc:.4f}  {rec['images_per_s']:.0f} img/s")
    return history, sess


def iou(logits: np.ndarray, masks: np.ndarray) -> float:
    """Intersection over union of (logits > 0) with binary masks, over the whole set."""
    pred = logits > 0
    truth = masks > 0.5
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def fit_dense(model, x_tr, t_tr, x_te, t_te, epochs, batch_size, optimizer, loss, schedule=None, seed=0,
              progress=True, log=print, metric=None, metric_name="metric", recompute="none", dtype="float32"):
    """Trains a dense-output model (segmentation, denoising) with loss 'mse' or 'bce_with_logits' on float
    targets of the output's shape; metric(pred, target) -> float is reported on the test set per epoch."""
    from tqdm import tqdm

    loader = DataLoader(x_tr, t_tr.astype(np.float32), batch_size, shuffle=True, seed=seed, drop_last=True)
    if len(loader) == 0:
        raise ValueError(f"batch size {batch_size} is larger than the training set ({len(x_tr)} samples)")
    sess = model.compile((batch_size,) + tuple(x_tr.shape[1:]), mode="train", optimizer=optimizer, loss=loss,
                         seed=seed, recompute=recompute, dtype=dtype)
    bs_eval = min(batch_size, len(x_te))
    eval_sess = model.compile((bs_eval,) + tuple(x_te.shape[1:]), mode="infer", dtype=dtype)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress, unit="batch")
        for xb, tb in bar:
            lv = sess.step(xb, tb)
            loss_sum += lv * len(xb)
            seen += len(xb)
            bar.set_postfix(loss=f"{lv:.4f}")
        bar.close()
        dt = time.perf_counter() - t0
        if schedule is not None:
            schedule.step()
        pred = predict(model, x_te, bs_eval, eval_sess)
        rec = {"epoch": epoch, "loss": loss_sum / seen, "images_per_s": seen / dt, "seconds": dt}
        if metric is not None:
            rec[metric_name] = metric(pred, t_te)
        history.append(rec)
        extra = f"  test {metric_name} {rec[metric_name]:.4f}" if metric is not None else ""
        log(f"epoch {epoch:2d}/{epochs}  loss {rec['loss']:.4f}{extra}  {rec['images_per_s']:.0f} img/s")
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
