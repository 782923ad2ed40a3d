"""The clean student -> Edge-LLM's own exporter -> OUT/edgellm-{precision} (llm/ visual/ parity/ + manifest).

    from genrecal.export.edgellm.export import write_edgellm_dir
    manifest = write_edgellm_dir(Path("out/hf"), Path("out/edgellm-fp16"))

Steps, each refused with one line when it cannot work:
  1. the family must be one whose vision Edge-LLM 0.11 takes (Family.edgellm in its record); the others get
     genrecal's own TensorRT path from targets.route, never a text-only Edge-LLM artifact
  2. a staging copy of OUT/hf with every floating tensor cast to fp16 (Edge-LLM's FP16Linear refuses
     fp32: "FP16Linear expects float16 input") and the chat template as chat_template.jinja (the exporter
     stops with a ValueError without one)
  3. (--precision other than fp16: Edge-LLM's quantiser on the staging copy, quantize.py, CUDA only)
     `python -m tensorrt_edgellm.scripts.export STAGE OUT --dtype float16` in Edge-LLM's own venv (env.py)
  4. both llm/ and visual/ must be there; host checks (checks.py) and PyTorch references (reference.py)
  5. the manifest (format "edgellm"): Edge-LLM version and packages, the exact commands, checksums, the
     device commands sized for the default profile (device.py)
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from genrecal.artifacts import edgellm as layout
from genrecal.export.edgellm.env import EdgeLLMError, edgellm_python, env_facts, run_module
from genrecal.export.edgellm.student import chat_template, check_family, family_of
from genrecal.artifacts.manifest import Manifest, build_dir_atomically, dir_sha256

DEFAULT_PROFILE = "jetson-orin-nano"


def stage_fp16(hf_dir: Path, stage: Path) -> dict:
    """Copy `hf_dir` to `stage` with floating tensors cast to fp16 and chat_template.jinja present.
    Returns what was done ({"cast_from": [...dtypes], "tensors": n, "chat_template": source})."""
    import torch
    from safetensors.torch import load_file, save_file

    hf_dir, stage = Path(hf_dir), Path(stage)
    template = chat_template(hf_dir)
    if template is None:
        raise EdgeLLMError(f"{hf_dir} has no chat template (chat_template.jinja or a chat_template entry): "
                           "Edge-LLM's exporter needs one; save the student's processor with its template")
    stage.mkdir(parents=True, exist_ok=True)
    dtypes, count = set(), 0
    for src in sorted(hf_dir.iterdir()):
        if src.is_dir() or src.name.startswith("genrecal_manifest"):
            continue
        if src.suffix == ".safetensors":
            tensors = load_file(str(src))
            for name, t in tensors.items():
                if t.is_floating_point():
                    dtypes.add(str(t.dtype).removeprefix("torch."))
                    tensors[name] = t.to(torch.float16).contiguous()
            save_file(tensors, str(stage / src.name), metadata={"format": "pt"})
            count += len(tensors)
        else:
            shutil.copyfile(src, stage / src.name)
    config = json.loads((stage / "config.json").read_text())
    _set_dtype(config, "float16")
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    source = "chat_template.jinja" if (hf_dir / layout.CHAT_TEMPLATE).is_file() else "config entry"
    (stage / layout.CHAT_TEMPLATE).write_text(template)
    return {"cast_from": sorted(dtypes), "tensors": count, "chat_template": source}


def _set_dtype(config: dict, dtype: str) -> None:
    """dtype / torch_dtype at the top and in every sub-config that states one."""
    for key in ("dtype", "torch_dtype"):
        if key in config or key == "dtype":
            config[key] = dtype
    for value in config.values():
        if isinstance(value, dict) and ("dtype" in value or "torch_dtype" in value):
            _set_dtype(value, dtype)


def export_command(stage: Path, out: Path) -> list[str]:
    return [str(stage), str(out), "--dtype", "float16"]


def run_exporter(stage: Path, out: Path, python: Path | None = None, timeout: int = 1800) -> dict:
    """Edge-LLM's exporter on `stage` into `out`; returns {"command", "seconds", "log_tail"}."""
    python = python or edgellm_python()
    args = export_command(stage, out)
    t0 = time.perf_counter()
    log = run_module(python, layout.EXPORT_MODULE, args, f"Edge-LLM {layout.VERSION}'s exporter", timeout=timeout)
    return {"command": " ".join([f"{python} -m {layout.EXPORT_MODULE}", *args]),
            "seconds": round(time.perf_counter() - t0, 1), "log_tail": log.splitlines()[-15:]}


