"""Benchmark suite implementation; see the package docstring."""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# name: (model, model kwargs, input shape (C, H, W), batch, mode[, cnnnative compile kwargs])
WORKLOADS = {
    "resnet50_infer_mb16": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 16, "infer"),
    "resnet50_infer_mb1": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 1, "infer"),
    "resnet18_infer_mb16": ("resnet18", {"num_classes": 1000}, (3, 224, 224), 16, "infer"),
    "lenet5_infer_mb256": ("lenet5", {}, (1, 28, 28), 256, "infer"),
    "lenet5_infer_mb1": ("lenet5", {}, (1, 28, 28), 1, "infer"),
    "lenet5_train_mb64": ("lenet5", {}, (1, 28, 28), 64, "train"),
    "resnet18cifar_train_mb64": ("resnet18", {"num_classes": 10, "cifar": True}, (3, 32, 32), 64, "train"),
    # the default training compile: recompute="auto" = "lean" (docs/ARCHITECTURE.md, "Recomputation")
    "resnet50_train_mb16": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 16, "train"),
    # the opt-out: every activation the backward pass reads kept (the default before issue 16)
    "resnet50_train_mb16_norecompute": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 16, "train",
                                        {"recompute": "none"}),
    # bfloat16 activations (AVX512-BF16 CPUs; skipped elsewhere), against float32 PyTorch and ORT
    "resnet50_infer_mb16_bf16": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 16, "infer",
                                 {"dtype": "bfloat16"}),
    # mixed-precision training (bf16 activations, float32 master weights) against float32 PyTorch
    "resnet18cifar_train_mb64_bf16": ("resnet18", {"num_classes": 10, "cifar": True}, (3, 32, 32), 64, "train",
                                      {"dtype": "bfloat16"}),
    "resnet50_train_mb16_bf16": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 16, "train",
                                 {"dtype": "bfloat16"}),
    # int8 post-training quantization (cnnnative.quantize), against float32 PyTorch / ORT and ORT running the same
    # network quantized by onnxruntime.quantization.quantize_static (QDQ, per-channel int8 weights, uint8
    # activations), both calibrated on the same batches
    **{f"{m}_infer_mb{b}_int8": (m, {"num_classes": 1000} if m != "lenet5" else {},
                                 (3, 224, 224) if m != "lenet5" else (1, 28, 28), b, "infer", {"dtype": "int8"})
       for m, b in (("resnet50", 16), ("resnet50", 1), ("resnet18", 16), ("lenet5", 256))},
    # the direct convolution kernels only (Winograd off), to show what the Winograd path adds
    "resnet18cifar_train_mb64_direct": ("resnet18", {"num_classes": 10, "cifar": True}, (3, 32, 32), 64, "train",
                                        {"winograd": False}),
    # the same step with recomputation (cnnnative keeps only block outputs; PyTorch runs as usual)
    "resnet50_train_mb16_recompute": ("resnet50", {"num_classes": 1000}, (3, 224, 224), 16, "train",
                                      {"recompute": "segments"}),
    # the CNNs people deploy (issue 13), inference against ORT at b1 and b16
    **{f"{m}_infer_mb{b}": (m, {"num_classes": 1000}, (3, 224, 224), b, "infer")
       for m in ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0", "densenet121",
                 "squeezenet1_1", "googlenet") for b in (1, 16)},
}


def _spec(workload):
    w = WORKLOADS[workload]
    return w[:5] + ((w[5] if len(w) > 5 else {}),)
QUICK = ["lenet5_infer_mb256", "lenet5_infer_mb1", "lenet5_train_mb64", "resnet18_infer_mb16"]


