"""Which of llama.cpp's own clients run genrecal's GGUF pairs, per family and precision, and whether they answer
with genrecal's tokens.

    nice -n 10 bash scripts/build_llama_tools.sh          # llama-mtmd-cli + llama-server, once (~5-10 min)
    python benchmarks/gguf_client_matrix.py --work /tmp/gm --steps 8 \
        --json benchmarks/results/gguf_clients.json --md benchmarks/results/gguf_clients.md

For every GGUF family (genrecal.families.with_format("gguf")) the zoo model (seed 0; the "gguf" size where the
family has one, whose rows are multiples of 256 so Q4_K_M really is K-quants, else "tiny"; Idefics3 / SmolVLM also
"gguf-split", image splitting on as real checkpoints ship) is fine-tuned for --sft-steps batches on easy-vqa (so
greedy answers depend on the image and the question) and exported at f16 / q8_0 / q4_k_m exactly as
genrecal-export does (export_gguf, parity-checked). One easy-vqa test image + its question are then greedy-decoded
for --steps tokens by:
  genrecal llama.cpp          genrecal's own runtime (genrecal.runtimes.llamacpp), the reference
  MTMDChatHandler             llama-cpp-python's Llama(chat_handler=MTMDChatHandler(mmproj)).create_chat_completion
  llama-mtmd-cli --jinja      llama.cpp's CLI with the GGUF's chat template
  llama-server chat           llama.cpp's server, OpenAI-style /v1/chat/completions with an image_url part
  llama-server raw prompt     the same server's /completion given genrecal's prompt text (no chat template): the
                              pair computing on genrecal's prompt, apart from the template
(the last three built from the pinned llama-cpp-python's llama.cpp source, scripts/build_llama_tools.sh; skipped,
with the reason in the JSON, where not built). A cell: the client's first error line, or "loads" and whether its
greedy text equals genrecal's ("= genrecal") and whether its prompt text does.
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


def variants(families: list[str]) -> list[tuple[str, str]]:
    """(family, zoo size) pairs the matrix covers."""
    out = []
    for family in families:
        sizes = get_family(family, role="zoo").sizes
        out.append((family, "gguf" if "gguf" in sizes else "tiny"))
        if "gguf-split" in sizes:
            out.append((family, "gguf-split"))
    return out


def sft(src: Path, dst: Path, steps: int) -> Path:
    """Copy a zoo dir and teach it easy-vqa answers for `steps` batches of 8 (answer-only loss), one thread."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genrecal.data import load_easy_vqa_questions
    from genrecal.data.render import collate, render
    from genrecal.data.samples import Sample

    if (dst / "genrecal_sft.json").is_file():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, proc = AutoModelForImageTextToText.from_pretrained(dst), AutoProcessor.from_pretrained(dst)
    data = load_easy_vqa_questions("train", limit=steps * 8, seed=0)
    items = [render(proc, Sample([Path(p)], [{"role": "user", "content": "<image>" + q},
                                             {"role": "assistant", "content": a}], "easy-vqa", i))
             for i, (q, a, p) in enumerate(data)]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        batch = collate(items[step * 8:(step + 1) * 8], proc.tokenizer.pad_token_id)
        start, end = batch.pop("answer_start"), batch.pop("answer_end")
        labels = torch.full_like(batch["input_ids"], -100)
        for i in range(len(start)):
            labels[i, start[i]:end[i]] = batch["input_ids"][i, start[i]:end[i]]
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(dst)
    (dst / "genrecal_sft.json").write_text(json.dumps({"steps": steps, "batch": 8, "lr": 2e-3}))
    return dst


def row(client: str, family: str, size: str, precision: str, got: dict, ref: dict) -> dict:
    base = {"client": client, "family": family, "size": size, "precision": precision}
    if "error" in got:
        return {**base, "loads": False, "error": got["error"], **_prompt(got, ref)}
    by = "tokens" if "tokens" in got else "text"  # the CLI prints text only
    same = got["tokens"] == ref["tokens"] if by == "tokens" else gc.same_text(got["text"], ref["text"])
    return {**base, "loads": True, "same_as_genrecal": same, "compared": by, "text": got["text"],
            "genrecal_text": ref["text"], **({"tokens": got["tokens"], "genrecal_tokens": ref["tokens"]}
                                             if by == "tokens" else {}), **_prompt(got, ref)}


