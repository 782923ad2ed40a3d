"""Other people's runtimes on genrecal's ONNX exports: transformers.js (node) and onnxruntime-genai.

    from genrecal.benchmarks.clients import transformers_js, genai_generate, torch_greedy
    js = transformers_js("EXPORT/onnx-int8", image, "What shape is it?", 8)    # {"prompt", "tokens"} or {"error"}
    ga = genai_generate("EXPORT/onnx-fp32", image, "What shape is it?", 8)    # {"prompt", "tokens"} or {"error"}
    ref = torch_greedy("EXPORT/hf", image, "What shape is it?", 8)            # {"prompt", "tokens"}

Each client opens the artifact dir exactly as genrecal-export wrote it, from local files only, and
greedy-decodes; a client that refuses the dir gives {"error": its own message, first line}.
transformers.js is run from the repository's js/ folder (`npm ci --ignore-scripts --prefix js`);
`clients_missing()` says what is absent.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

JS_DIR = Path(__file__).resolve().parents[2] / "js"
JS_SCRIPT = JS_DIR / "generate.mjs"
JS_PACKAGE = JS_DIR / "node_modules" / "@huggingface" / "transformers"
JS_TIMEOUT_S = 120


def transformers_js_missing() -> str | None:
    """Why transformers.js cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not JS_PACKAGE.is_dir():
        return f"transformers.js is not installed in {JS_DIR} (run: npm ci --ignore-scripts --prefix js)"
    return None


def genai_missing() -> str | None:
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return "onnxruntime-genai is not installed (pip install onnxruntime-genai==0.18.0)"
    return None


def transformers_js(model_dir, image, question: str, max_new_tokens: int, dtype: str | None = None) -> dict:
    """Greedy tokens from transformers.js on `model_dir` (dtype: its config's unless given)."""
    request = {"model_dir": str(Path(model_dir).resolve()), "image": str(Path(image).resolve()),
               "question": question, "max_new_tokens": max_new_tokens, "dtype": dtype}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(request, f)
    try:
        proc = subprocess.run(["node", str(JS_SCRIPT), f.name], cwd=JS_DIR, capture_output=True, text=True,
                              timeout=JS_TIMEOUT_S)
    finally:
        Path(f.name).unlink(missing_ok=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"node exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def genai_generate(model_dir, image, question: str, max_new_tokens: int) -> dict:
    """Greedy tokens from onnxruntime-genai on `model_dir` through its genai_config.json. `image`
    None: a text-only prompt. The prompt is rendered by the export's own chat template."""
    import onnxruntime_genai as og
    from transformers import AutoProcessor

    from genrecal.runtimes.prompt import user_turn

    processor = AutoProcessor.from_pretrained(str(model_dir))
    # the template's text, as any client that tokenizes by itself is given it (genai's own tokenizer)
    text = user_turn(processor, int(image is not None), question)
    try:
        model = og.Model(str(model_dir))
        mm = model.create_multimodal_processor()
        images = og.Images.open(str(image)) if image is not None else None
        inputs = mm(text, images=images)
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, batch_size=1)  # max_length: genai_config.json's
        gen = og.Generator(model, params)
        gen.set_inputs(inputs)
        prompt = [int(t) for t in inputs["input_ids"].as_numpy()[0]] if "input_ids" in inputs else None
        tokens = []
        while not gen.is_done() and len(tokens) < max_new_tokens:
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
    except Exception as exc:  # genai raises plain RuntimeError/OrtException with its own message
        return {"error": str(exc).strip().splitlines()[0]}
    return {"prompt": prompt, "tokens": tokens}


def torch_greedy(hf_dir, image, question: str, max_new_tokens: int) -> dict:
    """PyTorch eager fp32 greedy tokens for the same prompt (genrecal's chat-template rule)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genrecal.runtimes.prompt import prepare_inputs

    processor = AutoProcessor.from_pretrained(str(hf_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    enc = prepare_inputs(processor, [image] if image is not None else [], question)
    with torch.no_grad():
        out = model.generate(**{k: torch.from_numpy(v) for k, v in enc.items()}, do_sample=False,
                             max_new_tokens=max_new_tokens)
    n = enc["input_ids"].shape[1]
    return {"prompt": enc["input_ids"][0].tolist(), "tokens": out[0, n:].tolist()}
