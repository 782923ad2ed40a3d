"""HQQ's float zero points folded into the MatMulNBits (block sums appended to its input, the offsets as
extra 4-bit rows): the outputs of the float-zero-point graph in onnxruntime, within a small fraction of
HQQ's own error; no float zero point left; one input's block sums shared by its MatMuls.

    python -m pytest tests/export/test_onnx_zero_points.py -q
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from genrecal.export.onnx.nodes import attrs
from genrecal.export.onnx.zero_points import fold_float_zero_points


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


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@pytest.mark.parametrize("k", [96, 1536])  # 3 blocks; 48 blocks = 2 blocks of offsets per replica
def test_fold_keeps_the_outputs_and_leaves_no_float_zero_point(k):
    source = _two_matmuls(k=k, n=40)
    hqq = _hqq(_copy(source))
    assert sum(n.op_type == "MatMulNBits" and len(n.input) > 3 for n in hqq.graph.node) == 2  # float zero points
    folded = _copy(hqq)
    assert fold_float_zero_points(folded) == {"rewritten": 2, "skipped": 0}
    onnx.checker.check_model(folded)
    nbits = [n for n in folded.graph.node if n.op_type == "MatMulNBits"]
    assert all(len(n.input) == 3 for n in nbits)  # default zero point 8: the packed kernel
    assert all(attrs(n)["K"] == k + 2 * -(-(k // 32) // 32) * 32 for n in nbits)  # 2 replicas of the offsets
    assert sum(n.name.endswith("/zero_point_block_sums") for n in folded.graph.node) == 1  # shared by x's users
    assert not any(t.data_type == TensorProto.FLOAT and "zero_points" in t.name for t in folded.graph.initializer)
    x = np.random.default_rng(1).standard_normal((2, 5, k)).astype(np.float32)
    exact = [x @ numpy_helper.to_array(t) for t in sorted(source.graph.initializer, key=lambda t: t.name)]
    for want, before, after in zip(exact, _run(hqq, x), _run(folded, x)):
        added = np.abs(after - before)
        # the fold adds a small part of HQQ's own error: measured max 0.010-0.13, mean 0.008-0.037 of it
        assert added.max() <= 0.2 * np.abs(before - want).max()
        assert added.mean() <= 0.06 * np.abs(before - want).mean()
    # and the offsets really mattered: with the appended rows zeroed the outputs move by far more
    bare = _copy(folded)
    for init in bare.graph.initializer:
        if init.name.startswith("zero_point_fold_"):
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    assert np.abs(_run(bare, x)[0] - _run(hqq, x)[0]).max() > 0.1


def test_blocks_that_do_not_divide_k_are_left_alone():
    hqq = _hqq(_two_matmuls(k=80, n=16))  # 80 = 2.5 blocks of 32
    if not any(len(n.input) > 3 for n in hqq.graph.node if n.op_type == "MatMulNBits"):
        pytest.skip("this onnxruntime's HQQ wrote no float zero points for a ragged K")
    x = np.random.default_rng(2).standard_normal((1, 3, 80)).astype(np.float32)
    before = _run(hqq, x)
    assert fold_float_zero_points(hqq) == {"rewritten": 0, "skipped": 2}
    assert all(np.array_equal(a, b) for a, b in zip(before, _run(hqq, x)))
