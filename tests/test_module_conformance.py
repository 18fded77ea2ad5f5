"""cnnnative.nn.Module follows torch.nn.Module's rules for submodules, parameters and buffers.

Each scenario below is one sequence of operations written once against a small adapter (`L.nn` is
cnnnative.nn or torch.nn; `L.param`/`L.tensor` make a zero Parameter / plain array of a shape) that records
what it observes: names from state_dict/named_*(), attribute values and types, exception types.
  - test_scenario_matches_documented_behaviour runs each on cnnnative against literals written out here
    (torch's documented behaviour): it always runs;
  - test_scenario_matches_torch runs the same sequence on torch.nn.Module and on cnnnative.nn.Module and
    compares the records, when torch is installed.
Then the parts torch has no counterpart for: the parameter store and compiled sessions when the structure
changes after a compile, non-persistent buffers in compiled and traced graphs, shared modules and tied
weights in a graph. Last, a BasicBlock written the torchvision way (downsample = None, then assigned when
needed) compiled and compared with torch on the same weights.
"""
from collections import OrderedDict

import numpy as np
import pytest

import cnnnative as cn
from cnnnative import functional as F
from cnnnative import nn


# ------------------------------------------------------------------ the adapter and the recorder
class _CN:
    name = "cnnnative"
    nn = nn

    @staticmethod
    def param(*shape):
        return nn.Parameter(np.zeros(shape, np.float32))

    @staticmethod
    def tensor(*shape):
        return np.zeros(shape, np.float32)


def _torch_lib():
    torch = pytest.importorskip("torch")

    class _Torch:
        name = "torch"
        nn = torch.nn

        @staticmethod
        def param(*shape):
            return torch.nn.Parameter(torch.zeros(shape))

        @staticmethod
        def tensor(*shape):
            return torch.zeros(shape)

    return _Torch


class Rec(list):
    def __call__(self, label, value):
        self.append((label, value))

    def exc(self, label, fn):
        """Records the type name of the exception fn raises, or 'ok'."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the type is what is compared
            self.append((label, type(e).__name__))
        else:
            self.append((label, "ok"))


def keys(m):
    return list(m.state_dict())


def shapes(m):
    return [(k, tuple(int(s) for s in v.shape)) for k, v in m.state_dict().items()]


def pnames(m, **kw):
    return [n for n, _ in m.named_parameters(**kw)]


def bnames(m, **kw):
    return [n for n, _ in m.named_buffers(**kw)]


def cnames(m):
    return [n for n, _ in m.named_children()]


def mnames(m, **kw):
    return [n for n, _ in m.named_modules(**kw)]


def kind(x):
    return None if x is None else type(x).__name__


def kinds(ms):
    return [kind(x) for x in ms]


# ------------------------------------------------------------------ scenarios
def s_none_then_module(L, r):
    """torchvision's pattern: the slot is None, then conditionally a module."""
    class Block(L.nn.Module):
        def __init__(self, project):
            super().__init__()
            self.conv = L.nn.Linear(2, 2)
            self.downsample = None
            if project:
                self.downsample = L.nn.Sequential(L.nn.Linear(2, 2))

    b = Block(True)
    r("downsample", kind(b.downsample))
    r("in __dict__", "downsample" in vars(b))
    r("children", cnames(b))
    r("keys", keys(b))
    b = Block(False)
    r("downsample", kind(b.downsample))
    r("children", cnames(b))
    r("keys", keys(b))


def s_module_slot(L, r):
    m = L.nn.Module()
    m.a = L.nn.Linear(2, 3)
    m.b = L.nn.ReLU()
    m.a = L.nn.Linear(2, 4)  # module replaced by a module: same slot, same position
    r("children", cnames(m))
    r("shapes", shapes(m))
    r.exc("plain value into a module slot", lambda: setattr(m, "a", 3))
    r.exc("array into a module slot", lambda: setattr(m, "a", L.tensor(2)))
    r("still the module", kind(m.a))
    m.a = None  # None keeps the slot, registered as None
    r("a", kind(m.a))
    r("children", cnames(m))
    r("modules", mnames(m))
    r("keys", keys(m))
    r.exc("plain value into a None module slot", lambda: setattr(m, "a", "x"))
    m.a = L.nn.Linear(1, 1)
    r("children", cnames(m))
    r("keys", keys(m))
    r.exc("module into a parameter slot", lambda: (m.register_parameter("p", None), setattr(m, "p", L.nn.ReLU())))
    m.x = 3  # a plain attribute, then a module of the same name
    m.x = L.nn.Linear(1, 2)
    r("x", kind(m.x))
    r("x in __dict__", "x" in vars(m))
    r("children", cnames(m))
    m.y = None  # None on a fresh name is a plain attribute
    r("y in __dict__", "y" in vars(m))
    r("children", cnames(m))


def s_parameter_slot(L, r):
    m = L.nn.Module()
    m.w = L.param(2)
    r("params", pnames(m))
    r.exc("int into a parameter slot", lambda: setattr(m, "w", 3))
    r.exc("plain array into a parameter slot", lambda: setattr(m, "w", L.tensor(2)))
    r.exc("module into a parameter slot", lambda: setattr(m, "w", L.nn.ReLU()))
    m.w = None
    r("w", m.w is None)
    r("params", pnames(m))
    r("keys", keys(m))
    m.w = L.param(3)
    r("shapes", shapes(m))
    m.register_parameter("v", None)
    r("v", m.v is None)
    r("keys", keys(m))
    m.v = L.param(1)
    r("keys", keys(m))
    lin = L.nn.Linear(2, 3, bias=False)  # torch's layers register a missing bias as None
    r("bias", lin.bias is None)
    r("keys", keys(lin))
    lin.bias = L.param(3)
    r("keys", keys(lin))
    conv = L.nn.Conv2d(1, 2, 3, bias=False)
    r("conv bias", conv.bias is None)
    r("conv keys", keys(conv))
    m.z = 5  # a parameter replaces a plain attribute
    m.z = L.param(4)
    r("z in __dict__", "z" in vars(m))
    r("params", pnames(m))


