"""ResNet-50 layer1 + layer2 stack: cnnnative vs PyTorch (when installed), as ratios.

    python bench/resnet_block.py [--batch 16] [--reps 5] [--threads 2] [--variants auto,plain] [--profile]

The network is torchvision's resnet50 layer1 (3 Bottlenecks, 64->256 channels at 56x56) and layer2
(4 Bottlenecks, 128->512 at 28x28, stride 2), fed [N, 64, 56, 56] (the stem's output), with a global
average pool and a 512->10 linear head so a training step has a loss. It is built with cnnnative.nn here
and identically with torch.nn (same weights, outputs checked to agree). Workloads:
resnet50_l1l2_infer_mbN (eval, BN running stats) and resnet50_l1l2_train_mbN (one SGD-momentum step).

cnnnative variants (comma-separated): auto (fusion + blocked nChw16c layouts, the default), auto-unfused,
plain (fusion, NCHW everywhere), plain-unfused (the engine before the performance work), nhwc, blocked. PyTorch runs as
given (NCHW) and, with --torch-cl, channels_last. Engines alternate rounds so machine noise hits all of them;
each cell is the median of all rounds. --profile prints per-convolution GFLOP/s and % of the 460 GFLOP/s
fp32 peak of this 2-core AVX-512 machine, from sess.profile().
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

PEAK_GFLOPS = 460.0


def cn_bottleneck(nn, cin, width, stride):
    class Bottleneck(nn.Module):
        def __init__(self):
            super().__init__()
            cout = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = self.downsample(x) if "downsample" in self._modules else x
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + idt)
    return Bottleneck()


def make_layers(nn, bottleneck):
    def layer(cin, width, blocks, stride):
        mods = [bottleneck(nn, cin, width, stride)] + [bottleneck(nn, width * 4, width, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*mods)
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(layer(64, 64, 3, 1), layer(256, 128, 4, 2), *head)


def torch_bottleneck(nn, cin, width, stride):
    class Bottleneck(nn.Module):
        def __init__(self):
            super().__init__()
            cout = width * 4
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + idt)
    return Bottleneck()


def _timeit(fn, reps):
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_rounds(engines, reps, rounds):
    times = {k: [] for k in engines}
    for _ in range(rounds):
        for k, fn in engines.items():
            times[k] += _timeit(fn, reps)
    return times


def print_profile(sess, title):
    print(f"\n{title}: per-convolution time (sess.profile(), median-free mean over the calls)")
    print("| node | op | ms/call | GFLOP/s | % of peak |\n|---|---|---|---|---|")
    for r in sorted(sess.profile(), key=lambda r: r["name"]):
        if r["gflops"] and r["op"] in ("conv2d", "fused_conv2d", "conv2d_grad_data", "conv2d_grad_weights"):
            print(f"| {r['name']} | {r['op']} | {r['ms']:.2f} | {r['gflops']:.1f} | {r['gflops'] / PEAK_GFLOPS:.0%} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per engine per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--variants", default="auto,plain-unfused")
    ap.add_argument("--workloads", default="infer,train")
    ap.add_argument("--torch-cl", action="store_true", help="also time PyTorch with channels_last")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    import cnnnative as cn
    from cnnnative import nn
    from cnnnative.session import Session
    cn.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None

    nn.manual_seed(0)
    net = make_layers(nn, cn_bottleneck)
    rng = np.random.default_rng(0)
    net._ensure_store()
    with cn.no_grad():
        for m in net.modules():  # non-trivial BN statistics, as after training
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean[...] = rng.uniform(-0.1, 0.1, m.num_features)
                m.running_var[...] = rng.uniform(0.5, 1.5, m.num_features)
    N = args.batch
    x = rng.standard_normal((N, 64, 56, 56)).astype(np.float32)
    y = rng.integers(0, 10, N).astype(np.int32)
    variants = {"auto": dict(), "auto-unfused": dict(optimize=False), "plain": dict(layout="plain"),
                "plain-unfused": dict(layout="plain", optimize=False),
                "nhwc": dict(layout="nhwc"), "blocked": dict(layout="blocked")}
    chosen = [v for v in args.variants.split(",") if v]

    tm = None
    if torch is not None:
        tm = make_layers(torch.nn, torch_bottleneck)
        sd = net.state_dict()
        with torch.no_grad():
            for k, v in tm.state_dict().items():
                if k in sd:
                    v.copy_(torch.from_numpy(np.asarray(sd[k], dtype=np.float32)))
        tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {args.threads}, "
          f"float32, batch {N}" + (f", torch {torch.__version__}" if torch else ", torch absent"))
    rows = []
    if "infer" in args.workloads:
        engines, sessions = {}, {}
        for v in chosen:
            s = Session(net, x.shape, **variants[v])
            sessions[v] = s
            engines[f"cnnnative[{v}]"] = (lambda s=s: s.run(x))
        if tm is not None:
            tm.eval()
            with torch.inference_mode():
                out_t = tm(tx).numpy()
            out_c = sessions[chosen[0]].run(x)
            err = float(np.abs(out_t - out_c).max() / (np.abs(out_t).max() + 1e-12))
            print(f"inference check vs torch: max rel err {err:.2e}")

            def tinf():
                with torch.inference_mode():
                    tm(tx)
            engines["pytorch"] = tinf
            if args.torch_cl:
                tmc = make_layers(torch.nn, torch_bottleneck)
                tmc.load_state_dict(tm.state_dict())
                tmc.eval()
                tmc = tmc.to(memory_format=torch.channels_last)
                txc = tx.to(memory_format=torch.channels_last)

                def tinf_cl():
                    with torch.inference_mode():
                        tmc(txc)
                engines["pytorch[channels_last]"] = tinf_cl
        for s in sessions.values():
            s.profile(reset=True)
        rows.append((f"resnet50_l1l2_infer_mb{N}", run_rounds(engines, args.reps, args.rounds)))
        if args.profile:
            for v, s in sessions.items():
                print_profile(s, f"inference, cnnnative[{v}]")
    if "train" in args.workloads:
        engines, sessions = {}, {}
        for v in chosen:
            s = Session(net, x.shape, mode="train", optimizer=cn.optim.SGD(lr=1e-4, momentum=0.9), **variants[v])
            sessions[v] = s
            engines[f"cnnnative[{v}]"] = (lambda s=s: s.step(x, y))
        if tm is not None:
            tm.train()
            topt = torch.optim.SGD(tm.parameters(), lr=1e-4, momentum=0.9)

            def tstep():
                topt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(tm(tx), ty).backward()
                topt.step()
            engines["pytorch"] = tstep
        for s in sessions.values():
            s.profile(reset=True)
        rows.append((f"resnet50_l1l2_train_mb{N}", run_rounds(engines, args.reps, args.rounds)))
        if args.profile:
            for v, s in sessions.items():
                print_profile(s, f"training step, cnnnative[{v}]")

    print("\n| workload | engine | median ms (min-max) | ratio to pytorch |\n|---|---|---|---|")
    for name, times in rows:
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in times.items():
            ratio = f"{med[k] / med['pytorch']:.2f}" if "pytorch" in med else "n/a"
            print(f"| {name} | {k} | {med[k]:.1f} ({min(v):.1f}-{max(v):.1f}) | {ratio} |")


if __name__ == "__main__":
    main()
