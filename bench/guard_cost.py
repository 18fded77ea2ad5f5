"""Step time and optimizer-update time (the session profile's optimizer_update entry, which includes the
divergence guard: a pass over the gradient block and the bound on the update) of a training session, as JSON.
To measure the guard, run it alternately under two builds (with and without it) on the same machine:

    python bench/guard_cost.py resnet18 64 6      # CIFAR ResNet-18, batch 64, 6 timed steps
    python bench/guard_cost.py lenet5 64 400
"""
import json
import sys
import time

import numpy as np

import cnnnative as cn


def main(name="resnet18", bs=64, reps=6):
    cn.set_num_threads(2)
    if name == "resnet18":
        m, shape = cn.models.resnet18(num_classes=10, cifar=True, seed=0), (bs, 3, 32, 32)
    else:
        m, shape = cn.models.lenet5(seed=0), (bs, 1, 28, 28)
    s = m.compile(shape, mode="train", optimizer=cn.optim.SGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, 10, bs).astype(np.int32)
    for _ in range(3):
        s.step(x, y)
    s.profile(reset=True)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        s.step(x, y)
        ts.append(time.perf_counter() - t)
    u = [r for r in s.profile() if r["op"] == "optimizer_update"][0]
    print(json.dumps({"model": name, "params": m.num_parameters(), "step_ms": 1e3 * float(np.median(ts)),
                      "step_min_ms": 1e3 * min(ts), "update_ms": u["ms"]}))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "resnet18", int(a[1]) if len(a) > 1 else 64, int(a[2]) if len(a) > 2 else 6)