def _calibration(workload):
    """Calibration batches for the int8 workloads, from the inputs' distribution (not the timed input itself):
    at least 32 samples, in batches of the workload's batch size (the exported ONNX model's fixed batch)."""
    _, _, chw, bs, _, _ = _spec(workload)
    rng = np.random.default_rng(1)
    return [rng.standard_normal((bs,) + chw).astype(np.float32) for _ in range(max(1, 32 // bs))]


def _compile_kw(workload):
    """cnnnative compile kwargs of a workload (the int8 ones with their calibration batches)."""
    ckw = dict(_spec(workload)[5])
    if ckw.get("dtype") == "int8":
        ckw["calibration"] = _calibration(workload)
    return ckw


def _ort_quantize(workload, src):
    """The float ONNX file `src` quantized by ONNX Runtime's quantize_static (QDQ, per-channel int8 weights, uint8
    activations, min-max calibration on the workload's calibration batches) after ORT's recommended pre-processing
    (quant_pre_process: graph optimization, so folded biases are initializers, and shape inference); returns the
    new file."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": b} for b in _calibration(workload)])

        def get_next(self):
            return next(self.it, None)
    pre, dst = src[:-5] + "_pre.onnx", src[:-5] + "_int8.onnx"
    quant_pre_process(src, pre)
    quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    os.unlink(pre)
    return dst


def _build(workload):
    """cnnnative model, PyTorch twin (or None) with identical weights, input x and labels y."""
    import cnnnative as cn

    name, kw, chw, bs, mode, _ = _spec(workload)
    model = cn.models.get_model(name, seed=0, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((bs,) + chw).astype(np.float32)
    ncls = kw.get("num_classes", 10)
    y = rng.integers(0, ncls, bs).astype(np.int32)
    twin = None
    try:
        import torch

        from . import torch_models, torch_models_modern
        from ..models_modern import MODERN_MODELS
        build = torch_models_modern.build if name in MODERN_MODELS else torch_models.build
        twin = build(name, num_classes=ncls, **{k: v for k, v in kw.items() if k != "num_classes"})
        twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    except ImportError:
        pass
    return model, twin, x, y, mode


def _engines(workload, threads, check=True, percall=False):
    """Returns {engine: zero-arg callable}, the model FLOPs per call, and an agreement note. percall: also
    'cnnnative_percall', inference with weights prepared on every run (cache_weights=False), for comparison."""
    import cnnnative as cn

    model, twin, x, y, mode = _build(workload)
    ckw = _compile_kw(workload)
    int8 = ckw.get("dtype") == "int8"
    engines, note = {}, ""
    if mode == "infer":
        sess = model.compile(x.shape, mode="infer", **ckw)
        engines["cnnnative"] = lambda: sess.run(x)
        ours = sess.run(x)
        if percall:
            sess_pc = model.compile(x.shape, mode="infer", cache_weights=False, **ckw)
            engines["cnnnative_percall"] = lambda: sess_pc.run(x)
            if not np.array_equal(sess_pc.run(x), ours):
                raise RuntimeError(f"{workload}: cached and per-call prepared weights give different outputs")
    else:
        sess = model.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9), **ckw)
        engines["cnnnative"] = lambda: sess.step(x, y)
    flops = sum(r["flops"] for r in sess._s.profile())
    if twin is not None:
        import torch
        torch.set_num_threads(threads)
        tx = torch.from_numpy(x)
        if mode == "infer":
            twin.eval()
            with torch.inference_mode():
                ref = twin(tx).numpy()
            err = float(np.max(np.abs(ours - ref)) / (np.max(np.abs(ref)) + 1e-12))
            tol = 5e-2 if ckw.get("dtype") == "bfloat16" else 0.25 if int8 else 1e-3
            if check and err > tol:
                raise RuntimeError(f"{workload}: cnnnative and PyTorch outputs differ (rel err {err:.2e})")
            note = f"max rel err vs PyTorch {err:.1e}"
            if ckw.get("dtype") in ("bfloat16", "int8"):
                note += f", top-1 agreement {float(np.mean(ours.argmax(1) == ref.argmax(1))):.3f}"
            if int8:
                cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
                note += f", min cosine {float(cos.min()):.4f}"
                if check and cos.min() < 0.99:
                    raise RuntimeError(f"{workload}: int8 output's cosine to float32 {cos.min():.4f} < 0.99")

            def t_infer():
                with torch.inference_mode():
                    twin(tx)
            engines["pytorch"] = t_infer
            try:
                import onnxruntime as ort
                f = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
                f.close()
                torch.onnx.export(twin, tx, f.name, opset_version=17, dynamo=False,
                                  input_names=["x"], output_names=["y"])
                so = ort.SessionOptions()
                so.intra_op_num_threads = threads
                so.inter_op_num_threads = 1
                # idle ORT threads must not spin on the cores the other engines run on next
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                osess = ort.InferenceSession(f.name, so, providers=["CPUExecutionProvider"])
                _ONNX_FILES[workload] = f.name
                oref = osess.run(None, {"x": x})[0]
                oerr = float(np.max(np.abs(oref - ours)) / (np.max(np.abs(oref)) + 1e-12))
                if check and oerr > tol:
                    raise RuntimeError(f"{workload}: cnnnative and ONNX Runtime outputs differ ({oerr:.2e})")
                note += f", vs ORT {oerr:.1e}"
                engines["onnxruntime"] = lambda: osess.run(None, {"x": x})
                if int8:
                    qpath = _ort_quantize(workload, f.name)
                    _ONNX_FILES[workload + ":int8"] = qpath
                    qsess = ort.InferenceSession(qpath, so, providers=["CPUExecutionProvider"])
                    qref = qsess.run(None, {"x": x})[0]
                    note += f", ORT int8 top-1 agreement {float(np.mean(qref.argmax(1) == ref.argmax(1))):.3f}"
                    engines["onnxruntime_int8"] = lambda: qsess.run(None, {"x": x})
            except ImportError:
                pass
        else:
            engines["pytorch"] = torch_train_step(twin, x, y)
    return engines, flops, note, x.shape[0], sess


def torch_train_step(twin, x, y):
    """The PyTorch eager training step the suite times: SGD with momentum (lr 1e-3, as cnnnative's), cross
    entropy, on the twin in train mode."""
    import torch
    twin.train()
    opt = torch.optim.SGD(twin.parameters(), lr=1e-3, momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(twin(tx), ty).backward()
        opt.step()
    return step


_ONNX_FILES = {}  # workload -> exported .onnx (for the ORT fresh-process run), removed after use


def _time(engines, rounds, reps, warmup=2, after=None):
    """{engine: [ms per call]}: `warmup` calls of each engine, then `rounds` rounds in which each engine in turn
    makes `reps` timed calls. after(engine), when given, follows every timed call (outside the timing)."""
    times = {k: [] for k in engines}
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    for _ in range(rounds):
        for k, fn in engines.items():
            time.sleep(0.02)  # let the previous engine's OpenMP threads stop spinning before timing this one
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
                if after is not None:
                    after(k)
    return times


# A CPU-bound process that dies with the process that started it (PR_SET_PDEATHSIG = 1), even one killed by
# SIGKILL, so an interrupted benchmark never leaves a core spinning.
_LOAD_CODE = ("import ctypes, os, signal, sys\n"
              "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
              "if os.getppid() != int(sys.argv[1]):\n"
              "    sys.exit(0)\n"
              "while True:\n"
              "    pass\n")


class BackgroundLoad:
    """`n` CPU-bound processes (another user's compile or training job on a shared machine) that the suite starts
    for its busy rounds and stops after them: start() and stop() may be called in any order and any number of
    times; leaving a `with` block, an exception or Ctrl-C included, stops them, and each process also dies with
    its parent (Linux), so none outlives the benchmark."""

    def __init__(self, n: int):
        if n < 0:
            raise ValueError(f"a background load is a count of processes >= 0, got {n}")
        self.n = n
        self.procs: list[subprocess.Popen] = []

    @property
    def running(self) -> bool:
        return bool(self.procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        if self.procs or not self.n:
            return
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen([sys.executable, "-c", _LOAD_CODE, str(os.getpid())],
                                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _settle(engines, seconds, runs=12):
    """What a condition's rounds start with, untimed: the engines in turn for `seconds` (each at least once), then
    cnnnative alone until it made `runs` runs, so the load (or its end) has reached every engine and cnnnative's
    automatic thread count has followed it (the governor's count holds after 3 runs and ~0.5 s; under load a
    session then times 3 runs at that count and a probe of 4 at the other: docs/ARCHITECTURE.md, "Threads")."""
    end, made = time.perf_counter() + seconds, 0
    while True:
        for k, fn in engines.items():
            fn()
            made += k == "cnnnative"
        if time.perf_counter() >= end:
            break
    for _ in range(runs - made):
        engines["cnnnative"]()


def _time_conditions(engines, rounds, reps, conditions, load, settle_s, sess):
    """Times the engines under each condition ("quiet": no load, "busy": `load` running) in alternating blocks
    (quiet busy | busy quiet | quiet busy ...), the engines alternating inside each block as in _time. Returns
    {condition: {engine: [ms]}}, {condition: Counter(cnnnative's thread count per timed run)} and {condition:
    [1-minute load average at each block's start]}."""
    times = {c: {k: [] for k in engines} for c in conditions}
    threads = {c: collections.Counter() for c in conditions}
    loadavg = {c: [] for c in conditions}
    for rnd in range(rounds):
        for c in (conditions if rnd % 2 == 0 else conditions[::-1]):
            if c == "busy":
                load.start()
            else:
                load.stop()
            _settle(engines, settle_s)
            loadavg[c].append(os.getloadavg()[0])

            def after(k, c=c):
                if k == "cnnnative":  # "2p": 2 workers on batch pieces (Session.batch_pieces)
                    pieces = getattr(sess, "batch_pieces", None)
                    threads[c][f"{sess.num_threads}p" if pieces else sess.num_threads] += 1
            for k, v in _time(engines, 1, reps, warmup=0, after=after).items():
                times[c][k].extend(v)
    load.stop()
    return times, threads, loadavg


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_kib():
    """This process's peak resident set (VmHWM, KiB). Unlike getrusage's ru_maxrss it starts afresh at
    exec, so a child forked from a large parent does not inherit the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(workload, engine, threads):
    """Fresh process: peak RSS increase of building and running one engine on one workload. The
    baseline is taken after that engine's libraries are imported (and, for ORT, the model exported)."""
    name, kw, chw, bs, mode, ckw = _spec(workload)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((bs,) + chw).astype(np.float32)
    ncls = kw.get("num_classes", 10)
    y = rng.integers(0, ncls, bs).astype(np.int32)
    rss = _peak_rss_kib
    import cnnnative as cn
    if threads is not None:
        cn.set_num_threads(threads)
    threads_ref = cn.get_num_threads()  # auto mode: the count a quiet machine gets
    if engine in ("cnnnative", "cnnnative_percall"):
        base = rss()
        model = cn.models.get_model(name, seed=0, **kw)
        if mode == "infer":
            sess = model.compile(x.shape, cache_weights=engine == "cnnnative", **_compile_kw(workload))
            fn = lambda: sess.run(x)
        else:
            sess = model.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=1e-3, momentum=0.9), **ckw)
            fn = lambda: sess.step(x, y)
    else:
        import torch

        from .torch_models import build
        torch.set_num_threads(threads_ref)
        twin = build(name, num_classes=ncls, **{k: v for k, v in kw.items() if k != "num_classes"})
        tx = torch.from_numpy(x)
        if engine == "pytorch":
            base = rss()
            if mode == "infer":
                twin.eval()

                def fn():
                    with torch.inference_mode():
                        twin(tx)
            else:
                fn = torch_train_step(twin, x, y)
        else:
            import onnxruntime as ort
            path = os.environ.get("CNN_BENCH_ONNX")
            if not path:
                raise RuntimeError("the onnxruntime child needs CNN_BENCH_ONNX (an exported model)")
            del twin
            base = rss()
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads_ref
            osess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            fn = lambda: osess.run(None, {"x": x})
    for _ in range(3):
        fn()
    print(json.dumps({"rss_increase_mib": (rss() - base) / 1024}))


def _rss(workload, engine, threads):
    env = dict(os.environ)
    if engine.startswith("onnxruntime"):
        env["CNN_BENCH_ONNX"] = _ONNX_FILES.get(workload + (":int8" if engine.endswith("int8") else ""), "")
    cmd = [sys.executable, "-m", "cnnnative.bench", "--child", workload, engine]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])["rss_increase_mib"]
    except (IndexError, ValueError, KeyError):
        return None


def _chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r["workload"] + (f" ({r['machine']})" if r.get("machine", "quiet") != "quiet" else "") for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(rows)))
    ys = np.arange(len(rows))
    for off, key, label in ((-0.2, "ratio_vs_pytorch", "cnnnative / PyTorch"),
                            (0.2, "ratio_vs_onnxruntime", "cnnnative / ONNX Runtime")):
        vals = [r.get(key) or 0 for r in rows]
        ax.barh(ys + off, vals, height=0.38, label=label)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(ys, names)
    ax.set_xlabel("time ratio (lower is better for cnnnative)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _threads_arg(v):
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a thread count >= 1 or 'auto', got {v!r}")
    return n


def _stats(v, bs, flops, pk):
    med = statistics.median(v)
    return {"median_ms": med, "mean_ms": statistics.fmean(v), "min_ms": min(v), "max_ms": max(v),
            "images_per_s": bs / med * 1e3, "gflops": flops / med * 1e-6, "pct_peak": flops / med * 1e-6 / pk * 100}


def _compare_table(rows, conditions):
    """Markdown: per workload, the ratios of each condition side by side and what the load did to each engine."""
    by = collections.defaultdict(dict)
    for r in rows:
        by[r["workload"]][r["machine"]] = r
    refs = [k for k in ("pytorch", "onnxruntime", "onnxruntime_int8") if any(f"ratio_vs_{k}" in r for r in rows)]
    label = {"pytorch": "PyTorch", "onnxruntime": "ORT", "onnxruntime_int8": "ORT int8"}
    head = ["workload"] + [f"{c}: cnnnative / {label[k]}, median (mean)" for k in refs for c in conditions]
    head += [f"{label.get(e, e)} busy / quiet, median (mean)" for e in ["cnnnative"] + refs] if len(conditions) > 1 else []
    head += [f"cnnnative threads ({c}: runs)" for c in conditions]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w, per in by.items():
        cells = [w]
        for k in refs:
            for c in conditions:
                v, m = per[c].get(f"ratio_vs_{k}"), per[c].get(f"mean_ratio_vs_{k}")
                cells.append(f"{v:.2f} ({m:.2f})" if v is not None else "-")
        if len(conditions) > 1:
            for e in ["cnnnative"] + refs:
                q, b = per["quiet"].get(e), per["busy"].get(e)
                cells.append(f"{b['median_ms'] / q['median_ms']:.2f}x ({b['mean_ms'] / q['mean_ms']:.2f}x)"
                             if q and b else "-")
        for c in conditions:
            cells.append(str(per[c].get("cnnnative_threads", "-")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cnnnative.bench")
    ap.add_argument("--quick", action="store_true", help="small workloads, few reps (< 3 minutes)")
    ap.add_argument("--workloads", default=None, help="comma-separated names (default: all)")
    ap.add_argument("--only", default=None,
                    help="comma-separated substrings: the workloads whose name contains one (e.g. resnet50_infer)")
    ap.add_argument("--percall", action="store_true",
                    help="also time cnnnative with weights prepared on every run (cache_weights=False)")
    ap.add_argument("--threads", type=_threads_arg, default=None,
                    help="N: every engine runs N threads; 'auto': cnnnative's count follows the machine's load "
                         "(cn.set_num_threads('auto')). Default: cnnnative's default (auto, or OMP_NUM_THREADS). "
                         "PyTorch and ORT run cn.get_num_threads() threads (N, or the CPUs)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--background-load", type=int, default=0, metavar="N",
                    help="run N CPU-bound processes during the timed rounds (a busy machine; rows labelled busy) "
                         "and stop them at the end")
    ap.add_argument("--compare-quiet", action="store_true",
                    help="with --background-load: time every workload quiet and busy in alternating blocks and "
                         "print their ratios side by side")
    ap.add_argument("--settle", type=float, default=1.5, metavar="SECONDS",
                    help="with --background-load: seconds of untimed calls of every engine at the start of each "
                         "quiet or busy block, then cnnnative alone up to 12 runs (auto mode follows the load)")
    ap.add_argument("--out", default="bench_results", help="folder for results.md/json/png")
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process peak RSS runs")
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "ENGINE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.background_load < 0:
        ap.error(f"--background-load takes a count of processes >= 0, got {args.background_load}")
    if args.compare_quiet and not args.background_load:
        ap.error("--compare-quiet compares with a busy machine: give --background-load N")
    if args.settle < 0:
        ap.error(f"--settle takes seconds >= 0, got {args.settle}")
    import cnnnative as cn
    from cnnnative import _core

    if args.child:
        _child(args.child[0], args.child[1], args.threads)
        return 0
    if args.threads is not None:
        cn.set_num_threads(args.threads)
    ref_threads = cn.get_num_threads()  # the reference engines' count: the fixed one, or auto mode's maximum
    names = args.workloads.split(",") if args.workloads else (QUICK if args.quick else list(WORKLOADS))
    for n in names:
        if n not in WORKLOADS:
            ap.error(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}")
    if args.only:
        subs = [s for s in args.only.split(",") if s]
        names = [n for n in (names if args.workloads else WORKLOADS) if any(s in n for s in subs)]
        if not names:
            ap.error(f"--only {args.only!r} matches no workload; known: {', '.join(WORKLOADS)}")
    if not cn.has_bf16():
        names = [n for n in names if _spec(n)[5].get("dtype") != "bfloat16"]
    peak, lanes = max(_core.fma_peak_gflops(20_000_000) for _ in range(3))
    bpeak = max(_core.bf16_peak_gflops(20_000_000) for _ in range(3))
    rounds = args.rounds or (3 if args.quick else 5)
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "absent"
    try:
        import onnxruntime
        ov = onnxruntime.__version__
    except ImportError:
        ov = "absent"
    conditions = (["quiet", "busy"] if args.compare_quiet else ["busy"]) if args.background_load else ["quiet"]
    bf = f", bf16 dot-product peak {bpeak:.0f} GFLOP/s" if bpeak else ""
    mode = cn.threads_info()["mode"]
    th = f"{ref_threads}" if mode != "auto" else f"auto (up to {ref_threads}; PyTorch and ORT {ref_threads})"
    head = (f"machine: {_cpu_model()}, {platform.machine()}, {os.cpu_count()} cores, threads {th}, float32; "
            f"measured FMA peak {peak:.0f} GFLOP/s ({lanes} lanes){bf}; cnnnative {cn.__version__}, torch {tv}, "
            f"onnxruntime {ov}")
    if args.background_load:
        n = args.background_load
        head += (f"; busy = {n} CPU-bound process{'es' if n > 1 else ''} started by the suite"
                 + (", quiet and busy blocks alternating" if args.compare_quiet else ""))
    load_start = os.getloadavg()
    head += f"; load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    print(head, flush=True)
    # a SIGTERM unwinds like Ctrl-C, so the background load stops (it also dies with this process: _LOAD_CODE)
    if args.background_load:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    with BackgroundLoad(args.background_load) as load:
        for n in names:
            engines, flops, note, bs, sess = _engines(n, ref_threads, percall=args.percall)
            one = statistics.median(_time({"cnnnative": engines["cnnnative"]}, 1, 2)["cnnnative"])
            reps = max(1, min(50, int((300 if args.quick else 1500) / max(one, 1e-3) / rounds / len(engines))))
            if args.background_load:
                times, threads, loadavg = _time_conditions(engines, rounds, reps, conditions, load, args.settle,
                                                           sess)
            else:
                threads = {"quiet": collections.Counter()}

                def after(k):
                    if k == "cnnnative":
                        threads["quiet"][sess.num_threads] += 1
                times = {"quiet": _time(engines, rounds, reps, after=after)}
                loadavg = {"quiet": [os.getloadavg()[0]]}
            rss = {k: (_rss(n, k, args.threads) if not args.no_rss else None) for k in engines}
            for c in conditions:
                row = {"workload": n, "machine": c, "note": note, "flops": flops, "reps": rounds * reps,
                       "cnnnative_threads": dict(sorted(threads[c].items(), key=lambda kv: str(kv[0]))),
                       "load_average": [round(a, 2) for a in loadavg[c]]}
                for k, v in times[c].items():
                    pk = bpeak if k.startswith("cnnnative") and _spec(n)[5].get("dtype") == "bfloat16" else peak
                    row[k] = _stats(v, bs, flops, pk)
                    if not args.no_rss:
                        row[k]["rss_increase_mib"] = rss[k]
                for k in ("cnnnative_percall", "pytorch", "onnxruntime", "onnxruntime_int8"):
                    if k in row:
                        row[f"ratio_vs_{k}"] = row["cnnnative"]["median_ms"] / row[k]["median_ms"]
                        row[f"mean_ratio_vs_{k}"] = row["cnnnative"]["mean_ms"] / row[k]["mean_ms"]
                rows.append(row)
                print(f"{n}{'' if c == 'quiet' and not args.background_load else f' ({c})'}: "
                      + ", ".join(f"{k} {row[k]['median_ms']:.2f} ms" for k in times[c])
                      + f"; cnnnative threads {row['cnnnative_threads']}, load average {row['load_average']}"
                      + f" ({note})", flush=True)
            for key in (n, n + ":int8"):
                if workload_onnx := _ONNX_FILES.pop(key, None):
                    os.unlink(workload_onnx)
    load_end = os.getloadavg()
    lines = [head, "", "| workload | engine | median ms (min-max) | img/s | GFLOP/s | % peak | peak RSS +MiB | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = r["workload"] + (f" ({r['machine']})" if args.background_load else "")
        for k in ("cnnnative", "cnnnative_percall", "pytorch", "onnxruntime", "onnxruntime_int8"):
            if k not in r:
                continue
            e = r[k]
            rss = f"{e['rss_increase_mib']:.0f}" if e.get("rss_increase_mib") is not None else "-"
            ratio = "1.00" if k == "cnnnative" else f"{r['cnnnative']['median_ms'] / e['median_ms']:.2f}"
            lines.append(f"| {label} | {k} | {e['median_ms']:.2f} ({e['min_ms']:.2f}-{e['max_ms']:.2f}) | "
                         f"{e['images_per_s']:.0f} | {e['gflops']:.1f} | {e['pct_peak']:.1f} | {rss} | {ratio} |")
    lines.append("")
    lines.append("ratio = cnnnative median time / that engine's median time (below 1: cnnnative faster). "
                 "% peak: of the float32 FMA peak, or for cnnnative's bfloat16 rows of the bf16 dot-product peak (int8 "
                 "rows: of the float32 peak too, so above 100 % is possible). *_int8 workloads: cnnnative int8, "
                 "PyTorch and onnxruntime float32, onnxruntime_int8 the QDQ model of quantize_static.")
    if args.background_load:
        lines += ["", *_compare_table(rows, conditions), "",
                  "Ratios of medians, and in parentheses of means (the throughput of back-to-back runs: on a busy "
                  "machine the runs that lost the CPU to the load count in full, and a run shorter than the "
                  "scheduler's time slice either gets the second CPU or not, so its times have two modes and the "
                  "median picks one). busy / quiet: an engine's busy median (mean) over its quiet median (mean). "
                  "cnnnative threads: the thread count "
                  "of its timed runs (auto mode follows the load; 2p: the batch in pieces over 2 workers)."]
    lines.append(f"load average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    md = "\n".join(lines)
    print()
    print(md)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"header": head, "peak_gflops": peak, "cpu_model": _cpu_model(), "threads": th,
                   "background_load": args.background_load, "conditions": conditions,
                   "load_average_start": load_start, "load_average_end": load_end, "rows": rows}, f, indent=1)
    png = _chart(rows, os.path.join(args.out, "ratios.png"))
    print(f"\nwrote {args.out}/results.md, results.json" + (", ratios.png" if png else " (no matplotlib: no chart)"))
    return 0
