"""A mutation fuzz pass over cnnnative.onnx.import_model, beside the .cnn loader's (test_fuzz_smoke.py): a few
valid models (LeNet-5 as exported by cnnnative, a ResNet basic block, a model of shape arithmetic with
Shape/Gather/Concat/Reshape/Softmax, one with Pad/Slice/Resize/ConvTranspose/LRN/pools) are mutated at random
but reproducibly (case i of seed s always gives the same model): attribute integers set to extreme values (0,
-1, 2^31, 2^40, ...) or lists replaced by empty or huge ones, floats set to nan/inf, axes moved, attributes
dropped, retyped or invented, node inputs dropped, duplicated or rewired (undefined names, cycles), outputs
renamed onto others, op types swapped, graph input dims changed, initializer bytes/dims/types corrupted,
external-data references added, nodes reordered, the opset changed, huge Range/ConstantOfShape/Expand nodes
inserted, and a few serialized files cut or bit-flipped. Each mutant must import or raise a documented error
(InvalidModelError, UnsupportedError: never IndexError, KeyError, TypeError, ZeroDivisionError, OverflowError,
MemoryError, a RuntimeError, an "internal error", a hang or a crash); one that imports with a complete input
shape is compiled (errors: cnnnative.Error or the ONNX errors) and run once.

The cases run in a child process whose address space is capped (RLIMIT_AS: its size after start-up + 1 GiB)
and whose folding budget is lowered to 16 MiB per constant / 64 MiB in all, so that a runaway allocation
shows up as a MemoryError instead of exhausting the machine; each case has a 20 s alarm. The child prints
one JSON line per case; a crash or a hang is attributed to the case it had started. Reproduce case I of
seed S with `python tests/test_onnx_fuzz.py S I I+1 -v`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="uses Linux's /proc")

HERE = os.path.dirname(os.path.abspath(__file__))

EXTREME_INTS = [0, -1, 1, 2, 3, 7, -2, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), 2 ** 40, -(2 ** 40), 2 ** 62, 2 ** 63 - 1,
                -(2 ** 63)]
EXTREME_FLOATS = [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e30, -1e-30, 2.0]
OP_TYPES = ["Add", "AveragePool", "BatchNormalization", "Concat", "Constant", "Conv", "ConvTranspose", "Div",
            "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Identity", "LeakyRelu", "LRN",
            "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape", "Resize", "Sigmoid", "Slice", "Softmax",
            "Squeeze", "Sub", "Sum", "Tanh", "Unsqueeze", "Upsample", "Cast", "ConstantOfShape", "Expand",
            "Gather", "Range", "Shape", "Transpose", "Where", "Tile", "Split", "If", "Foo", "Linear", "Affine",
            "$Linear", "$Affine", "?"]


# ---------------------------------------------------------------------------------------------------
# seed models


def _seeds():
    """{name: ModelProto} of valid models that import and compile."""
    import cnnnative as cn
    import cnnnative.onnx as cno
    from onnx import TensorProto, helper as H, numpy_helper as nh

    rng = np.random.default_rng(7)

    def w(*s):
        return rng.standard_normal(s).astype(np.float32) * 0.3

    def vi(n, s):
        return H.make_tensor_value_info(n, TensorProto.FLOAT, s)

    def model(nodes, x_shape, inits, opset=17):
        g = H.make_graph(nodes, "g", [vi("x", x_shape)], [vi("y", None)],
                         [nh.from_array(np.asarray(v), k) for k, v in inits.items()])
        m = H.make_model(g, opset_imports=[H.make_opsetid("", opset)])
        m.ir_version = 8
        return m

    cn.manual_seed(0)
    seeds = {"lenet5": cno.export_model(cn.models.lenet5(), None, (1, 1, 28, 28), check=False)}
    seeds["resblock"] = model([
        H.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[1, 1]),
        H.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"], name="bn1", epsilon=1e-5),
        H.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        H.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], dilations=[1, 1], group=1),
        H.make_node("BatchNormalization", ["c2", "g2", "b2", "m2", "v2"], ["n2"], name="bn2"),
        H.make_node("Add", ["n2", "x"], ["s"], name="add"),
        H.make_node("Relu", ["s"], ["r2"], name="relu2"),
        H.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        H.make_node("GlobalAveragePool", ["p"], ["gp"], name="gap"),
        H.make_node("Flatten", ["gp"], ["f"], name="flat", axis=1),
        H.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1, alpha=1.0, beta=1.0),
    ], ["N", 4, 8, 8], {"w1": w(4, 4, 3, 3), "g1": np.ones(4, np.float32), "b1": w(4), "m1": w(4),
                        "v1": np.ones(4, np.float32), "w2": w(4, 4, 3, 3), "g2": np.ones(4, np.float32), "b2": w(4),
                        "m2": w(4), "v2": np.ones(4, np.float32), "fw": w(3, 4), "fb": w(3)})
    seeds["shapes"] = model([
        H.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        H.make_node("Sigmoid", ["c"], ["sg"], name="sig"),
        H.make_node("Concat", ["c", "sg"], ["cat"], name="cat", axis=1),
        H.make_node("Shape", ["cat"], ["shp"], name="shape"),
        H.make_node("Gather", ["shp", "zero"], ["n"], name="gather", axis=0),
        H.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq"),
        H.make_node("Concat", ["n1", "minus1"], ["tgt"], name="cat_shape", axis=0),
        H.make_node("Reshape", ["cat", "tgt"], ["flat"], name="reshape"),
        H.make_node("MatMul", ["flat", "mw"], ["mm"], name="matmul"),
        H.make_node("Mul", ["mm", "scale"], ["ms"], name="mul"),
        H.make_node("Softmax", ["ms"], ["y"], name="softmax", axis=-1),
    ], ["N", 2, 4, 4], {"w": w(3, 2, 3, 3), "zero": np.array(0, np.int64), "ax0": np.array([0], np.int64),
                        "minus1": np.array([-1], np.int64), "mw": w(96, 5), "scale": np.array(0.5, np.float32)})
    seeds["misc"] = model([
        H.make_node("Pad", ["x", "pads", "pv"], ["pd"], name="pad", mode="constant"),
        H.make_node("Slice", ["pd", "st", "en", "axs", "stp"], ["sl"], name="slice"),
        H.make_node("Resize", ["sl", "", "scales"], ["rs"], name="resize", mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        H.make_node("ConvTranspose", ["rs", "tw", "tb"], ["ct"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
                    output_padding=[1, 1]),
        H.make_node("LRN", ["ct"], ["lrn"], name="lrn", size=3, alpha=1e-4, beta=0.75, bias=1.0),
        H.make_node("AveragePool", ["lrn"], ["ap"], name="avg", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                    count_include_pad=1, ceil_mode=0),
        H.make_node("Dropout", ["ap"], ["dp"], name="drop"),
        H.make_node("LeakyRelu", ["dp"], ["lr"], name="lrelu", alpha=0.1),
        H.make_node("Sub", ["lr", "shift"], ["sb"], name="sub"),
        H.make_node("Squeeze", ["sb", "sqax"], ["sq"], name="squeeze"),
        H.make_node("Unsqueeze", ["sq", "sqax"], ["us"], name="unsqueeze"),
        H.make_node("GlobalMaxPool", ["us"], ["y"], name="gmp"),
    ], [1, 2, 6, 6], {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pv": np.array(0.0, np.float32),
                      "st": np.array([1, 1], np.int64), "en": np.array([7, 7], np.int64),
                      "axs": np.array([2, 3], np.int64), "stp": np.array([1, 1], np.int64),
                      "scales": np.array([1, 1, 2, 2], np.float32), "tw": w(2, 3, 3, 3), "tb": w(3),
                      "shift": np.array([0.5, -0.5, 1.0], np.float32).reshape(1, 3, 1, 1),
                      "sqax": np.array([0], np.int64)})
    return seeds


# ---------------------------------------------------------------------------------------------------
# mutations


def _mutate(seed_model, rng):
    """A mutated copy of seed_model (a ModelProto), or serialized bytes for a byte-level mutation."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(seed_model)
    g = m.graph

    def pick(seq):
        return seq[int(rng.integers(len(seq)))] if len(seq) else None

    def value_names():
        out = [v.name for v in g.input] + [t.name for t in g.initializer]
        for n in g.node:
            out += list(n.output)
        return out

    for _ in range(int(rng.integers(1, 4))):
        try:
            out = _mutate_once(m, g, rng, pick, value_names)
        except Exception:  # noqa: BLE001 - the mutator tripping over an earlier mutation: try another
            continue
        if out is not None:
            return out
    return m


