"""The device side of an Edge-LLM artifact (torch-free): build commands sized from a device profile.

    plan = plan_for(manifest_model(Path("edgellm-fp16")), "jetson-orin-nano")   # limits, commands, memory
    (on the device: python -m genrecal.export.edgellm.device_cli plan|compare|record ARTIFACT, device_cli.py)

`plan_for` sizes Edge-LLM's builders the way the TensorRT plan is sized (tensorrt_memory): the largest image
the student's processor makes (tokens per image; halved while it does not fit, never below what the parity
images need: the runtime downsizes larger images), then the most images (MAX_IMAGES down to 1) whose prompt
+ MAX_NEW_TOKENS of KV cache + the artifact's weights + a coarse activation estimate fit USABLE_FRACTION
of the profile's memory; the KV capacity is capped at the model's max_position_embeddings. The C++ tools come
from Edge-LLM's source built on the device at the pinned tag; $EDGELLM_BUILD is that build dir.
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal.errors import GenrecalError
from genrecal.artifacts import edgellm as layout
from genrecal.export.tensorrt_memory import GIB, MAX_IMAGES, MAX_NEW_TOKENS, TEXT_TOKENS, USABLE_FRACTION

FP16 = 2
BUILD_RAM_FACTOR = 4  # users report llm_build needing 3-4x the model size in RAM on Orin Nano
TOOL_PATHS = {"llm_build": "examples/llm/llm_build", "visual_build": "examples/multimodal/visual_build",
              "llm_inference": "examples/llm/llm_inference"}


class DeviceFitError(GenrecalError):
    """An Edge-LLM artifact that cannot fit the device profile's memory."""


def _tool(name: str) -> str:
    return f'"${{EDGELLM_BUILD:?set EDGELLM_BUILD to the Edge-LLM {layout.VERSION} build dir}}/{TOOL_PATHS[name]}"'


def artifact_facts(art: Path, facts: dict | None = None) -> dict:
    """Sizes the plan needs, from the artifact's own configs (+ the host's processor facts when given;
    on the device they come from the manifest)."""
    art = Path(art)
    llm = json.loads((art / layout.LLM_DIR / layout.CONFIG_NAME).read_text())
    text = llm.get("text_config") or llm
    vis = json.loads((art / layout.VISUAL_DIR / layout.CONFIG_NAME).read_text()).get("vision_config") or {}
    heads = text["num_attention_heads"]
    weights = sum(p.stat().st_size for p in art.rglob("*") if p.is_file() and
                  (p.suffix in (".onnx", ".data", ".safetensors") or p.name.endswith(".onnx.data")))
    out = {"layers": text["num_hidden_layers"], "hidden": text["hidden_size"], "heads": heads,
           "kv_heads": text.get("num_key_value_heads") or heads,
           "head_dim": text.get("head_dim") or text["hidden_size"] // heads, "ffn": text.get("intermediate_size", 0),
           "vocab": text["vocab_size"], "max_positions": text.get("max_position_embeddings") or 32768,
           "v_hidden": vis.get("hidden_size") or vis.get("embed_dim") or 0,
           "v_ffn": vis.get("intermediate_size") or 0, "merge": vis.get("spatial_merge_size") or 2,
           "weights_bytes": weights}
    if facts:
        out["image_tokens"] = dict(facts["image_tokens"])
        out["parity_tokens"] = max((img.get("tokens", 1) for img in facts.get("parity_images", [])), default=1)
    return out


def _memory(m: dict, images: int, per_image: int) -> dict:
    max_input = images * per_image + TEXT_TOKENS
    kv_capacity = min(max_input + MAX_NEW_TOKENS, m["max_positions"])
    kv = kv_capacity * 2 * m["layers"] * m["kv_heads"] * m["head_dim"] * FP16
    llm_act = max_input * (6 * m["hidden"] + 3 * m["ffn"]) * FP16 + m["vocab"] * 4
    patches = per_image * m["merge"] ** 2  # ViT tokens of one image before the merger
    vis_act = images * patches * (6 * m["v_hidden"] + 2 * m["v_ffn"]) * FP16
    total = m["weights_bytes"] + kv + llm_act + vis_act
    return {"images": images, "per_image": per_image, "max_input": max_input, "kv_capacity": kv_capacity,
            "kv_bytes": kv, "activation_bytes": llm_act + vis_act, "total_bytes": total}


