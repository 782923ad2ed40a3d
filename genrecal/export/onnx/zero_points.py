"""Float zero points of 4-bit MatMulNBits (HQQ) rewritten so onnxruntime's fast CPU kernel runs them.

    n = split_float_zero_points(model)   # in place; returns how many MatMulNBits were rewritten

HQQ fits a scale s and a *fractional* zero point z per block of B weights: W = s * (q - z). onnxruntime
(1.32, CPU) prepacks MatMulNBits' 4-bit weights only when the zero points are absent or uint8; with
float zero points it rebuilds fp32 weights on every call (measured on small-smollm2's text decoder at
1 thread: 5.5 tok/s against 39.4 tok/s after this rewrite). The rewrite is an exact identity:

    s * (q - z) = s * (q - c) + s * (c - z),   c = 2^(bits-1), MatMulNBits' default zero point

so x @ W^T = MatMulNBits(x; q, s, no zero point) + (x @ S) @ M, where S [K, K/B] sums x over each
block (S[k, k // B] = 1) and M [K/B, N] = (s * (c - z))^T. The corrections are two small standard
MatMuls and an Add per node (K/B = K/32 columns); the block sums are shared between nodes reading
the same input (q/k/v, gate/up). M has the size of the float zero points it replaces. Nodes whose K
is not a multiple of B are left as they are (counted in `skipped`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ZERO_POINT_NODES = ("/zero_point_block_sums", "/zero_point_matmul", "/zero_point_add")
"""Name endings of the nodes the rewrite adds (manifest counts leave them out of `kept_float`)."""


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _float_zero_point(node, inits: dict):
    """The node's float zero-point initializer, or None (no zero point, uint8 packed, or not an initializer)."""
    if node.op_type != "MatMulNBits" or len(node.input) < 4 or not node.input[3]:
        return None
    zp = inits.get(node.input[3])
    return zp if zp is not None and zp.data_type != onnx.TensorProto.UINT8 else None


def split_float_zero_points(model: onnx.ModelProto) -> dict:
    """Rewrite every MatMulNBits with float zero points in `model.graph` (see the module docstring).
    Returns {"rewritten": n, "skipped": m}. Exact up to fp32 rounding of the summation order."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    block_sum_tables: dict[tuple[int, int], str] = {}
    block_sums: dict[tuple[str, int], str] = {}  # (input, B) -> its block sums
    inserts: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (after this node, insert that one)
    done = skipped = 0
    for i, node in enumerate(list(graph.node)):
        zp = _float_zero_point(node, inits)
        if zp is None:
            continue
        node.name = node.name or f"MatMulNBits_{i}"  # anchors are found by name
        a = _attrs(node)
        k, n, block, bits = a["K"], a["N"], a["block_size"], a["bits"]
        if k % block:
            skipped += 1
            continue
        blocks = k // block
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, blocks).astype(np.float64)
        zeros = numpy_helper.to_array(zp).reshape(n, blocks).astype(np.float64)
        correction = (scales * (2 ** (bits - 1) - zeros)).T.astype(np.float32)  # [K/B, N]
        node.input[3] = ""  # no zero point: MatMulNBits uses 2^(bits-1)
        while node.input and not node.input[-1]:
            node.input.pop()
        x = node.input[0]
        if (k, block) not in block_sum_tables:
            table = np.zeros((k, blocks), np.float32)
            table[np.arange(k), np.arange(k) // block] = 1.0
            block_sum_tables[(k, block)] = name = f"zero_point_block_sum_K{k}_B{block}"
            graph.initializer.append(numpy_helper.from_array(table, name))
        if (x, block) not in block_sums:
            block_sums[(x, block)] = sums = f"{node.name}/block_sums"
            inserts.append((node, helper.make_node("MatMul", [x, block_sum_tables[(k, block)]], [sums],
                                                   name=f"{node.name}/zero_point_block_sums")))
        weight = f"{node.name}/zero_point_correction"
        graph.initializer.append(numpy_helper.from_array(correction, weight))
        out = node.output[0]
        node.output[0] = f"{out}/without_zero_point"
        inserts.append((node, helper.make_node("MatMul", [block_sums[(x, block)], weight], [f"{out}/zero_point"],
                                               name=f"{node.name}/zero_point_matmul")))
        inserts.append((node, helper.make_node("Add", [node.output[0], f"{out}/zero_point"], [out],
                                               name=f"{node.name}/zero_point_add")))
        done += 1
    _insert_after(graph, inserts)
    used = {i for nd in graph.node for i in nd.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return {"rewritten": done, "skipped": skipped}


def _insert_after(graph, inserts) -> None:
    """Insert each new node right after its anchor, keeping their order (topological: an anchor reads
    x, so x exists; a later anchor comes after the first one, whose block sums it reuses)."""
    after: dict[str, list] = {}
    for anchor, node in inserts:
        after.setdefault(anchor.name, []).append(node)
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        graph.node.append(node)
        graph.node.extend(after.get(node.name, []))