def s_buffer_slot(L, r):
    m = L.nn.Module()
    m.register_buffer("b", L.tensor(2))
    m.b = L.tensor(3)  # an array into a buffer slot stays a buffer
    r("buffers", bnames(m))
    r("shapes", shapes(m))
    r.exc("int into a buffer slot", lambda: setattr(m, "b", 3))
    m.b = None
    r("b", m.b is None)
    r("buffers", bnames(m))
    r("keys", keys(m))
    m.b = L.param(2)  # a parameter takes the name over
    r("params", pnames(m))
    r("buffers", bnames(m))
    m.register_buffer("c", L.tensor(1))
    m.c = L.nn.Linear(1, 1)  # a module takes a buffer name over
    r("buffers", bnames(m))
    r("children", cnames(m))
    r("keys", keys(m))
    m.register_buffer("d", None)
    r("d", m.d is None)
    r("keys", keys(m))


def s_delete(L, r):
    m = L.nn.Module()
    m.fc = L.nn.Linear(1, 1)
    m.w = L.param(2)
    m.register_buffer("b", L.tensor(2))
    m.plain = 1
    del m.fc
    del m.w
    del m.b
    del m.plain
    r("keys", keys(m))
    r("children", cnames(m))
    r("hasattr", [hasattr(m, n) for n in ("fc", "w", "b", "plain")])
    r.exc("del missing", lambda: delattr(m, "fc"))
    r.exc("get missing", lambda: m.fc)
    m.fc = 3  # the name is free again for a plain value
    r("fc", m.fc)


def s_non_persistent(L, r):
    m = L.nn.Module()
    m.register_buffer("keep", L.tensor(1))
    m.register_buffer("tmp", L.tensor(2), persistent=False)
    r("buffers", bnames(m))
    r("keys", keys(m))
    m.tmp = L.tensor(3)  # reassigning keeps it non-persistent
    r("keys", keys(m))
    r("buffers", bnames(m))
    m.register_buffer("tmp", L.tensor(2))  # registered again as persistent
    r("keys", keys(m))
    m.register_buffer("tmp", L.tensor(2), persistent=False)
    r("keys", keys(m))
    del m.tmp
    m.register_buffer("tmp", L.tensor(2))  # a deleted name forgets it was non-persistent
    r("keys", keys(m))
    m.register_buffer("tmp2", L.tensor(2), persistent=False)
    m.tmp2 = L.param(2)  # a parameter takes it over: persistent as parameters are
    m.register_buffer("tmp2b", L.tensor(2), persistent=False)
    m.tmp2b = L.nn.Linear(1, 1)
    r("keys", keys(m))
    sub = L.nn.Module()
    sub.register_buffer("nb", L.tensor(1), persistent=False)
    m.sub = sub
    r("buffers", bnames(m))
    r("keys", keys(m))


def s_names(L, r):
    m = L.nn.Module()
    m.fc = L.nn.Linear(1, 1)
    m.plain = 1
    for what, fn in [
        ("add_module dot", lambda: m.add_module("a.b", L.nn.ReLU())),
        ("add_module empty", lambda: m.add_module("", L.nn.ReLU())),
        ("add_module int", lambda: m.add_module(1, L.nn.ReLU())),
        ("add_module existing attribute", lambda: m.add_module("forward", L.nn.ReLU())),
        ("add_module plain attribute", lambda: m.add_module("plain", L.nn.ReLU())),
        ("add_module not a module", lambda: m.add_module("q", 3)),
        ("add_module over a module", lambda: m.add_module("fc", L.nn.Linear(1, 2))),
        ("add_module None", lambda: m.add_module("none", None)),
        ("register_module", lambda: m.register_module("rm", L.nn.ReLU())),
        ("register_module dot", lambda: m.register_module("r.m", L.nn.ReLU())),
        ("register_buffer dot", lambda: m.register_buffer("a.b", L.tensor(1))),
        ("register_buffer empty", lambda: m.register_buffer("", L.tensor(1))),
        ("register_buffer int", lambda: m.register_buffer(1, L.tensor(1))),
        ("register_buffer not an array", lambda: m.register_buffer("q", 3)),
        ("register_buffer over a module", lambda: m.register_buffer("fc", L.tensor(1))),
        ("register_buffer over an attribute", lambda: m.register_buffer("training", L.tensor(1))),
        ("register_buffer over a plain attribute", lambda: m.register_buffer("plain", L.tensor(1))),
        ("register_parameter dot", lambda: m.register_parameter("a.b", None)),
        ("register_parameter empty", lambda: m.register_parameter("", None)),
        ("register_parameter int", lambda: m.register_parameter(1, None)),
        ("register_parameter plain array", lambda: m.register_parameter("q", L.tensor(1))),
        ("register_parameter over a module", lambda: m.register_parameter("fc", None)),
        ("register_parameter ok", lambda: m.register_parameter("p", L.param(1))),
        ("setattr parameter with a dot", lambda: setattr(m, "c.d", L.param(1))),
    ]:
        r.exc(what, fn)
    r("children", cnames(m))
    r("module slots", list(m._modules))
    r("keys", keys(m))

    class Early(L.nn.Module):
        def __init__(self, what):
            if what == "module":
                self.fc = L.nn.Linear(1, 1)
            elif what == "param":
                self.w = L.param(1)
            else:
                self.x = 1
            super().__init__()

    for what in ("module", "param", "plain"):
        r.exc(f"{what} before Module.__init__", lambda: Early(what))


