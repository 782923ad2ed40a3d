"""Which of llama.cpp's own clients run genrecal's GGUF pairs, per family and precision, and whether they answer
with genrecal's tokens.

    nice -n 10 bash scripts/build_llama_tools.sh          # llama-mtmd-cli + llama-server, once (~5-10 min)
    python benchmarks/gguf_client_matrix.py --work /tmp/gm --steps 8 \
        --json benchmarks/results/gguf_clients.json --md benchmarks/results/gguf_clients.md
    # one family's rows again, the others' kept from the JSON:
    python benchmarks/gguf_client_matrix.py --work /tmp/gm --families qwen3_5 --update \
        --json benchmarks/results/gguf_clients.json --md benchmarks/results/gguf_clients.md

For every GGUF family (genrecal.families.with_format("gguf")) the zoo model (seed 0; the "gguf" size where the
family has one, whose rows are multiples of 256 so Q4_K_M really is K-quants, else "tiny"; Idefics3 / SmolVLM also
"gguf-split", image splitting on as real checkpoints ship) is fine-tuned for --sft-steps batches on easy-vqa (so
greedy answers depend on the image and the question) and exported at f16 / q8_0 / q4_k_m exactly as
genrecal-export does (export_gguf, parity-checked); families without a "gguf" size at the smallest size (and
vocabulary) their GGUF route converts (GgufRoute.zoo_size / zoo_vocab). --samples easy-vqa test images + their questions are then greedy-decoded for --steps tokens by:
  genrecal llama.cpp          genrecal's own runtime (genrecal.runtimes.llamacpp), the reference
  MTMDChatHandler             llama-cpp-python's Llama(chat_handler=MTMDChatHandler(mmproj)).create_chat_completion
  llama-mtmd-cli --jinja      llama.cpp's CLI with the GGUF's chat template
  llama-server chat           llama.cpp's server, OpenAI-style /v1/chat/completions with an image_url part
  llama-server raw prompt     the same server's /completion given genrecal's prompt text (no chat template): the
                              pair computing on genrecal's prompt, apart from the template
(the last three built from the pinned llama-cpp-python's llama.cpp source, scripts/build_llama_tools.sh; skipped,
with the reason in the JSON, where not built). A cell: "refused" (the export refused the model) / "fails" (the
client's first error line is listed), or "loads" with on how many samples its greedy answer is genrecal's (token
ids where the client gives them, else text) and whether its prompt text differs from genrecal's.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from genrecal import zoo
from genrecal.benchmarks import gguf_clients as gc
from genrecal.export.gguf import GgufExportError, export_gguf
from genrecal.families import get_family, with_format

PRECISIONS = ("f16", "q8_0", "q4_k_m")
REFERENCE = "genrecal llama.cpp"
CLIENTS = (REFERENCE, "MTMDChatHandler", "llama-mtmd-cli --jinja", "llama-server chat", "llama-server raw prompt")


def variants(families: list[str]) -> list[tuple[str, str, str | None]]:
    """(family, zoo size, llama.cpp vocab GGUF or None) the matrix covers: the "gguf" size (+ "gguf-split") where the
    family has one, else the smallest its GGUF route converts (GgufRoute.zoo_size / zoo_vocab)."""
    out = []
    for family in families:
        fam = get_family(family, role="zoo")
        if "gguf" not in fam.sizes:
            out.append((family, fam.gguf.zoo_size, fam.gguf.zoo_vocab))
            continue
        out.append((family, "gguf", None))
        if "gguf-split" in fam.sizes:
            out.append((family, "gguf-split", None))
    return out


def sft(src: Path, dst: Path, steps: int) -> Path:
    """Copy a zoo dir and teach it easy-vqa answers for `steps` batches of 8 (answer-only loss), one thread;
    a dst that holds a finished run is reused."""
    from genrecal.zoo import teach_easy_vqa

    if (dst / "genrecal_sft.json").is_file():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    teach_easy_vqa(src, dst, steps)
    (dst / "genrecal_sft.json").write_text(json.dumps({"steps": steps, "batch": 8, "lr": 2e-3}))
    return dst


def compare(got: dict, ref: dict) -> dict:
    """One sample: the client's answer against genrecal's (token ids where the client gives them, else text)."""
    if "error" in got:
        return {"error": got["error"]}
    by = "tokens" if "tokens" in got else "text"  # the CLI prints text only
    same = got["tokens"] == ref["tokens"] if by == "tokens" else gc.same_text(got["text"], ref["text"])
    out = {"same": same, "compared": by, "text": got["text"], "genrecal_text": ref["text"]}
    if by == "tokens":
        out.update(tokens=got["tokens"], genrecal_tokens=ref["tokens"])
    if got.get("prompt_text") is not None:
        out["same_prompt_text"] = got["prompt_text"] == ref["prompt_text"]
        if not out["same_prompt_text"]:
            out["prompt_text"], out["genrecal_prompt_text"] = got["prompt_text"], ref["prompt_text"]
    for key in ("prompt_tokens", "completion_tokens", "cli_runs"):
        if got.get(key) is not None:
            out[key] = got[key]
    return out


def row(client: str, family: str, size: str, precision: str, results: list[tuple[dict, dict]]) -> dict:
    """One matrix cell: a client on one pair over every sample ((client result, genrecal result) pairs)."""
    samples = [compare(got, ref) for got, ref in results]
    base = {"client": client, "family": family, "size": size, "precision": precision, "n": len(samples)}
    errors = [x["error"] for x in samples if "error" in x]
    if errors:
        return {**base, "loads": False, "error": errors[0], "failed_samples": len(errors), "samples": samples}
    prompts = [x["same_prompt_text"] for x in samples if "same_prompt_text" in x]
    return {**base, "loads": True, "same_as_genrecal": sum(x["same"] for x in samples),
            "compared": samples[0]["compared"], "same_prompt_text": all(prompts) if prompts else None,
            "samples": samples}


def variant_rows(family: str, size: str, work: Path, data: list[tuple[str, str]], steps: int, sft_steps: int,
                 tools: Path | None, precisions=PRECISIONS, vocab: str | None = None) -> tuple[list[dict], dict]:
    """Rows for one (family, size) over `data` ((image, question) pairs) and what its exports recorded."""
    root = work / f"{family}-{size}"
    src = root / "zoo"
    if not (src / "config.json").is_file():
        vocab_gguf = None
        if vocab:
            from genrecal.export.gguf.converter import llama_cpp_source

            vocab_gguf = llama_cpp_source() / "models" / vocab
        zoo.build_to_dir(family, src, size=size, seed=0, vocab_gguf=vocab_gguf)
    student = sft(src, root / "student", sft_steps) if sft_steps else src
    rows, facts = [], {}
    for precision in precisions:
        out = root / f"gguf-{precision}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            manifest = export_gguf(student, out, precision, check=True, threads=1)
        except GgufExportError as exc:
            rows += [{"client": c, "family": family, "size": size, "precision": precision, "n": len(data),
                      "loads": False, "error": f"export refused: {exc}"} for c in CLIENTS]
            continue
        parity = manifest.parity
        facts[precision] = {"notes": manifest.extra.get("notes", []), "quant_fallbacks": bool(
            manifest.extra.get("quantization", {}).get("fallbacks")),
            "parity": {k: parity.get("reference", {}).get(k) for k in ("max_rel_logit_diff", "greedy_identical")}}
        refs = [gc.genrecal_llamacpp(out, image, question, steps) for image, question in data]
        got = {REFERENCE: refs,
               "MTMDChatHandler": [gc.mtmd_chat_handler(out, image, q, steps) for image, q in data]}
        if tools is not None:
            cli = [gc.mtmd_cli(tools, out, image, q, steps) for image, q in data]
            with gc.LlamaServer(tools, out) as server:
                chat = [server.chat(image, q, steps) for image, q in data]
                raw = [server.complete(image, ref["prompt_text"], steps) for (image, _), ref in zip(data, refs)]
            for c, ch in zip(cli, chat):  # the CLI renders with the server's engine (common/chat.cpp, jinja)
                if "prompt_text" in ch and "error" not in c:
                    c["prompt_text"] = ch["prompt_text"]
            got.update({"llama-mtmd-cli --jinja": cli, "llama-server chat": chat, "llama-server raw prompt": raw})
        rows += [row(client, family, size, precision, list(zip(results, refs))) for client, results in got.items()]
    return rows, facts


def cell(r: dict) -> str:
    if not r["loads"]:
        return "refused" if r["error"].startswith("export refused") else "fails"
    prompt = {True: "", False: " (prompt differs)", None: ""}[r.get("same_prompt_text")]
    return f"loads, {r['same_as_genrecal']}/{r['n']} = genrecal{prompt}"


def pivot(rows: list[dict], precisions=PRECISIONS) -> str:
    keys = list(dict.fromkeys((r["client"], r["family"], r["size"]) for r in rows))
    lines = ["| client | family (zoo size) | " + " | ".join(precisions) + " |",
             "|---|---|" + "---|" * len(precisions)]
    for client, family, size in keys:
        got = {r["precision"]: cell(r) for r in rows if (r["client"], r["family"], r["size"]) == (client, family, size)}
        lines.append(f"| {client} | {family} ({size}) | " + " | ".join(got.get(p, "-") for p in precisions) + " |")
    errors = sorted({(r["client"], r["error"]) for r in rows if not r["loads"]})
    lines += ["", *[f"- {client}: `{error}`" for client, error in errors]]
    return "\n".join(lines) + "\n"


def details(rows: list[dict]) -> str:
    """The first sample of every non-reference cell: answers, and the prompt text where it differs."""
    lines = ["| client | family (size) | precision | answer | genrecal's answer | prompt text where it differs |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["client"] == REFERENCE or "samples" not in r:
            continue
        x = r["samples"][0]
        text = repr(x["text"]) if "error" not in x else f"error: `{x['error'][:120]}`"
        lines.append(f"| {r['client']} | {r['family']} ({r['size']}) | {r['precision']} | {text} | "
                     f"{x.get('genrecal_text', '-')!r} | {repr(x['prompt_text']) if x.get('prompt_text') else ''} |")
    return "\n".join(lines) + "\n"


def versions(tools: Path | None) -> dict:
    out = {name: metadata.version(name) for name in ("llama-cpp-python", "gguf", "transformers", "torch")}
    out["cpu"] = platform.processor() or platform.machine()
    if tools is not None:
        out["llama_tools"] = json.loads((tools.parent / "build.json").read_text())
        ver = subprocess.run([str(tools / "llama-server"), "--version"], capture_output=True, text=True)
        out["llama_tools"]["version"] = _first(ver.stderr + ver.stdout)
    return out


def _first(text: str) -> str:
    lines = [ln for ln in text.splitlines() if "version" in ln]
    return lines[0].strip() if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="easy-vqa test questions (with their images) per cell")
    ap.add_argument("--sft-steps", type=int, default=50)
    ap.add_argument("--families", default=",".join(with_format("gguf")))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--update", action="store_true",
                    help="keep --json's rows and exports of the families not run (same samples, steps, SFT steps)")
    args = ap.parse_args()
    from genrecal.data import load_easy_vqa_questions

    tools = gc.llama_tools()
    data = [(image, question) for question, _, image in load_easy_vqa_questions("test", limit=args.samples, seed=1)]
    precisions = tuple(args.precisions.split(","))
    rows, facts = [], {}
    for family, size, vocab in variants(args.families.split(",")):
        got, fact = variant_rows(family, size, args.work, data, args.steps, args.sft_steps, tools, precisions, vocab)
        rows += got
        facts[f"{family} ({size})"] = {**fact, **({"vocab_gguf": vocab} if vocab else {})}
        print(pivot(rows, precisions), flush=True)
    record = {"samples": [{"question": q, "image": Path(i).name} for i, q in data], "steps": args.steps,
              "sft_steps": args.sft_steps,
              "tools": str(tools) if tools else gc.tools_missing(), "versions": versions(tools),
              "exports": facts, "rows": rows}
    if args.update and args.json and args.json.is_file():
        record = merged(json.loads(args.json.read_text()), record)
    text = markdown(record, precisions)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    if args.md:
        args.md.write_text(text)


def merged(old: dict, new: dict) -> dict:
    """`new` plus `old`'s rows and exports of the families `new` did not run, in the registry's family order; refuses
    records of different runs (samples, steps, SFT steps)."""
    for key in ("samples", "steps", "sft_steps"):
        if old[key] != new[key]:
            raise SystemExit(f"--update: the JSON's {key} ({old[key]}) differ from this run's ({new[key]})")
    rerun = {r["family"] for r in new["rows"]}
    order = {name: i for i, name in enumerate(with_format("gguf"))}
    rows = sorted([r for r in old["rows"] if r["family"] not in rerun] + new["rows"],
                  key=lambda r: order.get(r["family"], len(order)))  # stable: sizes and clients keep their order
    exports = {k: v for k, v in old["exports"].items() if k.split(" (")[0] not in rerun}
    return {**new, "exports": dict(sorted({**exports, **new["exports"]}.items())), "rows": rows}


def markdown(record: dict, precisions=PRECISIONS) -> str:
    v = record["versions"]
    tools = v.get("llama_tools", {})
    head = [f"GGUF pairs in llama.cpp's own clients (benchmarks/gguf_client_matrix.py): {len(record['samples'])} "
            f"easy-vqa test questions, {record['steps']} greedy tokens, zoo students fine-tuned {record['sft_steps']} "
            f"steps. llama-cpp-python {v['llama-cpp-python']}; llama-mtmd-cli / llama-server "
            f"{tools.get('version', '(not built)')} from its sdist, {tools.get('cmake_args', '')}.", ""]
    return "\n".join(head) + "\n" + pivot(record["rows"], precisions) + "\n" + details(record["rows"])


if __name__ == "__main__":
    main()
