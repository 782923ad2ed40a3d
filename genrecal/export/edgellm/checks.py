"""Host checks of an Edge-LLM artifact that need no GPU: what Edge-LLM's builder and runtime read.

    from genrecal.export.edgellm.checks import run_all
    results = run_all(Path("out/edgellm-fp16"), Path("out/hf"), facts)   # [{"name", "passed", "detail"}]

Each check returns one record; `run_all` never raises for a failed check (the caller refuses the
artifact and prints every failed detail). What is checked:
  graph_io       llm/ and visual/ model.onnx inputs/outputs hold what llm_build / visual_build bind
  llm_config     llm/config.json sizes and token ids equal the student's text config
  visual_config  visual/config.json model type and vision sizes equal the student's
  embedding      llm/embedding.safetensors == the student's input embedding table (fp16, exact)
  preprocessor   visual/preprocessor_config.json patch/merge size, mean/std, pixel limits == the processor's
  chat_template  llm/chat_template.jinja == the student's template; tokenizer files present
  int4_group     INT4-AWQ (group 128): every quantised Linear's input width divides by it
  image_tokens   Edge-LLM's runtime makes the same image grid as the student's processor for the parity images
Only `int4_group` depends on the precision: at fp16 it reports, without failing, whether int4_awq could
be built (quantise.py refuses it up front).
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal.artifacts import edgellm as layout

# what the builders bind by name (seen on Edge-LLM 0.11.0's exports of qwen2_5_vl and internvl)
LLM_INPUTS = ("inputs_embeds", "rope_rotary_cos_sin", "kv_page_table")
LLM_INPUT_PREFIXES = ("past_key_values",)
LLM_OUTPUTS = ("logits",)


def _record(name: str, passed: bool, detail: str, **facts) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail, **facts}


def graph_io(path: Path) -> tuple[list[str], list[str]]:
    """(input names, output names) of an ONNX graph, without loading its external data."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits], [o.name for o in graph.output]


def check_graph_io(art: Path) -> dict:
    ins, outs = graph_io(art / layout.LLM_DIR / layout.ONNX_NAME)
    missing = [n for n in LLM_INPUTS if n not in ins] + [f"{p}*" for p in LLM_INPUT_PREFIXES
                                                         if not any(i.startswith(p) for i in ins)]
    missing += [n for n in LLM_OUTPUTS if n not in outs]
    v_ins, v_outs = graph_io(art / layout.VISUAL_DIR / layout.ONNX_NAME)
    if not v_ins or not v_outs:
        missing.append("visual graph inputs/outputs")
    kv = sum(i.startswith(LLM_INPUT_PREFIXES) for i in ins)
    detail = (f"llm: {len(ins)} inputs ({kv} KV), outputs {outs}; visual: inputs {v_ins}, outputs {v_outs}"
              if not missing else f"missing {', '.join(missing)}")
    return _record("graph_io", not missing, detail, llm_inputs=ins, llm_outputs=outs, visual_inputs=v_ins,
                   visual_outputs=v_outs)


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config.get("llm_config") or config


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def check_llm_config(art: Path, hf: Path) -> dict:
    got = _load(art / layout.LLM_DIR / layout.CONFIG_NAME)
    student = _load(hf / "config.json")
    text = _text_config(student)
    want = {k: text[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                 "vocab_size", "intermediate_size") if k in text}
    image_id = student.get("image_token_id", text.get("image_token_id"))
    if image_id is not None:
        want["image_token_id"] = image_id
    got_flat = {**_text_config(got), **got}
    bad = {k: (got_flat.get(k), v) for k, v in want.items() if got_flat.get(k) != v}
    detail = "sizes and image token id match" if not bad else \
        "; ".join(f"{k}: Edge-LLM {g} vs student {w}" for k, (g, w) in bad.items())
    return _record("llm_config", not bad, detail, compared=sorted(want))