def s_traversal(L, r):
    shared = L.nn.Linear(2, 2)
    m = L.nn.Module()
    m.a = shared
    m.b = L.nn.Sequential(L.nn.Linear(2, 3), shared, L.nn.ReLU())
    m.c = shared
    m.none = None  # plain attribute
    m.add_module("empty", None)
    m.register_buffer("buf", L.tensor(1))
    r("modules", mnames(m))
    r("modules with duplicates", mnames(m, remove_duplicate=False))
    r("modules prefixed", mnames(m, prefix="net"))
    r("module count", len(list(m.modules())))
    r("children", cnames(m))
    r("children kinds", kinds(m.children()))
    r("params", pnames(m))
    r("params prefixed", pnames(m, prefix="net"))
    r("params not recursive", pnames(m, recurse=False))
    r("params with duplicates", pnames(m, remove_duplicate=False))
    r("param count", len(list(m.parameters())))
    r("params of b not recursive", len(list(m.b.parameters(recurse=False))))
    r("buffers", bnames(m))
    r("buffers not recursive", bnames(m.b, recurse=False))
    r("keys", keys(m))  # state_dict lists a shared module under every name
    seen = []
    m.apply(lambda mod: seen.append(kind(mod)))  # children first, each child once per parent
    r("apply", seen)
    tied = L.nn.Module()
    tied.enc = L.nn.Linear(3, 3)
    tied.dec = L.nn.Linear(3, 3)
    tied.dec.weight = tied.enc.weight
    r("tied params", pnames(tied))
    r("tied keys", keys(tied))
    r("tied is", tied.dec.weight is tied.enc.weight)
    m.train(False)
    r("training", [mod.training for mod in m.modules()])
    m.b.train()
    r("training", [mod.training for mod in m.modules()])
    r.exc("train(1)", lambda: m.train(1))
    r.exc("train('no')", lambda: m.train("no"))
    r("eval returns self", m.eval() is m)


def s_module_list(L, r):
    lin, relu, tanh, sig = L.nn.Linear(1, 1), L.nn.ReLU(), L.nn.Tanh(), L.nn.Sigmoid()
    ml = L.nn.ModuleList([lin, relu])
    ml.insert(1, tanh)
    r("insert middle", list(zip(ml._modules, kinds(ml))))
    ml.insert(0, sig)
    ml.insert(len(ml), L.nn.ReLU())
    r("insert ends", list(zip(ml._modules, kinds(ml))))
    ml[1] = L.nn.Tanh()
    ml[-1] = L.nn.Sigmoid()
    r("setitem", kinds(ml))
    r("getitem", [kind(ml[0]), kind(ml[-2]), kind(ml[2])])
    r("slice", [kind(ml[1:3]), kinds(ml[1:3]), list(ml[1:3]._modules)])
    r("keys", keys(ml))
    del ml[0]
    r("del", list(zip(ml._modules, kinds(ml))))
    del ml[1:3]
    r("del slice", list(zip(ml._modules, kinds(ml))))
    r("pop", kind(ml.pop(0)))
    r("after pop", list(zip(ml._modules, kinds(ml))))
    r.exc("getitem out of range", lambda: ml[5])
    r.exc("setitem out of range", lambda: ml.__setitem__(5, L.nn.ReLU()))
    r.exc("delitem out of range", lambda: ml.__delitem__(-5))
    r.exc("setitem not a module", lambda: ml.__setitem__(0, 3))
    r.exc("getitem str", lambda: ml["0"])
    r.exc("append not a module", lambda: ml.append(3))
    r.exc("extend not iterable", lambda: ml.extend(3))
    r.exc("constructor not iterable", lambda: L.nn.ModuleList(3))
    ml += [L.nn.ReLU(), L.nn.Linear(2, 2)]
    r("iadd", list(zip(ml._modules, kinds(ml))))
    both = ml + L.nn.ModuleList([L.nn.Tanh()])
    r("add", [kind(both), len(both), kinds(both)])
    r("len", len(ml))
    r("keys", keys(ml))


def s_sequential(L, r):
    s = L.nn.Sequential(L.nn.Linear(1, 1), L.nn.ReLU(), L.nn.Linear(1, 2))
    s.append(L.nn.Tanh())
    r("append", list(zip(s._modules, kinds(s))))
    s.insert(1, L.nn.Sigmoid())
    r("insert", list(zip(s._modules, kinds(s))))
    s.extend([L.nn.ReLU()])
    r("extend", list(zip(s._modules, kinds(s))))
    r("pop", kind(s.pop(1)))
    r("after pop", list(zip(s._modules, kinds(s))))
    del s[0]
    r("del renumbers", list(zip(s._modules, kinds(s))))
    s[0] = L.nn.Tanh()
    r("setitem", kinds(s))
    r("keys", keys(s))
    r.exc("getitem out of range", lambda: s[20])
    r.exc("setitem out of range", lambda: s.__setitem__(20, L.nn.ReLU()))
    r.exc("setitem not a module", lambda: s.__setitem__(0, 3))
    r.exc("append not a module", lambda: s.append(3))
    r.exc("insert out of range", lambda: s.insert(20, L.nn.ReLU()))
    named = L.nn.Sequential(OrderedDict([("conv", L.nn.Linear(1, 1)), ("act", L.nn.ReLU()),
                                         ("out", L.nn.Linear(1, 2))]))
    r("named", list(named._modules))
    r("named slice keeps names", [kind(named[1:]), list(named[1:]._modules)])
    named[1] = L.nn.Tanh()
    r("named setitem keeps the name", list(zip(named._modules, kinds(named))))
    r("named getattr", kind(named.act))
    r("named keys", keys(named))


def s_module_dict(L, r):
    md = L.nn.ModuleDict({"b": L.nn.Linear(1, 1), "a": L.nn.ReLU()})
    r("init keeps order", list(md.keys()))
    md["c"] = L.nn.Tanh()
    r("setitem", [list(md), len(md), "c" in md, "z" in md])
    r("getitem", kind(md["b"]))
    r("getattr", kind(md.c))
    r("values", kinds(md.values()))
    r("items", [(k, kind(v)) for k, v in md.items()])
    r("keys", keys(md))
    r.exc("missing key", lambda: md["z"])
    r.exc("dotted key", lambda: md.__setitem__("x.y", L.nn.ReLU()))
    r.exc("not a module", lambda: md.__setitem__("q", 3))
    r.exc("key shadowing a method", lambda: md.__setitem__("keys", L.nn.ReLU()))
    r.exc("del missing", lambda: md.__delitem__("z"))
    del md["a"]
    r("del", list(md))
    r("pop", kind(md.pop("b")))
    r("after pop", list(md))
    r.exc("update int", lambda: md.update(3))
    r.exc("update non-pair element", lambda: md.update([3]))
    r.exc("update short pair", lambda: md.update([("a",)]))
    md.update([("a", L.nn.Linear(1, 1)), ["b", L.nn.ReLU()]])
    md.update(OrderedDict([("z", L.nn.Sigmoid())]))
    md.update(L.nn.ModuleDict({"y": L.nn.Tanh()}))
    md.update({"c": L.nn.Sigmoid()})  # an existing key keeps its position
    r("update", [(k, kind(v)) for k, v in md.items()])
    r("children", cnames(md))
    r("keys", keys(md))
    md.clear()
    r("clear", [len(md), list(md), keys(md)])
    r("from pairs", list(L.nn.ModuleDict([("x", L.nn.ReLU()), ("w", L.nn.Tanh())])))
    r("empty", len(L.nn.ModuleDict()))


