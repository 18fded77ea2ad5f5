"""Prepares the inputs of the C++ example `classify`: a trained model file and held-out digit images.

    python examples/cpp/make_assets.py [--out DIR] [--epochs N] [--seed S] [--threads T]

Trains LeNet-5 on scikit-learn's bundled digits (upscaled to 28x28, the same data and settings as
`python -m cnnnative train lenet5`, with deterministic algorithms so that the weights do not depend on the
thread count; about a second) and writes into DIR (default: cpp-assets):
- lenet5.cnn: the trained model as a .cnn file, the format `cnn::load_model` reads. It takes 8-bit grayscale
  pixels scaled to [0, 1], which is what `classify` feeds it (pixel p -> p / 255): the normalization that
  `cnnnative.data.load_digits` applies to its images, (v - mean) / std with the training set's mean and std, is
  part of the saved graph, so the C++ side needs no dataset statistics;
- digit0.pgm ... digit9.pgm: the first image of each class in the held-out test split (never trained on),
  as binary 8-bit PGM (P5, 28x28); digitK.pgm shows the digit K.
Then it loads the written model back, classifies the written images the way `classify` does and prints the
predictions next to the true labels, and the model's accuracy on the whole test split as 8-bit images.
Every file is written atomically (a failed or killed run leaves no partial file).
"""
import argparse
import os
import sys

import numpy as np

import cnnnative as cn
from cnnnative import nn
from cnnnative._atomic import write_atomic

SIZE = 28


class FromPixels(nn.Module):
    """`model` behind the input normalization of its training data: takes pixels in [0, 1]."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.mean, self.std = float(mean), float(std)

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def to_pixels(x, mean, std):
    """Normalized (N, 1, H, W) images of load_digits -> (N, H, W) uint8 pixels (value in [0, 1] times 255)."""
    v = x[:, 0].astype(np.float64) * std + mean
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def pgm_bytes(img):
    h, w = img.shape
    return b"P5\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(img, np.uint8).tobytes()


def read_pgm(path):
    """The pixels of a binary 8-bit PGM, as classify reads them (header tokens, # comments, one whitespace byte)."""
    with open(path, "rb") as f:
        b = f.read()
    if b[:2] != b"P5":
        raise ValueError(f"{path}: not a binary PGM (P5)")
    i, vals = 2, []
    while len(vals) < 3:
        while i < len(b) and b[i:i + 1].isspace():
            i += 1
        if b[i:i + 1] == b"#":
            i = b.index(b"\n", i)
            continue
        j = i
        while j < len(b) and b[j:j + 1].isdigit():
            j += 1
        if j == i:
            raise ValueError(f"{path}: malformed PGM header")
        vals.append(int(b[i:j]))
        i = j
    w, h, maxval = vals
    px = np.frombuffer(b, np.uint8, w * h, i + 1).reshape(h, w)
    return px.astype(np.float32) / np.float32(maxval)


def main(argv=None):
    p = argparse.ArgumentParser(prog="make_assets.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="cpp-assets", help="folder for lenet5.cnn and the digit images (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=12, help="training epochs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, weights and shuffling (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: cnnnative's)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out!r} exists and is not a folder")
    if args.threads is not None:
        try:
            cn.set_num_threads(args.threads)
        except (cn.Error, ValueError) as e:
            p.error(f"--threads {args.threads}: {e}")

    x_tr, y_tr, x_te, y_te, (mean, std) = cn.data.load_digits(size=SIZE, seed=args.seed, return_stats=True)
    model = cn.models.lenet5(seed=args.seed)
    opt = cn.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = cn.optim.CosineAnnealingLR(opt, T_max=args.epochs)
    print(f"training LeNet-5 on the bundled digits: {len(x_tr)} train / {len(x_te)} held-out test images, "
          f"{args.epochs} epochs", flush=True)
    was = cn.are_deterministic_algorithms_enabled()
    cn.use_deterministic_algorithms(True)  # the same weights whatever the thread count
    try:
        history, _ = cn.train.fit(model, (x_tr, y_tr, x_te, y_te), args.epochs, 32, opt, sched, seed=args.seed,
                                  progress=False, log=lambda s: print("  " + s, flush=True))
    finally:
        cn.use_deterministic_algorithms(was)

    os.makedirs(args.out, exist_ok=True)
    model_path = cn.save(FromPixels(model, mean, std), os.path.join(args.out, "lenet5.cnn"), (1, 1, SIZE, SIZE))
    pixels = to_pixels(x_te, mean, std)
    files = []
    for k in range(10):
        i = int(np.flatnonzero(y_te == k)[0])  # the first test image of class k
        files.append(os.path.join(args.out, f"digit{k}.pgm"))
        write_atomic(files[-1], lambda f, img=pixels[i]: f.write(pgm_bytes(img)))

    # check what was written: the saved model on the written images, read back as classify reads them
    saved = cn.load(model_path)
    x = np.stack([read_pgm(f) for f in files])[:, None]
    pred = np.argmax(saved.compile(x.shape).run(x), axis=1)
    for k, (f, c) in enumerate(zip(files, pred)):
        print(f"  {f}: true {k}, predicted {c}{'' if c == k else '  (wrong)'}")
    xt = (pixels.astype(np.float32) / np.float32(255))[:, None]
    acc = float(np.mean(np.argmax(saved.compile(xt.shape).run(xt), axis=1) == y_te))
    print(f"wrote {model_path} (test accuracy {acc:.4f} on the {len(y_te)} held-out digits as 8-bit images; "
          f"in training {history[-1]['test_acc']:.4f}) and {len(files)} digits: {files[0]} ... {files[-1]}")
    print(f"classify them from C++ (examples/cpp built as in docs/cpp.md): ./build-examples/classify {model_path} "
          f"{os.path.join(args.out, 'digit*.pgm')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
