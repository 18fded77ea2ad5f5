"""python -m cnnnative.bench [--device cpu|cuda] ...: the CPU suite (suite.py, against PyTorch and ONNX Runtime) or
the GPU benchmark (cuda.py, against PyTorch with cuDNN on the same GPU)."""
import sys


def _split_device(argv):
    argv, device = list(argv), "cpu"
    for i, a in enumerate(argv):
        if a == "--device" and i + 1 < len(argv):
            device = argv[i + 1]
            del argv[i:i + 2]
            break
        if a.startswith("--device="):
            device = a.split("=", 1)[1]
            del argv[i]
            break
    return argv, device


argv, device = _split_device(sys.argv[1:])
if device not in ("cpu", "cuda"):
    sys.exit(f"--device must be cpu or cuda, got {device!r}")
if device == "cuda":
    from .cuda import main
else:
    from .suite import main
sys.exit(main(argv))