SCENARIOS = {f.__name__[2:]: f for f in [s_none_then_module, s_module_slot, s_parameter_slot, s_buffer_slot,
                                         s_delete, s_non_persistent, s_names, s_traversal, s_module_list,
                                         s_sequential, s_module_dict]}

# torch.nn.Module's documented behaviour, written out (checked against torch by test_scenario_matches_torch)
EXPECTED = {
    "none_then_module": [
        ("downsample", "Sequential"), ("in __dict__", False), ("children", ["conv", "downsample"]),
        ("keys", ["conv.weight", "conv.bias", "downsample.0.weight", "downsample.0.bias"]),
        ("downsample", None), ("children", ["conv"]), ("keys", ["conv.weight", "conv.bias"]),
    ],
    "module_slot": [
        ("children", ["a", "b"]), ("shapes", [("a.weight", (4, 2)), ("a.bias", (4,))]),
        ("plain value into a module slot", "TypeError"), ("array into a module slot", "TypeError"),
        ("still the module", "Linear"),
        ("a", None), ("children", ["b"]), ("modules", ["", "b"]), ("keys", []),
        ("plain value into a None module slot", "TypeError"),
        ("children", ["a", "b"]), ("keys", ["a.weight", "a.bias"]),
        ("module into a parameter slot", "TypeError"),
        ("x", "Linear"), ("x in __dict__", False), ("children", ["a", "b", "x"]),
        ("y in __dict__", True), ("children", ["a", "b", "x"]),
    ],
    "parameter_slot": [
        ("params", ["w"]),
        ("int into a parameter slot", "TypeError"), ("plain array into a parameter slot", "TypeError"),
        ("module into a parameter slot", "TypeError"),
        ("w", True), ("params", []), ("keys", []),
        ("shapes", [("w", (3,))]),
        ("v", True), ("keys", ["w"]), ("keys", ["w", "v"]),
        ("bias", True), ("keys", ["weight"]), ("keys", ["weight", "bias"]),
        ("conv bias", True), ("conv keys", ["weight"]),
        ("z in __dict__", False), ("params", ["w", "v", "z"]),
    ],
    "buffer_slot": [
        ("buffers", ["b"]), ("shapes", [("b", (3,))]), ("int into a buffer slot", "TypeError"),
        ("b", True), ("buffers", []), ("keys", []),
        ("params", ["b"]), ("buffers", []),
        ("buffers", []), ("children", ["c"]), ("keys", ["b", "c.weight", "c.bias"]),
        ("d", True), ("keys", ["b", "c.weight", "c.bias"]),
    ],
    "delete": [
        ("keys", []), ("children", []), ("hasattr", [False, False, False, False]),
        ("del missing", "AttributeError"), ("get missing", "AttributeError"), ("fc", 3),
    ],
    "non_persistent": [
        ("buffers", ["keep", "tmp"]), ("keys", ["keep"]), ("keys", ["keep"]), ("buffers", ["keep", "tmp"]),
        ("keys", ["keep", "tmp"]), ("keys", ["keep"]), ("keys", ["keep", "tmp"]),
        ("keys", ["tmp2", "keep", "tmp", "tmp2b.weight", "tmp2b.bias"]),
        ("buffers", ["keep", "tmp", "sub.nb"]),
        ("keys", ["tmp2", "keep", "tmp", "tmp2b.weight", "tmp2b.bias"]),
    ],
    "names": [
        ("add_module dot", "KeyError"), ("add_module empty", "KeyError"), ("add_module int", "TypeError"),
        ("add_module existing attribute", "KeyError"), ("add_module plain attribute", "KeyError"),
        ("add_module not a module", "TypeError"), ("add_module over a module", "ok"), ("add_module None", "ok"),
        ("register_module", "ok"), ("register_module dot", "KeyError"),
        ("register_buffer dot", "KeyError"), ("register_buffer empty", "KeyError"),
        ("register_buffer int", "TypeError"), ("register_buffer not an array", "TypeError"),
        ("register_buffer over a module", "KeyError"), ("register_buffer over an attribute", "KeyError"),
        ("register_buffer over a plain attribute", "KeyError"),
        ("register_parameter dot", "KeyError"), ("register_parameter empty", "KeyError"),
        ("register_parameter int", "TypeError"), ("register_parameter plain array", "TypeError"),
        ("register_parameter over a module", "KeyError"), ("register_parameter ok", "ok"),
        ("setattr parameter with a dot", "KeyError"),
        ("children", ["fc", "rm"]), ("module slots", ["fc", "none", "rm"]),
        ("keys", ["p", "fc.weight", "fc.bias"]),
        ("module before Module.__init__", "AttributeError"), ("param before Module.__init__", "AttributeError"),
        ("plain before Module.__init__", "ok"),
    ],
    "traversal": [
        ("modules", ["", "a", "b", "b.0", "b.2"]),
        ("modules with duplicates", ["", "a", "b", "b.0", "b.1", "b.2", "c"]),
        ("modules prefixed", ["net", "net.a", "net.b", "net.b.0", "net.b.2"]),
        ("module count", 5), ("children", ["a", "b"]), ("children kinds", ["Linear", "Sequential"]),
        ("params", ["a.weight", "a.bias", "b.0.weight", "b.0.bias"]),
        ("params prefixed", ["net.a.weight", "net.a.bias", "net.b.0.weight", "net.b.0.bias"]),
        ("params not recursive", []),
        ("params with duplicates", ["a.weight", "a.bias", "b.0.weight", "b.0.bias", "b.1.weight", "b.1.bias",
                                    "c.weight", "c.bias"]),
        ("param count", 4), ("params of b not recursive", 0),
        ("buffers", ["buf"]), ("buffers not recursive", []),
        ("keys", ["buf", "a.weight", "a.bias", "b.0.weight", "b.0.bias", "b.1.weight", "b.1.bias", "c.weight",
                  "c.bias"]),
        ("apply", ["Linear", "Linear", "Linear", "ReLU", "Sequential", "Module"]),  # shared: once per parent
        ("tied params", ["enc.weight", "enc.bias", "dec.bias"]),
        ("tied keys", ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]), ("tied is", True),
        ("training", [False] * 5), ("training", [False, True, True, True, True]),  # "a" is "b.1"
        ("train(1)", "ValueError"), ("train('no')", "ValueError"), ("eval returns self", True),
    ],
    "module_list": [
        ("insert middle", [("0", "Linear"), ("1", "Tanh"), ("2", "ReLU")]),
        ("insert ends", [("0", "Sigmoid"), ("1", "Linear"), ("2", "Tanh"), ("3", "ReLU"), ("4", "ReLU")]),
        ("setitem", ["Sigmoid", "Tanh", "Tanh", "ReLU", "Sigmoid"]),
        ("getitem", ["Sigmoid", "ReLU", "Tanh"]),
        ("slice", ["ModuleList", ["Tanh", "Tanh"], ["0", "1"]]),
        ("keys", []),
        ("del", [("0", "Tanh"), ("1", "Tanh"), ("2", "ReLU"), ("3", "Sigmoid")]),
        ("del slice", [("0", "Tanh"), ("1", "Sigmoid")]),
        ("pop", "Tanh"), ("after pop", [("0", "Sigmoid")]),
        ("getitem out of range", "IndexError"), ("setitem out of range", "IndexError"),
        ("delitem out of range", "IndexError"), ("setitem not a module", "TypeError"),
        ("getitem str", "TypeError"), ("append not a module", "TypeError"), ("extend not iterable", "TypeError"),
        ("constructor not iterable", "TypeError"),
        ("iadd", [("0", "Sigmoid"), ("1", "ReLU"), ("2", "Linear")]),
        ("add", ["ModuleList", 4, ["Sigmoid", "ReLU", "Linear", "Tanh"]]),
        ("len", 3), ("keys", ["2.weight", "2.bias"]),
    ],
    "sequential": [
        ("append", [("0", "Linear"), ("1", "ReLU"), ("2", "Linear"), ("3", "Tanh")]),
        ("insert", [("0", "Linear"), ("1", "Sigmoid"), ("2", "ReLU"), ("3", "Linear"), ("4", "Tanh")]),
        ("extend", [("0", "Linear"), ("1", "Sigmoid"), ("2", "ReLU"), ("3", "Linear"), ("4", "Tanh"),
                    ("5", "ReLU")]),
        ("pop", "Sigmoid"),
        ("after pop", [("0", "Linear"), ("1", "ReLU"), ("2", "Linear"), ("3", "Tanh"), ("4", "ReLU")]),
        ("del renumbers", [("0", "ReLU"), ("1", "Linear"), ("2", "Tanh"), ("3", "ReLU")]),
        ("setitem", ["Tanh", "Linear", "Tanh", "ReLU"]),
        ("keys", ["1.weight", "1.bias"]),
        ("getitem out of range", "IndexError"), ("setitem out of range", "IndexError"),
        ("setitem not a module", "TypeError"), ("append not a module", "TypeError"),
        ("insert out of range", "IndexError"),
        ("named", ["conv", "act", "out"]),
        ("named slice keeps names", ["Sequential", ["act", "out"]]),
        ("named setitem keeps the name", [("conv", "Linear"), ("act", "Tanh"), ("out", "Linear")]),
        ("named getattr", "Tanh"),
        ("named keys", ["conv.weight", "conv.bias", "out.weight", "out.bias"]),
    ],
    "module_dict": [
        ("init keeps order", ["b", "a"]),
        ("setitem", [["b", "a", "c"], 3, True, False]),
        ("getitem", "Linear"), ("getattr", "Tanh"), ("values", ["Linear", "ReLU", "Tanh"]),
        ("items", [("b", "Linear"), ("a", "ReLU"), ("c", "Tanh")]),
        ("keys", ["b.weight", "b.bias"]),
        ("missing key", "KeyError"), ("dotted key", "KeyError"), ("not a module", "TypeError"),
        ("key shadowing a method", "KeyError"), ("del missing", "KeyError"),
        ("del", ["b", "c"]), ("pop", "Linear"), ("after pop", ["c"]),
        ("update int", "TypeError"), ("update non-pair element", "TypeError"), ("update short pair", "ValueError"),
        ("update", [("c", "Sigmoid"), ("a", "Linear"), ("b", "ReLU"), ("z", "Sigmoid"), ("y", "Tanh")]),
        ("children", ["c", "a", "b", "z", "y"]),
        ("keys", ["a.weight", "a.bias"]),
        ("clear", [0, [], []]),
        ("from pairs", ["x", "w"]), ("empty", 0),
    ],
}