def _prompt(got: dict, ref: dict) -> dict:
    out = {}
    if got.get("prompt_text") is not None:
        out["same_prompt_text"] = got["prompt_text"] == ref["prompt_text"]
        if not out["same_prompt_text"]:
            out["prompt_text"] = got["prompt_text"]
    for key in ("prompt_tokens", "completion_tokens"):
        if got.get(key) is not None:
            out[key] = got[key]
    return out


def variant_rows(family: str, size: str, work: Path, image: str, question: str, steps: int, sft_steps: int,
                 tools: Path | None, precisions=PRECISIONS) -> tuple[list[dict], dict]:
    """Rows for one (family, size) and what its exports recorded (notes, parity)."""
    root = work / f"{family}-{size}"
    src = root / "zoo"
    if not (src / "config.json").is_file():
        zoo.build_to_dir(family, src, size=size, seed=0)
    student = sft(src, root / "student", sft_steps) if sft_steps else src
    rows, facts = [], {}
    for precision in precisions:
        out = root / f"gguf-{precision}"
        shutil.rmtree(out, ignore_errors=True)
        try:
            manifest = export_gguf(student, out, precision, check=True, threads=1)
        except GgufExportError as exc:
            rows += [{"client": c, "family": family, "size": size, "precision": precision, "loads": False,
                      "error": f"export refused: {exc}"} for c in CLIENTS]
            continue
        parity = manifest.parity
        facts[precision] = {"notes": manifest.extra.get("notes", []), "quant_fallbacks": bool(
            manifest.extra.get("quantization", {}).get("fallbacks")),
            "parity": {k: parity.get("reference", {}).get(k) for k in ("max_rel_logit_diff", "greedy_identical")}}
        ref = gc.genrecal_llamacpp(out, image, question, steps)
        rows.append(row(REFERENCE, family, size, precision, ref, ref))
        rows.append(row("MTMDChatHandler", family, size, precision,
                        gc.mtmd_chat_handler(out, image, question, steps), ref))
        if tools is None:
            continue
        cli = gc.mtmd_cli(tools, out, image, question, steps)
        with gc.LlamaServer(tools, out) as server:
            chat = server.chat(image, question, steps)
            raw = server.complete(image, ref["prompt_text"], steps)
        if "prompt_text" in chat and "error" not in cli:  # the CLI renders with the same engine (common/chat.cpp, jinja)
            cli["prompt_text"] = chat["prompt_text"]
        rows += [row("llama-mtmd-cli --jinja", family, size, precision, cli, ref),
                 row("llama-server chat", family, size, precision, chat, ref),
                 row("llama-server raw prompt", family, size, precision, raw, ref)]
    return rows, facts


def cell(r: dict) -> str:
    if not r["loads"]:
        return "refused" if r["error"].startswith("export refused") else "fails"
    text = "= genrecal" if r["same_as_genrecal"] else "!= genrecal"
    prompt = {True: "", False: " (prompt differs)", None: ""}[r.get("same_prompt_text")]
    return f"loads, {text}{prompt}"


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
    lines = ["| client | family (size) | precision | text | genrecal's text | prompt text where it differs |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["client"] == REFERENCE:
            continue
        text = repr(r["text"]) if r["loads"] else f"error: `{r['error'][:120]}`"
        lines.append(f"| {r['client']} | {r['family']} ({r['size']}) | {r['precision']} | {text} | "
                     f"{r.get('genrecal_text', '-')!r} | {repr(r['prompt_text']) if r.get('prompt_text') else ''} |")
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
    ap.add_argument("--sft-steps", type=int, default=50)
    ap.add_argument("--families", default=",".join(with_format("gguf")))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    from genrecal.data import load_easy_vqa_questions

    tools = gc.llama_tools()
    question, _, image = load_easy_vqa_questions("test", limit=1, seed=1)[0]
    precisions = tuple(args.precisions.split(","))
    rows, facts = [], {}
    for family, size in variants(args.families.split(",")):
        got, fact = variant_rows(family, size, args.work, image, question, args.steps, args.sft_steps, tools,
                                 precisions)
        rows += got
        facts[f"{family} ({size})"] = fact
        print(pivot(rows, precisions), flush=True)
    text = pivot(rows, precisions) + "\n" + details(rows)
    print(text)
    record = {"question": question, "image": Path(image).name, "steps": args.steps, "sft_steps": args.sft_steps,
              "tools": str(tools) if tools else gc.tools_missing(), "versions": versions(tools),
              "exports": facts, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.md:
        args.md.write_text(text)


if __name__ == "__main__":
    main()
