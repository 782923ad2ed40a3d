"""What device parity compares against, made on the host with PyTorch: greedy tokens and top-k logits.

    facts = processor_facts(Path("out/hf"))                      # processor settings, image token limits
    write_parity(Path("out/hf"), Path("out/edgellm-fp16/parity"), facts)

parity/ holds images/*.png (synthetic, sized so Edge-LLM's runtime resize and the student's processor
give the same grid: checks.check_image_tokens verifies it), input.json (llm_inference's request file:
one request per image, greedy: top_k 1) and reference.json: per prompt the prompt text the chat template
makes, the greedy token ids and text, and at each step the top-K token ids and logits. The student is
run in fp32 from its own weights (the artifact's are those weights cast to fp16).
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal.artifacts import edgellm as layout

TOP_K = 5
MAX_NEW_TOKENS = 16
QUESTIONS = ("What is in the image? Answer in one sentence.", "What colour is the shape?",
             "Is there a circle in the picture?")


def _processor(hf: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(hf))


def _jsonable(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _image(h: int, w: int, seed: int):
    """A synthetic picture: a coloured disc and bar on a plain background (deterministic)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.full((h, w, 3), rng.integers(40, 220, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = h * 0.45, w * 0.5, min(h, w) * 0.3
    arr[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    arr[int(h * 0.8):int(h * 0.9), int(w * 0.1):int(w * 0.9)] = rng.integers(0, 255, 3)
    return Image.fromarray(arr)


def _image_sizes(family: str, facts: dict) -> list[tuple[int, int]]:
    """(h, w) of the parity images: on the resize grid, inside the processor's pixel limits."""
    from genrecal.families import get_family

    if get_family(family, role="teacher").edgellm_images == "tiles":
        side = facts["tile_side"]
        return [(side, side), (side, side)]
    factor = facts["factor"]
    lo, hi = facts["image_tokens"]["min"], facts["image_tokens"]["max"]
    out = []
    for th, tw in ((4, 4), (4, 6), (6, 4)):  # in merged tokens per side
        while th * tw > hi and th > 1:
            th, tw = max(1, th // 2), max(1, tw // 2)
        while th * tw < lo:
            th, tw = th * 2, tw * 2
        out.append((th * factor, tw * factor))
    return out


def processor_facts(hf: Path) -> dict:
    """The student's processor as Edge-LLM's runtime must reproduce it: settings, image token range per
    image, and the parity images' sizes with the grid (Qwen) or tile count (InternVL) it makes of them."""
    hf = Path(hf)
    config = json.loads((hf / "config.json").read_text())
    family = config["model_type"]
    proc = _processor(hf)
    ip = proc.image_processor
    settings = {k: _jsonable(getattr(ip, k)) for k in ("patch_size", "merge_size", "temporal_patch_size",
                                                        "image_mean", "image_std", "min_pixels", "max_pixels",
                                                        "size", "crop_size", "do_rescale", "rescale_factor")
                if getattr(ip, k, None) is not None}
    facts = {"family": family, "processor": settings, "processor_class": type(proc).__name__}
    from genrecal.families import get_family

    if get_family(family, role="teacher").edgellm_images == "tiles":  # InternVL
        side = int(_side(config["vision_config"]["image_size"]))
        patch = int(_side(config["vision_config"]["patch_size"]))
        per_tile = int(getattr(proc, "image_seq_length", 0)
                       or (side // patch) ** 2 * config.get("downsample_ratio", 0.5) ** 2)
        max_tiles = int(getattr(ip, "max_patches", 1) or 1) if getattr(ip, "crop_to_patches", False) else 1
        facts.update(tile_side=side, tokens_per_tile=per_tile,
                     image_tokens={"min": per_tile, "max": per_tile * (max_tiles + (1 if max_tiles > 1 else 0))})
    else:
        factor = int(settings["patch_size"]) * int(settings.get("merge_size", 2))
        size = settings.get("size") or {}
        min_px = settings.get("min_pixels") or size.get("shortest_edge") or factor * factor * 4
        max_px = settings.get("max_pixels") or size.get("longest_edge") or factor * factor * 16384
        facts.update(factor=factor, image_tokens={"min": max(1, int(min_px) // factor ** 2),
                                                  "max": int(max_px) // factor ** 2})
    facts["parity_images"] = [_grid_of(proc, family, h, w, i) for i, (h, w) in enumerate(_image_sizes(family, facts))]
    return facts


def _side(v):
    return v[0] if isinstance(v, (list, tuple)) else v


def _grid_of(proc, family: str, h: int, w: int, i: int) -> dict:
    """What the student's processor makes of parity image i (h x w)."""
    enc = proc.image_processor(images=[_image(h, w, i)], return_tensors="np")
    row = {"name": f"p{i}.png", "height": h, "width": w}
    if "image_grid_thw" in enc:
        t, gh, gw = (int(x) for x in enc["image_grid_thw"][0])
        patch, merge = proc.image_processor.patch_size, proc.image_processor.merge_size
        row.update(resized_hw=[gh * patch, gw * patch], grid_thw=[t, gh, gw], tokens=t * gh * gw // merge ** 2)
    else:
        row["tiles"] = int(enc["pixel_values"].shape[0])
        row["tokens"] = row["tiles"] * int(getattr(proc, "image_seq_length", 0) or 0)
    return row


def _inputs(proc, image, question: str):
    """(the chat text, torch inputs) of one user turn, built as every genrecal runtime builds it."""
    from genrecal.runtimes.prompt import prepare_inputs, user_turn

    return user_turn(proc, 1, question), prepare_inputs(proc, [image], question, return_tensors="pt")


def greedy_reference(model, proc, image, question: str, max_new_tokens: int = MAX_NEW_TOKENS,
                     top_k: int = TOP_K) -> dict:
    """PyTorch greedy decode of one prompt with the top-k logits of every step."""
    import torch

    text, enc = _inputs(proc, image, question)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    prompt_len = enc["input_ids"].shape[1]
    tokens = out.sequences[0, prompt_len:].tolist()
    steps = []
    for logits in out.logits:  # one [1, vocab] per generated token
        vals, ids = torch.topk(logits[0].float(), top_k)
        steps.append({"ids": ids.tolist(), "logits": [round(v, 5) for v in vals.tolist()]})
    return {"prompt_text": text, "prompt_tokens": int(prompt_len), "tokens": tokens,
            "text": proc.tokenizer.decode(tokens, skip_special_tokens=True), "top_k": steps}


def edgellm_request(image_rel: str, question: str) -> dict:
    """One llm_inference request: the user turn with the image first, as the reference prompt has it."""
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image_rel},
                                                      {"type": "text", "text": question}]}]}


def input_file(requests: list[dict], max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """llm_inference's --inputFile, greedy (top_k 1) so it compares with the PyTorch reference."""
    return {"batch_size": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 1, "max_generate_length": max_new_tokens,
            "requests": requests}


def write_parity(hf: Path, out: Path, facts: dict, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Write parity/ (see the module docstring); returns a summary for the manifest."""
    import torch
    from transformers import AutoModelForImageTextToText

    hf, out = Path(hf), Path(out)
    (out / layout.PARITY_IMAGES).mkdir(parents=True, exist_ok=True)
    proc = _processor(hf)
    model = AutoModelForImageTextToText.from_pretrained(str(hf), dtype=torch.float32).eval()
    refs, requests = [], []
    for i, img in enumerate(facts["parity_images"]):
        image = _image(img["height"], img["width"], i)
        rel = f"{layout.PARITY_DIR}/{layout.PARITY_IMAGES}/{img['name']}"  # llm_inference runs from the artifact dir
        image.save(out / layout.PARITY_IMAGES / img["name"])
        question = QUESTIONS[i % len(QUESTIONS)]
        refs.append({"image": rel, "question": question, **greedy_reference(model, proc, image, question,
                                                                             max_new_tokens)})
        requests.append(edgellm_request(rel, question))
    reference = {"family": facts["family"], "dtype": "float32", "top_k": TOP_K, "max_new_tokens": max_new_tokens,
                 "eos_token_ids": _eos_ids(model), "prompts": refs}
    (out / layout.PARITY_REFERENCE).write_text(json.dumps(reference, indent=1) + "\n")
    (out / layout.PARITY_INPUT).write_text(json.dumps(input_file(requests, max_new_tokens), indent=2) + "\n")
    return {"prompts": len(refs), "max_new_tokens": max_new_tokens, "top_k": TOP_K,
            "files": [f"{layout.PARITY_DIR}/{layout.PARITY_INPUT}", f"{layout.PARITY_DIR}/{layout.PARITY_REFERENCE}"]}


def _eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