def _run(lib, name):
    r = Rec()
    SCENARIOS[name](lib, r)
    return list(r)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_documented_behaviour(name):
    assert _run(_CN, name) == EXPECTED[name]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_matches_torch(name):
    torch_lib = _torch_lib()
    got_torch = _run(torch_lib, name)
    assert got_torch == EXPECTED[name]  # the literals are torch's behaviour
    assert _run(_CN, name) == got_torch


def test_expected_covers_every_scenario():
    assert set(EXPECTED) == set(SCENARIOS)


# ------------------------------------------------------------------ cnnnative-only details
def test_module_list_insert_accepts_negative_and_large_indices_like_list_insert():
    # torch's ModuleList.insert fails on negative indices (KeyError '-1') and leaves a hole for large ones;
    # here it follows list.insert
    mods = [nn.ReLU(), nn.Tanh(), nn.Sigmoid()]
    ml = nn.ModuleList(mods[:2])
    ml.insert(-1, mods[2])
    assert list(ml) == [mods[0], mods[2], mods[1]] and list(ml._modules) == ["0", "1", "2"]
    extra = nn.Identity()
    ml.insert(10, extra)
    assert list(ml._modules) == ["0", "1", "2", "3"] and ml[3] is extra
    first = nn.Identity()
    ml.insert(-10, first)
    assert ml[0] is first and len(ml) == 5


