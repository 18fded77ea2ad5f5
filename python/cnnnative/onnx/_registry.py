"""Op mappers registered by the op-family modules (_ops_act, _ops_binary, _ops_reduce, _ops_norm, _ops_shape,
_ops_resize): ONNX op type -> importer mapper, and engine op -> exporter function. _importer.HANDLERS and
_exporter's emit() consult these tables, so a family adds ONNX support in its own file.

    @imports("HardSwish", engine_ops=("hardswish",))
    def map_hardswish(ctx): ...            # as the mappers in _ops_math.py (ctx: _emit.NodeContext)

    @exports("hardswish")
    def export_hardswish(ex, ins, attrs, outs, name, I, O):
        ex.node("HardSwish", I, O, name)   # ex: _exporter's writer (node, const, shape, name helpers)
"""
from __future__ import annotations

IMPORTERS: dict = {}   # ONNX op type -> mapper(ctx)
ENGINE_OPS: dict = {}  # ONNX op type -> engine ops its mapper emits (checked against the build)
EXPORTERS: dict = {}   # engine op -> fn(ex, ins, attrs, outs, name, I, O)
WEIGHT_SLOTS: dict = {}  # ONNX op type -> {input index: trainable}: inputs imported as module parameters


def imports(*op_types, engine_ops=()):
    def deco(fn):
        for t in op_types:
            if t in IMPORTERS:
                raise RuntimeError(f"ONNX op {t} has two importers")
            IMPORTERS[t] = fn
            if engine_ops:
                ENGINE_OPS[t] = tuple(engine_ops)
        return fn
    return deco


def exports(*engine_ops):
    def deco(fn):
        for op in engine_ops:
            if op in EXPORTERS:
                raise RuntimeError(f"engine op {op} has two exporters")
            EXPORTERS[op] = fn
        return fn
    return deco