def _mutate_once(m, g, rng, pick, value_names):
    """One mutation of m in place; serialized bytes for a byte-level one, else None."""
    import onnx
    from onnx import AttributeProto as A, TensorProto, helper as H, numpy_helper as nh

    kind = int(rng.integers(18))
    node = pick(g.node)
    if kind == 0 and node is not None:  # extreme integers in an attribute
        attrs = [a for a in node.attribute if a.type in (A.INT, A.INTS)]
        a = pick(attrs)
        if a is None:
            return None
        if a.type == A.INT:
            a.i = pick(EXTREME_INTS)
        elif rng.random() < 0.2:
            del a.ints[:]
            a.ints.extend([pick(EXTREME_INTS)] * int(rng.choice([0, 1, 3, 5, 5000])))
        elif len(a.ints):
            a.ints[int(rng.integers(len(a.ints)))] = pick(EXTREME_INTS)
    elif kind == 1 and node is not None:  # floats
        a = pick([a for a in node.attribute if a.type in (A.FLOAT, A.FLOATS)])
        if a is not None and a.type == A.FLOAT:
            a.f = pick(EXTREME_FLOATS)
        elif a is not None and len(a.floats):
            a.floats[0] = pick(EXTREME_FLOATS)
    elif kind == 2 and node is not None:  # an axis anywhere in [-6, 6]
        for a in node.attribute:
            if a.name == "axis":
                a.i = int(rng.integers(-6, 7))
                break
        else:
            node.attribute.append(H.make_attribute("axis", int(rng.integers(-6, 7))))
    elif kind == 3 and node is not None:  # drop, invent or retype an attribute
        r = rng.random()
        if r < 0.4 and len(node.attribute):
            del node.attribute[int(rng.integers(len(node.attribute)))]
        elif r < 0.7:
            node.attribute.append(H.make_attribute(pick(["foo", "axis", "strides", "pads", "kernel_shape",
                                                         "to", "perm", "group", "value"]),
                                                   pick([3, [1, 2], 2.5, "x", [0.5, 1.0]])))
        elif len(node.attribute):
            a = node.attribute[int(rng.integers(len(node.attribute)))]
            name = a.name
            a.CopyFrom(H.make_attribute(name, pick([7, [7, 7], 1.5, "SAME_UPPER", [1.5]])))
    elif kind == 4 and node is not None:  # inputs: drop, duplicate, rewire, undefine, empty
        r = rng.random()
        if r < 0.25 and len(node.input):
            del node.input[int(rng.integers(len(node.input)))]
        elif r < 0.45 and len(node.input):
            node.input.append(pick(node.input))
        elif r < 0.8 and len(node.input):
            node.input[int(rng.integers(len(node.input)))] = pick(value_names() + ["undefined_value"])
        elif len(node.input):
            node.input[int(rng.integers(len(node.input)))] = ""
    elif kind == 5 and node is not None:  # outputs: onto another value, extra ones
        if rng.random() < 0.6 and len(node.output):
            node.output[0] = pick(value_names())
        else:
            node.output.append(pick(["extra", "", node.output[0] if len(node.output) else "x"]))
    elif kind == 6:  # graph input dims and types, graph outputs
        r = rng.random()
        x = g.input[0]
        dims = x.type.tensor_type.shape.dim
        if r < 0.5 and len(dims):
            d = dims[int(rng.integers(len(dims)))]
            d.dim_value = pick([0, -1, 1, 2, 3, 2 ** 31 - 1, 2 ** 31, 2 ** 40, 5000, 64])
        elif r < 0.6:
            dims.add().dim_value = int(rng.integers(1, 4))
        elif r < 0.7 and len(dims):
            del dims[-1]
        elif r < 0.8:
            x.type.tensor_type.elem_type = pick([TensorProto.INT64, TensorProto.DOUBLE, 0, 99])
        elif r < 0.9:
            g.output.append(g.output[0] if rng.random() < 0.5 else H.make_tensor_value_info(
                pick(value_names() + ["nowhere"]), TensorProto.FLOAT, None))
        else:
            del g.output[:]
    elif kind == 7 and node is not None:  # op type swap
        node.op_type = pick(OP_TYPES)
    elif kind == 8 and len(g.initializer):  # initializer bytes, dims, type, values
        t = pick(g.initializer)
        r = rng.random()
        try:
            arr = nh.to_array(t)
        except Exception:  # already broken by an earlier mutation
            return None
        if r < 0.3 and arr.dtype.kind in "iu":
            arr = np.array([pick(EXTREME_INTS) for _ in range(max(arr.size, 1))], np.int64)
            arr = arr.reshape(arr.shape if arr.size > 1 else ()) if t.dims else arr.reshape(())
            t.CopyFrom(nh.from_array(np.clip(arr, -2 ** 63, 2 ** 63 - 1).astype(np.int64), t.name))
        elif r < 0.45 and t.raw_data:
            b = bytearray(t.raw_data)
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
            t.raw_data = bytes(b)
        elif r < 0.6 and t.raw_data:
            t.raw_data = t.raw_data[:int(rng.integers(len(t.raw_data)))]
        elif r < 0.8:
            del t.dims[:]
            t.dims.extend(pick([[], [0], [-1], [2 ** 40], [2 ** 31, 2 ** 31], [1, 1, 1, 1, 1], [3, 3],
                                [arr.size], [2 ** 62, 4]]))
        elif r < 0.9:
            t.data_type = pick([0, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.STRING,
                                TensorProto.BOOL, 77])
        else:
            t.data_location = TensorProto.EXTERNAL
            t.ClearField("raw_data")
            del t.external_data[:]
            t.external_data.append(onnx.StringStringEntryProto(
                key="location", value=pick(["../../etc/passwd", "/etc/passwd", "w.bin", "", "a/../../b"])))
            if rng.random() < 0.5:
                t.external_data.append(onnx.StringStringEntryProto(key="length", value=pick(["-1", "x", "36",
                                                                                             str(2 ** 40)])))
    elif kind == 9 and len(g.node) > 1:  # reorder: unsorted graphs, or a cycle with a rewired input
        i, j = (int(v) for v in rng.choice(len(g.node), 2, replace=False))
        a, b = onnx.NodeProto(), onnx.NodeProto()
        a.CopyFrom(g.node[i])
        b.CopyFrom(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif kind == 10:  # opset
        m.opset_import[0].version = pick([1, 5, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 99, -1])
    elif kind == 11 and node is not None:  # a huge folded constant wired into a node
        big = pick([2 ** 20, 2 ** 31, 2 ** 40, 5000, 3])
        k = len(g.node)
        shape_name, out = f"hostile_shape{k}", f"hostile{k}"
        g.initializer.append(nh.from_array(np.array([big, big], np.int64), shape_name))
        op = pick(["ConstantOfShape", "Expand", "Range", "Tile"])
        if op == "ConstantOfShape":
            g.node.insert(0, H.make_node(op, [shape_name], [out]))
        elif op == "Expand":
            g.initializer.append(nh.from_array(np.ones((1, 1), np.float32), f"one{k}"))
            g.node.insert(0, H.make_node(op, [f"one{k}", shape_name], [out]))
        elif op == "Range":
            for nm, v in ((f"r0{k}", 0), (f"r1{k}", big), (f"r2{k}", pick([1, 0, -1]))):
                g.initializer.append(nh.from_array(np.array(v, np.int64), nm))
            g.node.insert(0, H.make_node(op, [f"r0{k}", f"r1{k}", f"r2{k}"], [out]))
        else:
            g.node.insert(0, H.make_node(op, [shape_name, shape_name], [out]))
        target = pick(g.node[1:])
        if len(target.input):
            target.input[int(rng.integers(len(target.input)))] = out
    elif kind == 12:  # a Constant node's value
        consts = [n for n in g.node if n.op_type == "Constant"]
        n = pick(consts)
        if n is None:
            g.node.insert(0, H.make_node("Constant", [], [pick(value_names() + ["c_new"])],
                                         value=nh.from_array(np.array(pick(EXTREME_INTS), np.int64))))
        else:
            del n.attribute[:]
            n.attribute.append(pick([H.make_attribute("value_ints", [pick(EXTREME_INTS)] * 3),
                                     H.make_attribute("value_float", pick(EXTREME_FLOATS)),
                                     H.make_attribute("value_string", "s")]))
    elif kind == 13 and node is not None:  # node duplicated (its outputs defined twice) or removed
        if rng.random() < 0.5:
            g.node.append(node)
        else:
            g.node.remove(node)
    elif kind == 14:  # names
        n = pick(g.node)
        if n is not None:
            n.name = pick(["", "x" * 5000, "a\0b", n.name + "_", g.node[0].name])
    elif kind == 15 and len(g.initializer):  # an initializer of another, consistent shape (weights that
        t = pick(g.initializer)                 # do not fit their node)
        try:
            arr = nh.to_array(t)
        except Exception:
            return None
        dims = [int(v) for v in rng.integers(1, 5, int(rng.integers(0, 5)))]
        t.CopyFrom(nh.from_array(np.resize(arr, dims) if arr.size else np.zeros(dims, arr.dtype), t.name))
    elif kind == 16:  # small input dims: output sizes at their edges
        dims = g.input[0].type.tensor_type.shape.dim
        for d in dims:
            if rng.random() < 0.5:
                d.dim_value = int(rng.integers(1, 10))
    else:  # byte level: cut or flip the serialized model
        b = bytearray(m.SerializeToString())
        if rng.random() < 0.5 and len(b) > 1:
            del b[int(rng.integers(len(b))):]
        else:
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return bytes(b)
    return None


# ---------------------------------------------------------------------------------------------------
# the child process


def _worker(seed: int, start: int, stop: int, verbose: bool):
    import resource
    import signal

    import cnnnative as cn
    import cnnnative.onnx as cno
    import cnnnative.onnx._common as limits  # the importer reads its limits from there at each use

    limits.FOLD_MAX_ELEMENTS, limits.FOLD_MAX_BYTES, limits.FOLD_MAX_TOTAL_BYTES = 4 << 20, 16 << 20, 64 << 20
    seeds = _seeds()
    for name, m in seeds.items():  # the seeds are valid and compile
        mod = cno.import_model(m)
        mod.compile(mod.example_input_shape(1))
    with open("/proc/self/statm") as f:
        vsz = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = vsz + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def alarm(*_):
        raise TimeoutError("case ran for more than 20 s")
    signal.signal(signal.SIGALRM, alarm)
    onnx_errors = tuple(getattr(cno, n) for n in ("InvalidModelError", "UnsupportedError") if hasattr(cno, n))
    names = sorted(seeds)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        src_name = names[int(rng.integers(len(names)))]
        print(json.dumps({"start": i}), flush=True)
        rec = {"i": i, "seed_model": src_name}
        signal.alarm(20)
        stage = "mutate"
        try:
            mutant = _mutate(seeds[src_name], rng)
            data = mutant if isinstance(mutant, bytes) else mutant.SerializeToString()
            stage = "import"
            mod = cno.import_model(data)
            rec["result"] = "imported"
            shape = None
            if len(mod.input_names) == 1 and len(mod.output_names) == 1:
                try:
                    shape = mod.example_input_shape(1)
                except ValueError:
                    shape = None
            if shape is not None:
                stage = "compile"
                try:
                    sess = mod.compile(shape, max_arena_bytes=256 << 20)
                except TypeError as e:  # compile() takes one-tensor outputs (a constant output: documented)
                    if not str(e).startswith("forward() must return one Tensor"):
                        raise
                    sess = None
                if sess is not None:
                    rec["result"] = "compiled"
                    if int(np.prod(shape)) <= 1 << 20:
                        stage = "run"
                        out = sess.run(np.random.default_rng(i).standard_normal(shape).astype(np.float32))
                        rec["result"] = f"ran {list(np.shape(out))}"
        except MemoryError:
            rec.update(bad=True, stage=stage, error="MemoryError", message="")
        except Exception as e:  # noqa: BLE001 - classified below
            ok = isinstance(e, onnx_errors) or (stage in ("compile", "run") and isinstance(e, cn.Error))
            ok = ok and "internal error" not in str(e)
            rec.update(stage=stage, error=type(e).__name__, message=str(e)[:300])
            if not ok:
                rec["bad"] = True
        finally:
            signal.alarm(0)
        if verbose or rec.get("bad"):
            rec["model"] = str(mutant)[:3000] if stage != "mutate" and not isinstance(mutant, bytes) else ""
        print(json.dumps(rec), flush=True)


def _run(seed, n, timeout):
    p = subprocess.run([sys.executable, os.path.abspath(__file__), str(seed), "0", str(n)], capture_output=True,
                       text=True, timeout=timeout, cwd=HERE)
    recs, started = [], None
    for line in p.stdout.splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "start" in r:
            started = r["start"]
        else:
            recs.append(r)
    if p.returncode != 0:
        raise AssertionError(f"the fuzz child died (status {p.returncode}) in case {started} of seed {seed}; "
                             f"reproduce: python tests/test_onnx_fuzz.py {seed} {started} {started + 1} -v\n"
                             f"{p.stderr[-3000:]}")
    bad = [r for r in recs if r.get("bad")]
    assert not bad, "\n\n".join(json.dumps(r, indent=1)[:4000] for r in bad[:3])
    assert len(recs) == n
    return recs


def _summary(recs):
    kinds = {}
    for r in recs:
        k = r.get("error") or r["result"].split(" ")[0]
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


def test_onnx_mutations_import_or_raise_documented_errors():
    recs = _run(seed=1, n=800, timeout=120)
    kinds = _summary(recs)
    print(kinds)
    # the mutations reach every outcome: refused as invalid and as unsupported, imported, compiled and run
    assert kinds.get("InvalidModelError", 0) > 300, kinds
    assert kinds.get("UnsupportedError", 0) > 40, kinds
    assert kinds.get("ran", 0) > 40, kinds
    assert len({r["message"] for r in recs if "message" in r}) > 200


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_onnx_mutations_long(seed):
    recs = _run(seed=seed, n=15000, timeout=1800)
    print(_summary(recs))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "-v"]
    _worker(int(args[0]), int(args[1]), int(args[2]), "-v" in sys.argv)