def test_sequential_insert_and_delete_renumber_and_check_types():
    s = nn.Sequential(OrderedDict([("a", nn.ReLU()), ("b", nn.Tanh())]))
    s.insert(-1, nn.Sigmoid())
    assert [(k, kind(v)) for k, v in s._modules.items()] == [("0", "ReLU"), ("1", "Sigmoid"), ("2", "Tanh")]
    with pytest.raises(TypeError, match="int is not a Module subclass"):
        s.insert(0, 3)
    with pytest.raises(IndexError):
        s.insert(-5, nn.ReLU())


def test_error_messages_name_the_slot():
    m = nn.Module()
    m.fc = nn.Linear(1, 1)
    m.w = nn.Parameter(np.zeros(2))
    m.register_buffer("b", np.zeros(2))
    with pytest.raises(TypeError, match=r"cannot assign 'int' as child module 'fc' \(.*Module or None expected\)"):
        m.fc = 3
    with pytest.raises(TypeError, match=r"cannot assign 'numpy.ndarray' as parameter 'w' \(.*Parameter or None"):
        m.w = np.zeros(2)
    with pytest.raises(TypeError, match=r"cannot assign 'str' as buffer 'b' \(numpy.ndarray or None expected\)"):
        m.b = "x"
    with pytest.raises(KeyError, match=r"module name can\\?.t contain"):
        m.add_module("a.b", nn.ReLU())
    with pytest.raises(KeyError, match="attribute 'fc' already exists"):
        m.register_buffer("fc", np.zeros(1))
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'nothing'"):
        m.nothing


def test_dir_lists_registered_names():
    m = nn.Module()
    m.fc = nn.Linear(1, 1)
    m.w = nn.Parameter(np.zeros(1))
    m.register_buffer("b", np.zeros(1))
    assert {"fc", "w", "b", "forward", "state_dict"} <= set(dir(m))


def test_buffers_are_float32_and_keep_a_zero_dim_shape():
    m = nn.Module()
    m.register_buffer("s", np.array(3, np.int64))
    m.register_buffer("v", np.array([1.0, 2.0]))
    assert m.s.shape == () and m.s.dtype == np.float32 and m.v.dtype == np.float32
    assert dict(m.state_dict())["s"] == 3


# ------------------------------------------------------------------ the store and compiled sessions
class TwoLayer(nn.Module):
    def __init__(self, hidden=4, out=3):
        super().__init__()
        self.body = nn.Linear(4, hidden)
        self.fc = nn.Linear(hidden, out)

    def forward(self, x):
        return self.fc(F.relu(self.body(x)))


def _ref(m, x):
    h = np.maximum(x @ np.asarray(m.body.weight).T + np.asarray(m.body.bias), 0)
    y = h @ np.asarray(m.fc.weight).T
    return y + np.asarray(m.fc.bias) if m.fc.bias is not None else y


X = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)


def test_replacing_a_module_by_one_of_the_same_shape_after_compile_uses_its_weights():
    cn.manual_seed(0)
    m = TwoLayer()
    s1 = m.compile(X.shape)
    np.testing.assert_allclose(s1.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)
    new_fc = nn.Linear(4, 3)
    with cn.no_grad():
        new_fc.weight[...] = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    m.fc = new_fc
    assert m.fc is new_fc
    # the session was compiled from the old layer: it refuses to run rather than compute with it
    with pytest.raises(cn.Error, match=r"compiled before the model's structure changed \(module 'fc' "
                                           r"replaced.*compile the model again"):
        s1.run(X)
    s2 = m.compile(X.shape)
    np.testing.assert_allclose(s2.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)
    # the new module's arrays are views of the store now: writes reach the session
    with cn.no_grad():
        m.fc.bias[...] = 5.0
    np.testing.assert_allclose(s2.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)
    assert m.state_dict()["fc.bias"][0] == 5.0
    with pytest.raises(cn.Error, match="compile the model again"):  # and stays refused
        s1.run(X)


def test_what_does_not_retire_a_session():
    cn.manual_seed(0)
    m = TwoLayer()
    s = m.compile(X.shape)
    other = TwoLayer()
    other.compile(X.shape)  # other models compiling
    m.load_state_dict({k: np.array(v) * 2 for k, v in m.state_dict().items()})
    m.fc.weight = nn.Parameter(np.ones((3, 4)))  # same shape: written into the store
    with cn.no_grad():
        m.body.weight[0] = 3
    m.fc = m.fc  # the same module again
    m.note = "plain attributes"
    m.eval()
    m.fc.state_dict()
    m.compile(X.shape)
    np.testing.assert_allclose(s.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)
    # a change undone before the next run is no change
    fc = m.fc
    m.fc = None
    m.fc = fc
    np.testing.assert_allclose(s.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)


def test_changing_parameter_shapes_after_compile_rebuilds_the_store_and_retires_old_sessions():
    cn.manual_seed(1)
    m = TwoLayer()
    s1 = m.compile(X.shape)
    body_w = np.array(m.body.weight)
    m.fc = nn.Linear(4, 5)
    s2 = m.compile(X.shape)
    assert s2.output_shape == (2, 5)
    np.testing.assert_allclose(s2.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m.body.weight, body_w)  # kept parameters keep their values
    assert not m.body.weight.flags.owndata and not m.fc.weight.flags.owndata  # views of the new store
    with pytest.raises(cn.Error, match=r"compiled before .*module 'fc' replaced.*compile the model again"):
        s1.run(X)
    # the new session shares the module's arrays
    with cn.no_grad():
        m.fc.weight[...] = 0
    np.testing.assert_allclose(s2.run(X), np.broadcast_to(np.asarray(m.fc.bias), (2, 5)), rtol=1e-6)


def test_a_training_session_of_an_old_structure_is_refused_not_silently_detached():
    cn.manual_seed(2)
    m = TwoLayer()
    opt = cn.optim.SGD(lr=0.1)
    train = m.compile(X.shape, mode="train", optimizer=opt)
    y = np.array([0, 2], np.int32)
    train.step(X, y)
    m.body = nn.Linear(4, 6)
    m.fc = nn.Linear(6, 3)
    infer = m.compile(X.shape)
    with pytest.raises(cn.Error, match="compile the model again"):
        train.step(X, y)
    opt.lr = 0.05  # the optimizer still sets its other sessions' rate
    np.testing.assert_allclose(infer.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)


