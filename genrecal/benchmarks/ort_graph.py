"""An ONNX graph as onnxruntime's CPU provider actually runs it: after its graph optimisations.

    model = optimized_model("EXPORT/onnx-int4/onnx/decoder_model_merged_q4.onnx", "all")
    print(op_counts(model).most_common(8))    # e.g. MatMulNBits, SkipSimplifiedLayerNormalization, ...

Used to count the weight bytes a decode step reads (bandwidth.py) and to show which fused contrib
ops (GroupQueryAttention, RotaryEmbedding, SkipSimplifiedLayerNormalization, ...) a graph ends up with.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

LEVELS = ("basic", "extended", "all")


def optimized_model(graph: str | Path, level: str = "all"):
    """onnx.ModelProto of `graph` after onnxruntime's optimisations at `level` (CPU provider); weights
    are not loaded (external data left on disk and deleted)."""
    import onnx
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory(prefix="genrecal-ortopt-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[level]
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "run.onnx")
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "run.onnx.data")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(Path(tmp) / "run.onnx"), load_external_data=False)


def op_counts(model) -> Counter:
    """Node count per op type ("com.microsoft:" prefixed for contrib ops)."""
    return Counter(f"{n.domain}:{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                   for n in model.graph.node)