def check_visual_config(art: Path, hf: Path) -> dict:
    got = _load(art / layout.VISUAL_DIR / layout.CONFIG_NAME)
    student = _load(hf / "config.json").get("vision_config") or {}
    vis = got.get("vision_config") or {}
    keys = [k for k in ("hidden_size", "depth", "num_hidden_layers", "num_heads", "num_attention_heads",
                        "patch_size", "spatial_merge_size", "out_hidden_size", "intermediate_size") if k in student]
    bad = {k: (vis.get(k), student[k]) for k in keys if vis.get(k) != student[k]}
    if not got.get("model_type"):
        bad["model_type"] = (None, "set")
    detail = f"model_type {got.get('model_type')}, {len(keys)} vision sizes match" if not bad else \
        "; ".join(f"{k}: Edge-LLM {g} vs student {w}" for k, (g, w) in bad.items())
    return _record("visual_config", not bad, detail, model_type=got.get("model_type"))


def student_embedding(hf: Path):
    """The student's text input embedding table [vocab, hidden] (torch tensor) from its safetensors."""
    from safetensors import safe_open

    for f in sorted(Path(hf).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            names = [n for n in st.keys() if n.endswith("embed_tokens.weight") and "vision" not in n]
            if names:
                return st.get_tensor(sorted(names, key=len)[0])
    raise FileNotFoundError(f"{hf}: no *embed_tokens.weight in its safetensors")


def check_embedding(art: Path, hf: Path) -> dict:
    import torch
    from safetensors import safe_open

    with safe_open(str(art / layout.LLM_DIR / layout.EMBEDDING_NAME), "pt") as st:
        if layout.EMBEDDING_TENSOR not in st.keys():
            return _record("embedding", False, f"no tensor {layout.EMBEDDING_TENSOR!r} in {layout.EMBEDDING_NAME}")
        got = st.get_tensor(layout.EMBEDDING_TENSOR)
    want = student_embedding(hf).to(torch.float16)
    if tuple(got.shape) != tuple(want.shape):
        return _record("embedding", False, f"shape {tuple(got.shape)} vs student {tuple(want.shape)}")
    diff = (got.float() - want.float()).abs().max().item()
    return _record("embedding", diff == 0.0, f"{tuple(got.shape)} {str(got.dtype).removeprefix('torch.')}, "
                   f"max |diff| vs the student's table in fp16 {diff:.3g}", max_abs_diff=diff)


PREPROCESSOR_KEYS = ("patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std", "min_pixels",
                     "max_pixels", "size", "crop_size", "do_rescale", "rescale_factor")


def check_preprocessor(art: Path, facts: dict) -> dict:
    got = _load(art / layout.VISUAL_DIR / layout.PREPROCESSOR_CONFIG)
    want = facts["processor"]
    keys = [k for k in PREPROCESSOR_KEYS if k in want and k in got]
    bad = {k: (got[k], want[k]) for k in keys if not _close(got[k], want[k])}
    absent = [k for k in ("image_mean", "image_std") if k not in got]
    ok = not bad and not absent
    detail = f"{', '.join(keys)} match the student's processor" if ok else "; ".join(
        [f"{k}: Edge-LLM {g} vs processor {w}" for k, (g, w) in bad.items()] + [f"{k} missing" for k in absent])
    return _record("preprocessor", ok, detail, compared=keys)


def _close(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return a == b


def check_chat_template(art: Path, hf: Path) -> dict:
    from genrecal.export.edgellm.student import chat_template

    llm = art / layout.LLM_DIR
    want = chat_template(hf)
    got = (llm / layout.CHAT_TEMPLATE).read_text() if (llm / layout.CHAT_TEMPLATE).is_file() else None
    tok = [n for n in ("tokenizer.json", "tokenizer_config.json") if not (llm / n).is_file()]
    problems = (["no chat_template.jinja in llm/"] if got is None else
                ["llm/chat_template.jinja differs from the student's"] if got.strip() != (want or "").strip() else [])
    problems += [f"llm/{n} missing" for n in tok]
    return _record("chat_template", not problems, "; ".join(problems) or "template and tokenizer files present")


def linear_widths(hf: Path) -> dict[str, int]:
    """in_features of the text model's quantisable Linears (what INT4-AWQ groups along)."""
    text = _text_config(_load(hf / "config.json"))
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    return {"q/k/v/gate/up (hidden_size)": text["hidden_size"], "o_proj (heads*head_dim)": heads * head_dim,
            "down_proj (intermediate_size)": text["intermediate_size"]}


def check_int4_group(hf: Path, precision: str) -> dict:
    widths = linear_widths(hf)
    bad = {k: w for k, w in widths.items() if w % layout.INT4_GROUP}
    if not bad:
        return _record("int4_group", True, f"every Linear width divides by {layout.INT4_GROUP} (int4_awq buildable)")
    why = ", ".join(f"{k} {w}" for k, w in bad.items())
    if precision == "int4_awq":
        return _record("int4_group", False, f"INT4-AWQ group {layout.INT4_GROUP} does not divide {why}: the "
                       "device cannot build it; use fp16 or int8_sq")
    return _record("int4_group", True, f"fp16 unaffected; int4_awq would be refused ({why} not a multiple of "
                   f"{layout.INT4_GROUP})", int4_buildable=False)


def qwen_smart_resize(h: int, w: int, factor: int, min_tokens: int, max_tokens: int) -> tuple[int, int]:
    """Edge-LLM's runtime resize for Qwen VL images (from token limits, factor = patch * merge)."""
    import math

    def round_by(v):  # round half to even, as Python's round
        return round(v / factor) * factor

    min_px, max_px = min_tokens * factor * factor, max_tokens * factor * factor
    hb, wb = max(factor, round_by(h)), max(factor, round_by(w))
    if hb * wb > max_px:
        beta = math.sqrt(h * w / max_px)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_px:
        beta = math.sqrt(min_px / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def check_image_tokens(facts: dict) -> dict:
    """The runtime derives image grids from the visual engine's token limits; they must give the grids
    the student's processor made for the parity images (or device parity compares different inputs)."""
    lo, hi = facts["image_tokens"]["min"], facts["image_tokens"]["max"]
    rows, bad = [], []
    from genrecal.families import get_family

    rule = get_family(facts["family"], role="teacher").edgellm_images  # "grid" | "tiles"
    if rule == "grid":
        factor = facts["processor"]["patch_size"] * facts["processor"]["merge_size"]
        for img in facts["parity_images"]:
            runtime = qwen_smart_resize(img["height"], img["width"], factor, lo, hi)
            rows.append({"image": img["name"], "runtime_hw": runtime, "processor_hw": img["resized_hw"]})
            if list(runtime) != list(img["resized_hw"]):
                bad.append(f"{img['name']}: runtime {runtime} vs processor {img['resized_hw']}")
    elif rule == "tiles":
        per_tile = facts["tokens_per_tile"]
        tiles = max(1, hi // layout.INTERNVL_TOKENS_PER_TILE - 1)
        for img in facts["parity_images"]:
            rows.append({"image": img["name"], "runtime_tiles": tiles, "processor_tiles": img["tiles"]})
            if img["tiles"] != tiles and not (img["tiles"] == 1 and tiles == 1):
                bad.append(f"{img['name']}: runtime {tiles} tile(s) vs processor {img['tiles']}")
        if per_tile != layout.INTERNVL_TOKENS_PER_TILE and tiles > 1:
            bad.append(f"{per_tile} tokens per tile: Edge-LLM's tile arithmetic assumes "
                       f"{layout.INTERNVL_TOKENS_PER_TILE}")
    detail = "; ".join(bad) or f"runtime grids equal the processor's for {len(rows)} parity image(s) " \
                                f"(tokens per image {lo}..{hi})"
    return _record("image_tokens", not bad, detail, images=rows)


def run_all(art: Path, hf: Path, facts: dict, precision: str = "fp16") -> list[dict]:
    """Every check above; a check that crashes is a failed record with its error, not an exception."""
    art, hf = Path(art), Path(hf)
    steps = [("graph_io", lambda: check_graph_io(art)), ("llm_config", lambda: check_llm_config(art, hf)),
             ("visual_config", lambda: check_visual_config(art, hf)), ("embedding", lambda: check_embedding(art, hf)),
             ("preprocessor", lambda: check_preprocessor(art, facts)),
             ("chat_template", lambda: check_chat_template(art, hf)),
             ("int4_group", lambda: check_int4_group(hf, precision)), ("image_tokens", lambda: check_image_tokens(facts))]
    out = []
    for name, fn in steps:
        try:
            out.append(fn())
        except (OSError, KeyError, ValueError, TypeError) as exc:
            out.append(_record(name, False, f"could not check: {type(exc).__name__}: {exc}"))
    return out
