"""Which clients load genrecal's ONNX exports, per family and precision, and whether they decode
PyTorch's greedy tokens.

    python benchmarks/client_matrix.py --work /tmp/cm --steps 8 \
        --json benchmarks/results/client_matrix.json --md benchmarks/results/client_matrix.md

For every ONNX family: the tiny zoo model (genrecal.zoo, seed 0) is exported at fp32/fp16/int8/int4
exactly as genrecal-export does (OnnxBuild, parity checked), then one easy-vqa test image + its
question are greedy-decoded for --steps tokens by PyTorch eager fp32 (the reference), genrecal's
own onnxruntime backend, transformers.js (node, js/ folder) and onnxruntime-genai (where a
genai_config.json is written; for the other families genai is shown a copy of the qwen2_5_vl
artifact whose genai_config.json declares the family's own model type, and its refusal is quoted).
A cell: "loads" or the client's first error line; "same as PyTorch" = identical prompt ids and
greedy tokens; "same as genrecal ORT" = identical tokens to genrecal's backend on the same dir.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from genrecal import zoo
from genrecal.benchmarks import clients
from genrecal.artifacts import layout
from genrecal.export.onnx import OnnxBuild
from genrecal.families import with_format
from genrecal.runtimes.onnxruntime import OnnxRuntime

PRECISIONS = ("fp32", "fp16", "int8", "int8w", "int4")


def genai_probe(qwen_dir: Path, family: str, work: Path) -> dict:
    """genai's answer to a genai_config.json that declares `family` (graphs: the qwen2_5_vl artifact's)."""
    probe = work / f"genai-probe-{family}"
    shutil.rmtree(probe, ignore_errors=True)
    shutil.copytree(qwen_dir, probe)
    config = json.loads((probe / layout.GENAI_CONFIG).read_text())
    config["model"]["type"] = family
    (probe / layout.GENAI_CONFIG).write_text(json.dumps(config))
    return clients.genai_generate(probe, None, "hi", 1)


def row(client: str, family: str, precision: str, got: dict, ref: dict, own: list[int]) -> dict:
    if "error" in got:
        return {"client": client, "family": family, "precision": precision, "loads": False, "error": got["error"]}
    same_prompt = got.get("prompt") is None or got["prompt"] == ref["prompt"]
    return {"client": client, "family": family, "precision": precision, "loads": True,
            "same_as_pytorch": same_prompt and got["tokens"] == ref["tokens"],
            "same_as_genrecal_ort": got["tokens"] == own,
            "tokens": got["tokens"], "pytorch_tokens": ref["tokens"]}


def family_rows(family: str, work: Path, image: str, question: str, steps: int, qwen_dir: Path | None) -> list[dict]:
    src = zoo.build_to_dir(family, work / family / "zoo", size="tiny", seed=0)
    build = OnnxBuild(src, work / family / ".work", check=True, threads=1)
    ref = clients.torch_greedy(src, image, question, steps)
    rows = []
    for precision in PRECISIONS:
        out = work / family / f"onnx-{precision}"
        build.build(out, precision, "cpu")
        own = OnnxRuntime(out, threads=1).generate([image], question, steps).token_ids
        rows.append(row("genrecal onnxruntime", family, precision, {"prompt": None, "tokens": own}, ref, own))
        if clients.transformers_js_missing() is None:
            rows.append(row("transformers.js", family, precision,
                            clients.transformers_js(out, image, question, steps), ref, own))
        if clients.genai_missing() is None:
            got = (clients.genai_generate(out, image, question, steps) if (out / layout.GENAI_CONFIG).is_file()
                   else genai_probe(qwen_dir, family, work) if qwen_dir else {"error": "not probed"})
            rows.append(row("onnxruntime-genai", family, precision, got, ref, own))
    return rows


def cell(r: dict) -> str:
    if not r["loads"]:
        return "refused"
    same = "= PyTorch" if r["same_as_pytorch"] else "!= PyTorch"
    return f"loads, {same}" + ("" if r["same_as_genrecal_ort"] else ", != genrecal ORT")


def pivot(rows: list[dict]) -> str:
    """One line per client x family, one column per precision."""
    keys = list(dict.fromkeys((r["client"], r["family"]) for r in rows))
    lines = ["| client | family | " + " | ".join(PRECISIONS) + " |", "|---|---|" + "---|" * len(PRECISIONS)]
    for client, family in keys:
        got = {r["precision"]: cell(r) for r in rows if (r["client"], r["family"]) == (client, family)}
        lines.append(f"| {client} | {family} | " + " | ".join(got.get(p, "-") for p in PRECISIONS) + " |")
    errors = {(r["client"], r["error"]) for r in rows if not r["loads"]}
    lines += ["", *[f"- {client} refuses: `{error}`" for client, error in sorted(errors)]]
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    lines = ["| client | family | precision | loads? | same greedy tokens as PyTorch? | same as genrecal's ORT? |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["loads"]:
            cells = ["yes", "yes" if r["same_as_pytorch"] else f"no ({r['tokens']} vs {r['pytorch_tokens']})",
                     "yes" if r["same_as_genrecal_ort"] else "no"]
        else:
            cells = [f"no: `{r['error']}`", "-", "-"]
        lines.append(f"| {r['client']} | {r['family']} | {r['precision']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--families", default=",".join(["qwen2_5_vl", *[f for f in with_format("onnx") if f != "qwen2_5_vl"]]))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--merge", action="store_true",
                    help="keep --json's rows of the families not run now (rerun some families, keep the rest)")
    args = ap.parse_args()
    from genrecal.data import load_easy_vqa_questions

    question, _, image = load_easy_vqa_questions("test", limit=1)[0]
    rows, qwen_dir = [], None
    for family in args.families.split(","):
        rows += family_rows(family, args.work, image, question, args.steps, qwen_dir)
        if family == "qwen2_5_vl":
            qwen_dir = args.work / family / "onnx-fp32"
    if args.merge and args.json and args.json.is_file():
        ran = set(args.families.split(","))
        rows = [r for r in json.loads(args.json.read_text())["rows"] if r["family"] not in ran] + rows
    text = pivot(rows) + "\n" + markdown(rows)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"question": question, "image": Path(image).name, "steps": args.steps,
                                         "versions": versions(), "rows": rows}, indent=2) + "\n")
    if args.md:
        args.md.write_text(text)


def versions() -> dict:
    import subprocess
    from importlib import metadata

    out = {name: metadata.version(name) for name in ("onnxruntime", "onnxruntime-genai", "transformers", "torch")
           if _installed(name)}
    pkg = clients.JS_PACKAGE / "package.json"
    if pkg.is_file():
        out["@huggingface/transformers"] = json.loads(pkg.read_text())["version"]
        out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return out


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
