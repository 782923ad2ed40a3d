"""Memory bandwidth and the roofline bound on decode speed.

    python -c "from genrecal.benchmarks.bandwidth import measure_bandwidth; print(measure_bandwidth())"

Decoding one token reads every decoder weight once (batch 1, weights >> caches), so
decode tok/s <= bandwidth / bytes of weights read per token. Bandwidth is measured here with a
large numpy copy (2 bytes moved per byte copied) and a large read (a sum); the faster of the two
is the bound, so the percentage is never flattered by a pessimistic measurement. The KV cache
(~1% of the weights for the short prompts benchmarked here) and activations are left out.
"""
from __future__ import annotations

import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from genrecal.errors import GenrecalError

# parameter-name pieces of parts that a decode step does not read
_NOT_DECODER = ("vision", "visual", "connector", "multi_modal_projector", "mm_projector", "mlp1.", "image_newline")
_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def measure_bandwidth(size_mb: int = 256, repeats: int = 5, threads: int = 1) -> dict:
    """Best-of-`repeats` copy and read bandwidth (GB/s, 1e9 bytes) over a `size_mb` buffer, split into
    `threads` slices that as many threads copy/sum at once (numpy releases the GIL in both), so the
    bound uses as many cores as the decode it is compared with."""
    threads = max(1, int(threads))
    src = np.ones(size_mb * 2**20 // 8)  # float64; far larger than any CPU cache
    dst = np.empty_like(src)
    parts = list(zip(np.array_split(src, threads), np.array_split(dst, threads)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        def each(fn):
            return lambda: list(pool.map(fn, parts))

        copy_s = _best(each(lambda p: np.copyto(p[1], p[0])), repeats)
        read_s = _best(each(lambda p: p[0].sum()), repeats)
    copy_gbs = 2 * src.nbytes / copy_s / 1e9
    read_gbs = src.nbytes / read_s / 1e9
    return {"method": f"numpy copy + sum over {size_mb} MiB in {threads} thread(s), best of {repeats}",
            "threads": threads, "copy_gbs": round(copy_gbs, 2), "read_gbs": round(read_gbs, 2),
            "bandwidth_gbs": round(max(copy_gbs, read_gbs), 2)}


def _best(fn, repeats: int) -> float:
    fn()  # touch the pages first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def roofline(decode_tok_s: float, bandwidth_gbs: float, bytes_per_token: int) -> dict:
    """The decode bound (tok/s) and how close a measured rate gets to it (%)."""
    if not bandwidth_gbs or not bytes_per_token:
        return {"bound_tok_s": None, "pct_of_bound": None}
    bound = bandwidth_gbs * 1e9 / bytes_per_token
    return {"bound_tok_s": round(bound, 2), "pct_of_bound": round(100 * decode_tok_s / bound, 1)}


# ---- bytes of weights one decode step reads, per artifact format ----
def weight_bytes_per_token(path: str | Path, fmt: str, files: list[str] | None = None,
                           compute_itemsize: int | None = None, onnx_level: str = "all") -> dict:
    """{"bytes", "source"}: the decoder weights (LM head included, embedding table and vision
    tower excluded) of an artifact dir in format hf/onnx/gguf/tensorrt, in the dtype they are run in.
    compute_itemsize (hf only): bytes per element the weights are held in when run (a bf16 checkpoint
    run in fp32: 4), default the checkpoint's own. onnx_level: the runtime's onnxruntime graph
    optimisation level (basic | all): ONNX weights are counted in the graph onnxruntime runs."""
    root = Path(path)
    files = files if files is not None else [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    if fmt == "hf":
        return _hf_bytes(root, files, compute_itemsize)
    if fmt == "onnx":
        graphs = [f for f in files if Path(f).name.startswith("decoder") and f.endswith(".onnx")]
        if len(graphs) != 1:
            raise GenrecalError(f"{root}: expected one decoder*.onnx graph, found {graphs or 'none'}")
        return onnx_run_bytes(root / graphs[0], onnx_level)
    if fmt == "tensorrt":
        return _named_bytes(root, files, "decoder", "decoder engine")
    if fmt == "gguf":
        return _gguf_bytes(root, files)
    raise GenrecalError(f"no weight-size rule for artifact format {fmt!r}")


def _named_bytes(root: Path, files: list[str], stem: str, source: str) -> dict:
    chosen = [f for f in files if Path(f).name.startswith(stem)]
    if not chosen:
        raise GenrecalError(f"{root}: no {stem}* file to size the decoder weights")
    return {"bytes": sum((root / f).stat().st_size for f in chosen), "source": f"{source}: {', '.join(chosen)}"}


def safetensors_header(path: Path) -> dict:
    """Tensor name -> {dtype, shape, data_offsets}, read from the header only (no weights loaded)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def _hf_bytes(root: Path, files: list[str], itemsize: int | None = None) -> dict:
    tensors: dict[str, int] = {}
    for f in files:
        if f.endswith(".safetensors"):
            for name, info in safetensors_header(root / f).items():
                start, end = info["data_offsets"]
                tensors[name] = int(np.prod(info["shape"], dtype=np.int64)) * itemsize if itemsize else end - start
    if not tensors:
        raise GenrecalError(f"{root}: no .safetensors weights to size")
    decoder = {n: b for n, b in tensors.items() if not any(k in n for k in _NOT_DECODER)}
    tied = not any(n.startswith("lm_head.") or ".lm_head." in n for n in decoder)
    total = sum(b for n, b in decoder.items() if tied or "embed_tokens" not in n)
    # a tied head reads the whole embedding table as the LM head; an untied one reads one row of it
    held = f" at {itemsize} bytes/element" if itemsize else ""
    return {"bytes": total, "source": f"safetensors: text decoder + LM head{held}" + (" (tied)" if tied else "")}


def _gguf_bytes(root: Path, files: list[str]) -> dict:
    text = [f for f in files if f.endswith(".gguf") and "mmproj" not in Path(f).name.lower()]
    if len(text) != 1:
        raise GenrecalError(f"{root}: expected one text-model .gguf besides the mmproj, found {text or 'none'}")
    try:
        from gguf import GGUFReader
    except ImportError:
        return {"bytes": (root / text[0]).stat().st_size, "source": f"file size of {text[0]} (gguf not installed)"}
    sizes = {t.name: int(t.n_bytes) for t in GGUFReader(root / text[0]).tensors}
    tied = "output.weight" not in sizes
    total = sum(b for n, b in sizes.items() if tied or n != "token_embd.weight")
    return {"bytes": total, "source": f"GGUF tensors of {text[0]}" + (" (tied head)" if tied else "")}


def onnx_run_bytes(graph: str | Path, level: str = "all") -> dict:
    """Initializer bytes of the graph onnxruntime (CPU) actually runs: the graph after its optimisations
    at `level` (so fp16 weights its CPU kernels need in fp32 count as fp32), minus tables read only by a
    Gather (an embedding lookup reads one row per token). {"bytes", "source"}."""
    from genrecal.benchmarks.ort_graph import optimized_model

    model = optimized_model(graph, level)
    gather_only = _gather_tables(model.graph)
    sizes = {t.name: _initializer_bytes(t) for t in model.graph.initializer}
    total = sum(b for n, b in sizes.items() if n not in gather_only)
    return {"bytes": total, "source": f"initializers of {Path(graph).name} as onnxruntime runs it (level {level}), "
                                      f"{len(gather_only)} lookup table(s) excluded"}


def _gather_tables(graph) -> set[str]:
    """Initializers every consumer of which is a Gather-type lookup reading them as its table."""
    uses: dict[str, set[bool]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, set()).add(node.op_type.startswith("Gather") and i == 0)
    return {name for name, kinds in uses.items() if kinds == {True}}


def _initializer_bytes(t) -> int:
    """Elements x item size (MatMulNBits keeps its packed 4/8-bit blocks as uint8 tensors)."""
    import onnx

    return int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