def test_setting_a_bias_to_none_after_compile():
    cn.manual_seed(3)
    m = TwoLayer()
    m.compile(X.shape)
    m.fc.bias = None
    assert "fc.bias" not in m.state_dict() and m.fc.bias is None
    s = m.compile(X.shape)
    np.testing.assert_allclose(s.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)
    m.fc.bias = nn.Parameter(np.full(3, 2.0))
    s = m.compile(X.shape)
    np.testing.assert_allclose(s.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)


def test_assigning_a_same_shaped_parameter_after_compile_writes_into_the_store():
    cn.manual_seed(4)
    m = TwoLayer()
    s = m.compile(X.shape)
    view = m.fc.weight
    m.fc.weight = nn.Parameter(np.ones((3, 4)))
    assert m.fc.weight is view and (view == 1).all()  # documented: the attribute stays the store's view
    np.testing.assert_allclose(s.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)


def test_state_dict_of_a_submodule_keeps_the_parents_store():
    cn.manual_seed(5)
    m = TwoLayer()
    s = m.compile(X.shape)
    sub = m.fc.state_dict()
    assert set(sub) == {"weight", "bias"}
    with cn.no_grad():
        sub["weight"][...] = 0  # a write through the submodule's state_dict reaches the parent's session
        m.fc.bias[...] = 1
    np.testing.assert_allclose(s.run(X), np.ones((2, 3)), rtol=1e-6)


