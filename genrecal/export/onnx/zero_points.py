"""Float zero points of 4-bit MatMulNBits (HQQ) folded into the node, so onnxruntime's fast CPU kernel runs it.

    fold_float_zero_points(model)   # in place; {"rewritten": n, "skipped": m}

HQQ fits a scale s and a *fractional* zero point z per block of B weights: W = s * (q - z). onnxruntime
(1.32, CPU) prepacks MatMulNBits' 4-bit weights only when the zero points are absent or uint8; with
float zero points it rebuilds fp32 weights on every call (small-smollm2's text decoder, 1 thread: 5.5
tok/s). Rounding z to an integer costs most of HQQ's accuracy (real-text top-1 0.96 -> 0.61). With
MatMulNBits' default zero point c = 8:

    s * (q - z) = s * (q - c) + s * (c - z)

so x @ W^T = x @ Wq^T + bsum(x) @ O, where bsum(x) [.., K/B] sums x over each block and O [K/B, N] =
(s * (c - z))^T holds one offset per block and output column. The fold appends bsum(x) to the node's
input (a MatMul with a 0/1 table and a Concat, shared by every node reading the same x: gate/up) and
O to its weights as extra 4-bit rows: `replicas` stacked copies, each quantising what the previous
ones left (residual quantisation, symmetric around c, one scale per block of B offsets). One node
stays one node, prepacked. Error: 2 replicas leave ~1e-3 of the output's scale (tests measure it
against HQQ's own error). Against the exact form it replaced (a fp32 correction MatMul + Add per node
beside MatMulNBits), on small-smollm2's builder-route decoder at accuracy level 4: top-1 0.965 vs 0.969
over 256 tokens; decode 1.04x / 1.08x at 1 / 2 threads (each as a ratio to onnxruntime-genai's int4 in
its own run); 548 decoder nodes instead of 728 (onnxruntime spends microseconds per node). 3 replicas
measured top-1 0.949 and ran slower: at level 4 the block sums' own int8 rounding dominates.
Extra rows: replicas * ceil(K/B / B) * B, 11 % of K = 576.
Nodes whose K is not a multiple of B, with g_idx / bias inputs, or not 4-bit are left (`skipped`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from genrecal.export.onnx.nodes import attrs, set_attr

ZERO_POINT_NODES = ("/zero_point_block_sums", "/zero_point_concat")
"""Name endings of the nodes the fold adds (manifest counts leave them out of `kept_float`)."""
FOLD_REPLICAS = 2
"""Stacked 4-bit copies of the per-block offsets (residual quantisation; see the module docstring)."""


def _float_zero_point(node, inits: dict):
    """The node's float zero-point initializer, or None (no zero point, uint8 packed, or not an initializer)."""
    if node.op_type != "MatMulNBits" or len(node.input) < 4 or not node.input[3]:
        return None
    zp = inits.get(node.input[3])
    return zp if zp is not None and zp.data_type != onnx.TensorProto.UINT8 else None


def fold_float_zero_points(model: onnx.ModelProto, replicas: int = FOLD_REPLICAS) -> dict:
    """Rewrite every MatMulNBits with float zero points in `model.graph` into one MatMulNBits with more
    input rows (module docstring). Returns {"rewritten": n, "skipped": m}; m counts nodes left as they are
    (K not a multiple of the block, or g_idx / bias inputs)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    tables: dict[tuple[int, int], str] = {}
    augmented: dict[tuple[str, int, int], str] = {}  # (x, K, B) -> concat(x, replicated block sums)
    inserts: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    done = skipped = 0
    for i, node in enumerate(list(graph.node)):
        zp = _float_zero_point(node, inits)
        if zp is None:
            continue
        a = attrs(node)
        k, n, block, bits = a["K"], a["N"], a["block_size"], a["bits"]
        if k % block or len(node.input) > 4 or bits != 4:
            skipped += 1
            continue
        node.name = node.name or f"MatMulNBits_{i}"
        blocks = k // block
        chunks = -(-blocks // block)  # blocks of block sums per replica
        extra = replicas * chunks * block  # new input rows
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, blocks).astype(np.float64)
        zeros = numpy_helper.to_array(zp).reshape(n, blocks).astype(np.float64)
        codes, extra_scales = _residual_4bit(scales * (8 - zeros), replicas, chunks, block)  # [N, r*c, B], [N, r*c]
        packed = numpy_helper.to_array(inits[node.input[1]]).reshape(n, blocks, block // 2)
        new_packed = np.concatenate([packed, (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)], axis=1)
        new_scales = np.concatenate([scales, extra_scales], axis=1).astype(np.float32).reshape(-1)
        node.input[1] = _add_init(graph, new_packed, f"{node.name}/folded_B")
        node.input[2] = _add_init(graph, new_scales, f"{node.name}/folded_scales")
        del node.input[3:]
        set_attr(node, "K", k + extra)
        x = node.input[0]
        if (k, extra) not in tables:
            table = np.zeros((k, extra), np.float32)
            for r in range(replicas):
                table[np.arange(k), r * chunks * block + np.arange(k) // block] = 1.0
            tables[(k, extra)] = _add_init(graph, table, f"zero_point_fold_K{k}_B{block}_R{replicas}")
        key = (x, k, extra)
        if key not in augmented:
            sums, augmented[key] = f"{node.name}/block_sums", f"{node.name}/with_block_sums"
            inserts.append((node, helper.make_node("MatMul", [x, tables[(k, extra)]], [sums],
                                                   name=f"{node.name}/zero_point_block_sums")))
            inserts.append((node, helper.make_node("Concat", [x, sums], [augmented[key]], axis=-1,
                                                   name=f"{node.name}/zero_point_concat")))
        node.input[0] = augmented[key]
        done += 1
    _insert_before(graph, inserts)
    used = {i for nd in graph.node for i in nd.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return {"rewritten": done, "skipped": skipped}


def _residual_4bit(offsets: np.ndarray, replicas: int, chunks: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """offsets [N, blocks] (float64) as `replicas` stacked 4-bit blocks per chunk of `block` offsets, each
    quantising what the previous ones left (symmetric around MatMulNBits' default zero point 8).
    Returns codes [N, replicas * chunks, block] (int, 0..15) and scales [N, replicas * chunks]."""
    n, blocks = offsets.shape
    left = np.zeros((n, chunks * block))
    left[:, :blocks] = offsets
    left = left.reshape(n, chunks, block)
    codes, scales = [], []
    for _ in range(replicas):
        scale = np.abs(left).max(-1, keepdims=True) / 7.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(left / scale), -8, 7)
        left = left - q * scale
        codes.append((q + 8).astype(np.int64))
        scales.append(scale[..., 0])
    return np.concatenate(codes, axis=1), np.concatenate(scales, axis=1)


def _add_init(graph, array: np.ndarray, name: str) -> str:
    graph.initializer.append(numpy_helper.from_array(array, name))
    return name


def _insert_before(graph, inserts) -> None:
    """Insert each new node right before its anchor (the anchor now reads their output), keeping their order."""
    before: dict[str, list] = {}
    for anchor, node in inserts:
        before.setdefault(anchor.name, []).append(node)
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        graph.node.extend(before.get(node.name, []))
        graph.node.append(node)