def _per_image_choices(m: dict) -> list[int]:
    """Image tokens per image to try, largest first: the processor's largest image, then halves down to
    what the parity images need (the runtime resizes larger images down to the engine's limit)."""
    top, floor = m["image_tokens"]["max"], max(m["image_tokens"]["min"], m.get("parity_tokens", 1), 1)
    out = [top]
    while out[-1] // 2 >= floor:
        out.append(out[-1] // 2)
    return out


def plan_for(m: dict, profile_name: str) -> dict:
    """The llm_build / visual_build / llm_inference lines for `profile_name`, with the memory estimate.
    Raises DeviceFitError when one image does not fit."""
    from genrecal.artifacts.profiles import get_profile

    profile = get_profile(profile_name)
    budget = int((profile.ram_gb or 8.0) * 1e9 * USABLE_FRACTION)
    fit = next((mem for per_image in _per_image_choices(m) for images in range(MAX_IMAGES, 0, -1)
                if (mem := _memory(m, images, per_image))["total_bytes"] <= budget
                and mem["kv_capacity"] > mem["max_input"]), None)
    if fit is None:
        one = _memory(m, 1, _per_image_choices(m)[-1])
        raise DeviceFitError(f"the Edge-LLM artifact cannot fit {profile.name}: one image of {one['per_image']} "
                             f"tokens needs ~{one['total_bytes'] / GIB:.2f} GiB > {budget / GIB:.2f} GiB usable, or "
                             f"its prompt ({one['max_input']} tokens) exceeds max_position_embeddings "
                             f"{m['max_positions']}")
    per_image = fit["per_image"]
    limits = {"max_batch_size": 1, "max_input_len": fit["max_input"], "max_kv_cache_capacity": fit["kv_capacity"],
              "min_image_tokens": m["image_tokens"]["min"], "max_image_tokens": fit["images"] * per_image,
              "max_image_tokens_per_image": per_image, "max_images": fit["images"]}
    warnings = []
    if m["weights_bytes"] * BUILD_RAM_FACTOR > budget:
        warnings.append(f"llm_build may need ~{BUILD_RAM_FACTOR}x the model size in RAM "
                        f"({m['weights_bytes'] * BUILD_RAM_FACTOR / GIB:.1f} GiB): stop other processes or add swap")
    return {"profile": profile.name, "limits": limits, "commands": commands(limits), "warnings": warnings,
            "memory": {"budget_gib": round(budget / GIB, 2), "usable_fraction": USABLE_FRACTION,
                       "weights_gib": round(m["weights_bytes"] / GIB, 3), "kv_gib": round(fit["kv_bytes"] / GIB, 3),
                       "activation_gib": round(fit["activation_bytes"] / GIB, 3),
                       "total_gib": round(fit["total_bytes"] / GIB, 3),
                       "note": "estimate: fp16 weights + KV cache at capacity + coarse activations"}}


def commands(limits: dict, warmup: int = 1) -> dict:
    """The three device lines, run from the artifact dir (paths as in layout)."""
    return {
        "llm_build": f"{_tool('llm_build')} --onnxDir {layout.LLM_DIR} --engineDir {layout.ENGINE_DIR}/llm "
                     f"--maxBatchSize {limits['max_batch_size']} --maxInputLen {limits['max_input_len']} "
                     f"--maxKVCacheCapacity {limits['max_kv_cache_capacity']}",
        "visual_build": f"{_tool('visual_build')} --onnxDir {layout.VISUAL_DIR} --engineDir {layout.ENGINE_DIR} "
                        f"--minImageTokens {limits['min_image_tokens']} --maxImageTokens {limits['max_image_tokens']} "
                        f"--maxImageTokensPerImage {limits['max_image_tokens_per_image']}",
        "llm_inference": f"{_tool('llm_inference')} --engineDir {layout.ENGINE_DIR}/llm --multimodalEngineDir "
                         f"{layout.ENGINE_DIR}/visual --inputFile {layout.PARITY_DIR}/{layout.PARITY_INPUT} "
                         f"--outputFile {layout.OUTPUT_JSON} --dumpProfile --profileOutputFile {layout.PROFILE_JSON} "
                         f"--warmup {warmup}",
    }


def manifest_model(art: Path) -> dict:
    """The model facts the export recorded (manifest extra["model"]), checksums verified."""
    from genrecal.artifacts.manifest import load_manifest

    manifest = load_manifest(Path(art))
    if manifest.format != layout.FORMAT:
        raise GenrecalError(f"{art} is a {manifest.format!r} artifact, not an Edge-LLM one ({layout.FORMAT})")
    return {**manifest.extra["model"], "image_tokens": manifest.extra["image_tokens"]}