def test_deleting_and_inserting_layers_after_compile():
    cn.manual_seed(6)

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    m = Stack()
    s1 = m.compile(X.shape)
    w1 = np.array(m.layers[1].weight)
    del m.layers[0]
    assert list(m.state_dict()) == ["layers.0.weight", "layers.0.bias"]
    np.testing.assert_array_equal(m.state_dict()["layers.0.weight"], w1)
    s2 = m.compile(X.shape)
    ref = X @ w1.T + np.asarray(m.layers[0].bias)
    np.testing.assert_allclose(s2.run(X), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(cn.Error, match="compile the model again"):
        s1.run(X)
    m.layers.insert(0, nn.Identity())
    m.layers.append(nn.Linear(4, 2))
    s3 = m.compile(X.shape)
    assert list(m.state_dict()) == ["layers.1.weight", "layers.1.bias", "layers.2.weight", "layers.2.bias"]
    ref = ref @ np.asarray(m.layers[2].weight).T + np.asarray(m.layers[2].bias)
    np.testing.assert_allclose(s3.run(X), ref, rtol=1e-5, atol=1e-6)


def test_module_dict_model_compiles_and_routes_by_key():
    cn.manual_seed(7)

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleDict({"cls": nn.Linear(4, 3), "reg": nn.Linear(4, 1)})
            self.which = "cls"

        def forward(self, x):
            return self.heads[self.which](x)

    m = Heads()
    assert list(m.state_dict()) == ["heads.cls.weight", "heads.cls.bias", "heads.reg.weight", "heads.reg.bias"]
    s = m.compile(X.shape)
    h = m.heads["cls"]
    np.testing.assert_allclose(s.run(X), X @ np.asarray(h.weight).T + np.asarray(h.bias), rtol=1e-5, atol=1e-6)
    m.which = "reg"
    assert m.compile(X.shape).output_shape == (2, 1)


def test_shared_module_and_tied_weights_in_a_graph():
    cn.manual_seed(8)

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = self.a  # the same module under two names: one set of parameters
            self.enc = nn.Linear(4, 4)
            self.dec = nn.Linear(4, 4)
            self.dec.weight = self.enc.weight  # tied weights

        def forward(self, x):
            return self.dec(self.enc(self.b(self.a(x))))

    m = Shared()
    assert [n for n, _ in m.named_parameters()] == ["a.weight", "a.bias", "enc.weight", "enc.bias", "dec.bias"]
    assert list(m.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias", "enc.weight", "enc.bias",
                                    "dec.weight", "dec.bias"]
    s = m.compile(X.shape)
    assert m.dec.weight is m.enc.weight and m.b is m.a

    def ref():
        lin = lambda v, mod: v @ np.asarray(mod.weight).T + np.asarray(mod.bias)
        return lin(lin(lin(lin(X, m.a), m.a), m.enc), m.dec)

    np.testing.assert_allclose(s.run(X), ref(), rtol=1e-5, atol=1e-5)
    with cn.no_grad():
        m.enc.weight[...] = np.eye(4, dtype=np.float32)  # one array for both layers
    np.testing.assert_allclose(s.run(X), ref(), rtol=1e-5, atol=1e-5)
    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    sd["dec.weight"] = sd["enc.weight"] = np.full((4, 4), 0.5, np.float32)
    m.load_state_dict(sd)
    assert (m.dec.weight == 0.5).all()
    np.testing.assert_allclose(s.run(X), ref(), rtol=1e-5, atol=1e-5)
    # training updates the one tied array (gradients of both uses)
    train = m.compile(X.shape, mode="train", optimizer=cn.optim.SGD(lr=0.1))
    before = np.array(m.enc.weight)
    train.step(X, np.array([0, 1], np.int32))
    assert not np.array_equal(before, m.enc.weight) and m.dec.weight is m.enc.weight


def test_deepcopy_of_a_compiled_model_is_independent():
    import copy
    import pickle

    cn.manual_seed(10)
    m = TwoLayer()
    m.dec = m.body  # a shared module stays shared in the copy
    s = m.compile(X.shape)
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert list(c.state_dict()) == list(m.state_dict()) and c.dec is c.body
        sc = c.compile(X.shape)
        np.testing.assert_allclose(sc.run(X), s.run(X), rtol=1e-6)
        with cn.no_grad():
            c.fc.bias[...] = 7
        np.testing.assert_allclose(sc.run(X), _ref(c, X), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.run(X), _ref(m, X), rtol=1e-5, atol=1e-6)  # the original is untouched
        assert not (m.fc.bias == 7).any()


class Blur(nn.Module):
    """A fixed depthwise 3x3 box filter kept as a non-persistent buffer, then a trainable 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", np.full((2, 1, 3, 3), 1 / 9, np.float32), persistent=False)
        self.conv = nn.Conv2d(2, 3, 1)

    def forward(self, x):
        y = F.conv2d(x, self._tensor("kernel"), None, 1, 1, groups=2)
        return self.conv(y).flatten(1)


def _blur_ref(m, x):
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    k = np.asarray(m.kernel)
    y = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            y += p[:, :, i:i + x.shape[2], j:j + x.shape[3]] * k[:, 0, i, j][None, :, None, None]
    z = np.einsum("kc,nchw->nkhw", np.asarray(m.conv.weight)[:, :, 0, 0], y) + np.asarray(m.conv.bias)[:, None, None]
    return z.reshape(len(x), -1)


def test_non_persistent_buffer_compiled_traced_and_trained():
    cn.manual_seed(9)
    m = Blur()
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    assert list(m.state_dict()) == ["conv.weight", "conv.bias"]
    assert [n for n, _ in m.named_buffers()] == ["kernel"]
    s = m.compile(x.shape)
    assert not m.kernel.flags.owndata  # in the store, as a non-trainable entry
    np.testing.assert_allclose(s.run(x), _blur_ref(m, x), rtol=1e-5, atol=1e-5)
    with cn.no_grad():
        m.kernel[...] = 0
        m.kernel[:, 0, 1, 1] = 1  # identity filter: a write through the buffer reaches the session
    np.testing.assert_allclose(s.run(x), _blur_ref(m, x), rtol=1e-5, atol=1e-5)
    # load_state_dict(strict=True) neither needs nor touches it
    m.load_state_dict({k: np.array(v) for k, v in m.state_dict().items()})
    assert m.kernel[0, 0, 1, 1] == 1
    kernel = np.array(m.kernel)
    train = m.compile(x.shape, mode="train", optimizer=cn.optim.SGD(lr=0.5), loss="mse")
    w0 = np.array(m.conv.weight)
    train.step(x, np.zeros((2, 75), np.float32))
    np.testing.assert_array_equal(m.kernel, kernel)  # a buffer: not trained
    assert not np.array_equal(w0, m.conv.weight)
    np.testing.assert_allclose(s.run(x), _blur_ref(m, x), rtol=1e-5, atol=1e-5)
    # a saved model needs the buffer to run: the file keeps it
    g = cn.load(cn.io.dumps(m, x.shape))
    np.testing.assert_allclose(g.compile(x.shape).run(x), _blur_ref(m, x), rtol=1e-5, atol=1e-5)


def test_non_persistent_buffer_exported_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import cnnnative.onnx as cno
    cn.manual_seed(9)
    m = Blur()
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    for src in (m, cn.load(cn.io.dumps(m, x.shape))):  # a module, and the same model loaded from a .cnn file
        path = tmp_path / "blur.onnx"
        cno.export_model(src, path, x.shape)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, _blur_ref(m, x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ torchvision's BasicBlock, end to end
def _conv3x3(lib, cin, cout, stride=1):
    return lib.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _basic_block_class(lib, base, functional_add):
    """The BasicBlock of torchvision, with the shortcut assigned the way its users write it: None first,
    a projection when needed (`force_projection` asks for one even where the shapes already match)."""

    class BasicBlock(base):
        def __init__(self, inplanes, planes, stride=1, force_projection=False):
            super().__init__()
            self.conv1 = _conv3x3(lib, inplanes, planes, stride)
            self.bn1 = lib.BatchNorm2d(planes)
            self.relu = lib.ReLU(inplace=True)
            self.conv2 = _conv3x3(lib, planes, planes)
            self.bn2 = lib.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes or force_projection:
                self.downsample = lib.Sequential(
                    lib.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), lib.BatchNorm2d(planes))
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(functional_add(out, identity))

    return BasicBlock


@pytest.mark.parametrize("inplanes,planes,stride,force", [
    (4, 8, 2, False),  # the shortcut changes the shape: skipping it would fail to compile
    (6, 6, 1, True),   # same shapes: skipping the projection would compute a wrong result silently
    (6, 6, 1, False),  # no projection
])
def test_torchvision_basic_block_matches_torch(inplanes, planes, stride, force):
    torch = pytest.importorskip("torch")
    TBlock = _basic_block_class(torch.nn, torch.nn.Module, lambda a, b: a + b)
    CBlock = _basic_block_class(nn, nn.Module, lambda a, b: a + b)
    torch.manual_seed(0)
    tb = TBlock(inplanes, planes, stride, force)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for mod in tb.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    tb.eval()
    cb = CBlock(inplanes, planes, stride, force)
    cb.load_state_dict({k: v.detach().numpy() for k, v in tb.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, inplanes, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = tb(torch.from_numpy(x)).numpy()
    got = cb.compile(x.shape, winograd=False).run(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (cb.downsample is None) == (tb.downsample is None)
    assert list(cb.state_dict()) == list(tb.state_dict())
    assert [n for n, _ in cb.named_modules()] == [n for n, _ in tb.named_modules()]


@pytest.mark.parametrize("force", [False, True])
def test_torchvision_basic_block_projection_is_used(force):
    """Without torch: the block's output with the projection differs from the identity shortcut's, and
    equals the one computed from the shortcut's parameters."""
    CBlock = _basic_block_class(nn, nn.Module, lambda a, b: a + b)
    cn.manual_seed(0)
    b = CBlock(6, 6, 1, force)
    assert ("downsample.0.weight" in b.state_dict()) == force
    x = np.random.default_rng(0).standard_normal((1, 6, 5, 5)).astype(np.float32)
    s = b.compile(x.shape)
    out = s.run(x)
    if force:  # a shortcut of zeros (conv weights 0, BN shift 0) must change the output
        with cn.no_grad():
            b._modules["downsample"][0].weight[...] = 0  # (_modules: reachable on the old code too)
            b.state_dict()["downsample.1.bias"][...] = 0
        assert not np.allclose(s.run(x), out)
    assert (b.downsample is not None) == force
    assert [n for n, _ in b.named_children()] == ["conv1", "bn1", "relu", "conv2", "bn2"] + (["downsample"] if force
                                                                                             else [])
