"""HQQ's float zero points rewritten into a correction MatMul: same outputs in onnxruntime, no float
zero point left, block sums shared between MatMuls of one input.

    python -m pytest tests/export/test_onnx_zero_points.py -q
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from genrecal.export.onnx.zero_points import split_float_zero_points


def _two_matmuls(k: int, n: int, seed: int = 0) -> onnx.ModelProto:
    """y1 = x @ W1, y2 = x @ W2 (two MatMuls on one input, as q/k/v are), x [batch, seq, K]."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((k, n)).astype(np.float32) * 0.05 + 0.01 for _ in range(2)]
    weights[0][:, 0] += 0.3  # a column with an offset: HQQ's zero points are far from 8 there
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"/layer/proj{i}/MatMul") for i in range(2)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["b", "s", n]) for i in range(2)],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _hqq(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True,
                                 algo_config=HQQWeightOnlyQuantConfig(block_size=32, bits=4))
    quant.process()
    return quant.model.model


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def test_rewrite_is_exact_and_leaves_no_float_zero_point():
    hqq = _hqq(_two_matmuls(k=96, n=40))
    floats = [n for n in hqq.graph.node if n.op_type == "MatMulNBits" and len(n.input) > 3]
    assert len(floats) == 2  # HQQ wrote float zero points
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(hqq)
    assert split_float_zero_points(rewritten) == {"rewritten": 2, "skipped": 0}
    onnx.checker.check_model(rewritten)
    nbits = [n for n in rewritten.graph.node if n.op_type == "MatMulNBits"]
    assert all(len(n.input) == 3 for n in nbits)  # default zero point 2^(bits-1): the packed kernel
    assert sum(n.name.endswith("/zero_point_block_sums") for n in rewritten.graph.node) == 1  # shared by x's users
    inits = {t.name: t for t in rewritten.graph.initializer}
    assert not any(t.data_type == TensorProto.FLOAT and "zero_points" in t.name for t in inits.values())
    x = np.random.default_rng(1).standard_normal((2, 5, 96)).astype(np.float32)
    before, after = _run(hqq, x), _run(rewritten, x)
    for b, a in zip(before, after):
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())
    # and the offset column really needed its zero point: without the correction the outputs differ
    bare = onnx.ModelProto()
    bare.CopyFrom(rewritten)
    for node in bare.graph.node:
        if node.op_type == "Add":
            node.input[1] = node.input[0]
    assert np.abs(_run(bare, x)[0] - before[0]).max() > 0.1


def test_blocks_that_do_not_divide_k_are_left_alone():
    hqq = _hqq(_two_matmuls(k=80, n=16))  # 80 = 2.5 blocks of 32
    if not any(len(n.input) > 3 for n in hqq.graph.node if n.op_type == "MatMulNBits"):
        pytest.skip("this onnxruntime's HQQ wrote no float zero points for a ragged K")
    x = np.random.default_rng(2).standard_normal((1, 3, 80)).astype(np.float32)
    before = _run(hqq, x)
    assert split_float_zero_points(hqq) == {"rewritten": 0, "skipped": 2}
    assert all(np.array_equal(a, b) for a, b in zip(before, _run(hqq, x)))
