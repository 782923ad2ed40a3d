"""`genrecal-export`: a clean student -> edge artifacts, checked against PyTorch.

    genrecal-export --student runs/x/student --target cpu --out out/
    genrecal-export --student runs/x/student --target jetson --out out/ --no-check
    genrecal-export --student runs/x/student --target all --out out/ --formats onnx --precision fp32,int8
    genrecal-export build-engine out/tensorrt-plan --out out/tensorrt-engines   # on the Jetson
    genrecal-export check-engine out/tensorrt-engines                          # on the Jetson

Exit status: 0 all artifacts written (and passed their checks); 1 some artifact failed its parity
check or its export; 2 a user error (printed as one line by genrecal.cli).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genrecal.artifacts import layout
from genrecal.export import targets


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genrecal-export", description="export a student for edge devices "
                                "(subcommands: build-engine, check-engine)")
    p.add_argument("--student", required=True, type=Path, help="transformers student dir (safetensors)")
    p.add_argument("--target", required=True, choices=targets.target_names(),
                   help="; ".join(f"{t.name}: {', '.join(a.dirname for a in t.artifacts)}"
                                  for t in targets.TARGETS.values()))
    p.add_argument("--out", required=True, type=Path, help="output root (artifact dirs are replaced atomically)")
    p.add_argument("--formats", type=_csv, help=f"keep only these formats: {', '.join(targets.FORMATS)}")
    p.add_argument("--precision", type=_csv, dest="precisions",
                   help="comma list replacing the target's precisions (e.g. fp32,int8 or q8_0)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="parity against PyTorch for every artifact (default: on)")
    p.add_argument("--strip", action="store_true", help="drop Recalibrator/training tensors instead of refusing")
    p.add_argument("--threads", type=int, help="threads for the parity runs (torch and onnxruntime)")
    p.add_argument("--onnx-decoder", choices=("auto", "builder", "torchscript"), default="auto", dest="onnx_decoder",
                   help="text decoder graph. builder: onnxruntime-genai's model builder's (fused attention; llama-type "
                        "text models at fp32/int4/int8w; fp16/int8 keep genrecal's); torchscript: genrecal's own; auto "
                        "(default): builder for smolvlm and idefics3 where it can write it, else torchscript")
    p.add_argument("--device-profile", dest="device_profile",
                   help="size the TensorRT plan for this device profile's memory (default jetson-orin-nano; "
                        "see genrecal-bench --profile)")
    return p


def engine_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"genrecal-export {command}")
    if command == "build-engine":
        p.add_argument("plan_dir", type=Path, help="the tensorrt-plan dir written by --target jetson")
        p.add_argument("--out", type=Path, help="engine dir (default: a sibling tensorrt-engines)")
        p.add_argument("--workspace-mib", type=int, dest="workspace_mib", help="builder memory pool limit")
    else:
        p.add_argument("engine_dir", type=Path, help="an engine dir written by build-engine")
    return p


def _row(record: dict) -> str:
    """One table line from an ONNX or GGUF parity record."""
    p = record.get("parity") or {}
    # GGUF nests its comparisons under "artifact"/"reference"; ONNX records are flat
    ref = next(c for c in (p.get("artifact"), p.get("reference"), p) if isinstance(c, dict))
    acc = p.get("accuracy") or {}
    diff = ref.get("max_abs_diff", ref.get("max_abs_logit_diff"))
    greedy = ref.get("greedy_identical")
    if isinstance(greedy, int) and not isinstance(greedy, bool) and p.get("samples"):
        greedy = greedy / p["samples"]  # GGUF counts samples
    top1 = ref.get("top1_agreement")
    text = (p.get("text_agreement") or {}).get("top1_agreement")  # real-text top-1 vs PyTorch fp32
    acc_t, acc_a = acc.get("torch", acc.get("torch_exact_match")), acc.get("artifact", acc.get("gguf_exact_match"))

    def fmt(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    status = record["status"] if record["status"] != "error" else f"error: {record.get('error', '')}"
    return (f"{record['dir']:16s} {fmt(diff, '10.2e'):>10s} {fmt(greedy, '7.0%'):>7s} {fmt(top1, '7.0%'):>7s} "
            f"{fmt(text, '9.1%'):>9s} {fmt(acc_t, '9.0%'):>9s} {fmt(acc_a, '8.0%'):>8s}  {status}")


def parity_table(records: list[dict]) -> str:
    head = (f"{'artifact':16s} {'max|diff|':>10s} {'greedy':>7s} {'top-1':>7s} {'text top1':>9s} {'acc torch':>9s} "
            f"{'acc art':>8s}  status")
    return "\n".join([head, "-" * len(head), *(_row(r) for r in records)])


def run_export(args) -> int:
    from genrecal.export.run import ExportOptions, export, failed

    opts = ExportOptions(student=args.student, out=args.out, target=args.target, formats=args.formats,
                         precisions=args.precisions, check=args.check, strip=args.strip, threads=args.threads,
                         device_profile=args.device_profile, onnx_decoder=args.onnx_decoder)
    summary = export(opts)
    print(parity_table(summary["artifacts"]))
    print(f"summary: {args.out / layout.SUMMARY_NAME}")
    plan = next((r for r in summary["artifacts"] if r["format"] == "tensorrt" and r["status"] != "error"), None)
    if plan:
        from genrecal.export.tensorrt import memory_lines

        print("\n".join(memory_lines(json.loads((args.out / plan["dir"] / layout.PLAN_NAME).read_text()))))
        print(f"TensorRT: copy {args.out / plan['dir']} to the Jetson and run `genrecal-export build-engine "
              f"{plan['dir']} --out tensorrt-engines` there (or the trtexec lines in {layout.PLAN_NAME})")
    for edge in (r for r in summary["artifacts"] if r["format"] == "edgellm" and r["status"] != "error"):
        print(f"Edge-LLM: `genrecal-bench bundle --artifact {args.out / edge['dir']} --profile jetson-orin-nano "
              "--out bundle` writes the llm_build / visual_build / llm_inference run + parity check for the Jetson")
    bad = failed(summary)
    if bad:
        print(f"{len(bad)} artifact(s) failed: {', '.join(r['dir'] for r in bad)}")
    return 1 if bad else 0


def run_engine(command: str, args) -> int:
    from genrecal.export import tensorrt

    if command == "build-engine":
        manifest = tensorrt.build_engines(args.plan_dir, args.out, args.workspace_mib)
        out = args.out or args.plan_dir.parent / "tensorrt-engines"
        print(f"engines: {out} (TensorRT {manifest.extra['tensorrt_version']}, {manifest.extra['gpu']}, "
              f"JetPack {manifest.extra.get('jetpack') or 'n/a'})")
    else:
        manifest = tensorrt.check_engine_dir(args.engine_dir)
        print(f"{args.engine_dir}: engines match this TensorRT {manifest.extra['tensorrt_version']} and GPU")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("build-engine", "check-engine"):
        return run_engine(argv[0], engine_parser(argv[0]).parse_args(argv[1:]))
    return run_export(export_parser().parse_args(argv))