def require_outputs(out: Path, family: str) -> None:
    """Both halves must be there: a VLM artifact without visual/ is refused, never shipped as text-only."""
    for sub in (layout.LLM_DIR, layout.VISUAL_DIR):
        if not (Path(out) / sub / layout.ONNX_NAME).is_file():
            raise EdgeLLMError(f"Edge-LLM's exporter wrote no {sub}/{layout.ONNX_NAME} for {family}: "
                               "refusing a partial artifact (see the exporter's log)")


def write_edgellm_dir(hf_dir: Path, final_dir: Path, *, precision: str = "fp16", check: bool = True,
                      profile: str = DEFAULT_PROFILE, calib: Path | None = None, python: Path | None = None,
                      log=print) -> Manifest:
    """OUT/edgellm-{precision}: Edge-LLM's artifact of the student in `hf_dir`, checked, with references.
    A precision other than fp16 goes through Edge-LLM's quantiser first (quantize.py: CUDA only)."""
    from genrecal.export.edgellm import checks, device, reference
    from genrecal.export.edgellm.quantize import quantize, require_quantizable

    hf_dir, final_dir = Path(hf_dir), Path(final_dir)
    family = family_of(hf_dir)
    check_family(family)
    calib = require_quantizable(hf_dir, precision, calib)  # no GPU / bad group size: one line, before any work
    python = python or edgellm_python(log=log)

    def build(tmp: Path) -> Manifest:
        commands = {}
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".edgellm-stage-") as stage:
            staged = stage_fp16(hf_dir, Path(stage) / "hf")
            source = Path(stage) / "hf"
            if precision != "fp16":
                commands["quantize"] = quantize(source, Path(stage) / "quantized", precision, calib, python)["command"]
                source = Path(stage) / "quantized"
            ran = run_exporter(source, tmp, python)
        commands["export"] = ran["command"]
        require_outputs(tmp, family)
        facts = reference.processor_facts(hf_dir)
        results = checks.run_all(tmp, hf_dir, facts, precision=precision) if check else []
        (tmp / layout.HOST_CHECKS).write_text(json.dumps(results, indent=2) + "\n")
        failed = [r for r in results if not r["passed"]]
        if failed:
            raise EdgeLLMError(f"Edge-LLM artifact failed host check(s): "
                               + "; ".join(f"{r['name']}: {r['detail']}" for r in failed))
        refs = reference.write_parity(hf_dir, tmp / layout.PARITY_DIR, facts) if check else None
        model = device.artifact_facts(tmp, facts)
        plan = device.plan_for(model, profile)
        extra = {"edgellm_version": layout.VERSION, "edgellm_env": env_facts(python), "staging": staged,
                 "commands": commands, "command_paths": "the staging copy (OUT/hf cast to fp16 + chat template) "
                 "and this dir's temporary name were deleted/renamed after the run", "export_seconds": ran["seconds"],
                 "vision": True, "model": model, "image_tokens": facts["image_tokens"],
                 "device": {"profile": profile, "tools": list(layout.TOOLS), **plan},
                 "host_checks": layout.HOST_CHECKS, "parity_reference": refs,
                 "note": f"ONNX and engines are tied to Edge-LLM {layout.VERSION}: build its C++ tools at that "
                         "tag on the device"}
        parity = {"checked": bool(check), "scope": "host checks only (token parity: on the device, parity.py)",
                  "host_checks": {"passed": len(results) - len(failed), "total": len(results)},
                  "note": "no engine runs on the host: parity/ holds the references the device compares with"}
        if check:
            parity["passed"] = True  # every host check passed (a failed one refused the artifact above)
        return Manifest(format=layout.FORMAT, target="jetson", family=family, precision=precision,
                        source_sha256=dir_sha256(hf_dir), parity=parity, extra=extra)

    return build_dir_atomically(final_dir, build)
