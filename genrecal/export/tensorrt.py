"""TensorRT for Jetson: a build plan written on the host, engines built on the device.

Engines are not portable across GPU architectures or TensorRT versions, so `--target jetson`
writes OUT/tensorrt-plan/: the fp16 standard-op ONNX graphs, the processor files, and plan.json
(min/opt/max shapes for every dynamic input of every graph, sized from the processor's own image
limits and the device profile's memory with a per-profile memory estimate, see tensorrt_memory.py;
separate prefill and decode profiles for the decoder; the equivalent `trtexec` lines). On the Jetson:

    genrecal-export build-engine OUT/tensorrt-plan --out OUT/tensorrt-engines

builds the engines with the TensorRT Python API and stamps TensorRT version, GPU and JetPack into
the engine dir's manifest (format "tensorrt"); `check_engine_dir` refuses engines built elsewhere.
Untested here (no TensorRT, no GPU on this machine): everything after `import tensorrt`.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx

from genrecal.errors import GenrecalError
from genrecal.artifacts import layout
from genrecal.export.tensorrt_memory import IMAGE_SIDES, USABLE_FRACTION, Dims, Sizing, choose
from genrecal.artifacts.manifest import Manifest, build_dir_atomically, load_manifest

PLAN_FORMAT = "tensorrt-plan"
WORKSPACE_MIB = 2048  # builder memory pool; Orin Nano 8 GB shares it with the CPU
DEFAULT_DEVICE = "jetson-orin-nano"  # the smallest Jetson profile: a plan that fits it fits the others


class TensorRTError(GenrecalError):
    """TensorRT missing, a plan that cannot be built, or engines built for another device."""


# ---- the plan (host side) ----
def _graph_inputs(path: Path) -> dict[str, list]:
    """input name -> dims (int, or the symbolic name of a dynamic axis)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


def _shape(dims: list, ranges: dict[str, tuple[int, int, int]], which: int, graph: str) -> list[int]:
    out = []
    for d in dims:
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif d in ranges:
            out.append(ranges[d][which])
        else:
            raise TensorRTError(f"{graph}: no profile range for dynamic axis {d!r}")
    return out


def _profile(inputs: dict[str, list], ranges: dict, graph: str) -> dict:
    return {name: {k: _shape(dims, ranges, i, graph) for i, k in enumerate(("min", "opt", "max"))}
            for name, dims in inputs.items()}


def vision_ranges(small: dict[str, tuple], typical: dict[str, tuple], large: dict[str, tuple],
                  vision_inputs: list[str], graph_inputs: dict[str, list], images: int) -> dict:
    """Axis ranges of the vision graph from the processor's output for a smallest, typical and
    largest single image; every dynamic axis scales with the image count (max `images`)."""
    ranges = {}
    for name in vision_inputs:
        for axis, dim in enumerate(graph_inputs[name]):
            if isinstance(dim, str):
                ranges[dim] = (small[name][axis], typical[name][axis], large[name][axis] * images)
    return ranges


def _one_image(onnx_build, side: int) -> dict:
    """Processor output for one grey side x side image and a short question."""
    import numpy as np
    from PIL import Image

    from genrecal.runtimes.prompt import prepare_inputs

    processor = onnx_build.student()[1]
    image = Image.fromarray(np.full((side, side, 3), 127, dtype=np.uint8))
    return prepare_inputs(processor, [image], "What is in the image? Answer in one sentence.")


def _image_shapes(onnx_build, side: int) -> tuple[dict[str, tuple], int]:
    """(vision feed shapes, prompt tokens) of one side x side image."""
    from genrecal.families import onnx_spec

    spec = onnx_spec(onnx_build.student()[0].config.model_type)
    enc = _one_image(onnx_build, side)
    return {k: tuple(v.shape) for k, v in spec.feeds(enc).items()}, int(enc["input_ids"].shape[1])


def device_budget(profile) -> int:
    """Usable bytes on the profile's device (`host`: this machine's RAM)."""
    import os

    ram = profile.ram_gb * 1e9 if profile.ram_gb else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(ram * USABLE_FRACTION)


def size_plan(onnx_build, weights: int, profile) -> tuple[Sizing, dict[int, dict]]:
    """The plan's limits for `profile` with `weights` bytes of engines (see tensorrt_memory) + the
    vision feed shapes of each distinct image size the processor makes, largest first."""
    shapes, per_side = {}, []
    for side in IMAGE_SIDES:  # the processor caps each; keep the distinct results, largest first
        feeds, tokens = _image_shapes(onnx_build, side)
        if all(feeds != seen for seen in shapes.values()):
            shapes[side] = feeds
            per_side.append((side, feeds["pixel_values"], tokens))
    dims = Dims.from_config(onnx_build.student()[0].config)
    return choose(dims, per_side, weights, device_budget(profile), profile.name), shapes


def make_plan(onnx_build, graph_dir: Path, facts: dict, profile) -> dict:
    """plan.json: builder settings, per-graph optimisation profiles sized for `profile`, the memory
    estimate per profile and trtexec lines. Raises PlanSizeError when nothing fits."""
    inputs = {role: _graph_inputs(graph_dir / name) for role, name in layout.GRAPHS.items()}
    weights = sum(f.stat().st_size for f in graph_dir.iterdir() if f.suffix in (".onnx", ".data"))
    sizing, shapes = size_plan(onnx_build, weights, profile)
    # opt must not exceed max: a plan cut below 448 px takes its largest image as the typical one
    (small, _), (typical, typical_prompt) = (_image_shapes(onnx_build, s) for s in (16, min(448, sizing.image_side)))
    vis = vision_ranges(small, typical, shapes[sizing.image_side], facts["vision_inputs"], inputs["vision"],
                        sizing.images)
    max_prompt, max_context = sizing.max_prompt, sizing.max_context
    prompt = min(typical_prompt, max_prompt)  # a typical prompt
    text = {"batch": (1, 1, 1)}
    prefill = {**text, "seq": (1, prompt, max_prompt), "past_len": (0, 0, 0), "total_len": (1, prompt, max_prompt)}
    decode = {**text, "seq": (1, 1, 1), "past_len": (1, prompt + 16, max_context - 1),
              "total_len": (2, prompt + 17, max_context)}
    profiles = {
        "vision": [("default", _profile(inputs["vision"], vis, "vision"))],
        "embed": [("default", _profile(inputs["embed"], {**text, "seq": (1, prompt, max_context)}, "embed"))],
        # prefill runs once over the prompt, decode once per token: one profile each, so each is
        # tuned at its own opt shape; the runtime picks profile 0 for prefill and 1 for decode
        "decoder": [("prefill", _profile(inputs["decoder"], prefill, "decoder")),
                    ("decode", _profile(inputs["decoder"], decode, "decoder"))],
    }
    graphs = {role: {"onnx": layout.GRAPHS[role], "engine": layout.ENGINE_NAMES[role],
                     "profiles": [{"name": n, "shapes": s} for n, s in profs]} for role, profs in profiles.items()}
    return {
        "format_version": 1, "family": facts.get("family"), "precision": "fp16",
        "builder": {"fp16": True, "workspace_mib": WORKSPACE_MIB},
        "limits": {"max_images": sizing.images, "max_context": max_context, "max_prompt": max_prompt, "batch": 1,
                   "image_tokens": sizing.image_tokens,
                   "max_image_side": None if sizing.image_side == next(iter(shapes)) else sizing.image_side},
        "memory": sizing.memory(),
        "decoder_profiles": {"prefill": 0, "decode": 1},
        "graphs": graphs,
        "trtexec": {role: trtexec_line(g) for role, g in graphs.items()},
        "notes": ["engines are not portable: build on the target Jetson (TensorRT version and GPU are checked)",
                  "the decoder's trtexec line repeats --minShapes/--optShapes/--maxShapes once per profile; a "
                  "trtexec that takes one group only needs one engine per profile, or use build-engine",
                  "max_image_side null: the processor's own largest image fits; otherwise images must be "
                  "downscaled to that side before the processor"],
    }


def memory_lines(plan: dict) -> list[str]:
    """The plan's memory estimate, one line per profile, for the CLI."""
    mem = plan["memory"]
    lim = plan["limits"]
    lines = [f"TensorRT plan for {mem['device']}: {lim['max_images']} image(s) x {lim['image_tokens']} tokens, "
             f"prompt <= {lim['max_prompt']}, context <= {lim['max_context']}; estimated {mem['total_gib']:.2f} GiB "
             f"of {mem['budget_gib']:.2f} GiB usable (fp16 weights {mem['weights_gib']:.2f} GiB)"]
    lines += [f"  activations {name:16s} {gib:8.3f} GiB" for name, gib in mem["activation_gib"].items()]
    return lines


def _spec(shapes: dict, key: str) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in s[key])}" for name, s in shapes.items())


def trtexec_line(graph: dict) -> str:
    parts = [f"trtexec --onnx={graph['onnx']} --saveEngine={graph['engine']} --fp16",
             f"--memPoolSize=workspace:{WORKSPACE_MIB}M"]
    for prof in graph["profiles"]:
        shapes = prof["shapes"]
        parts += [f"--minShapes={_spec(shapes, 'min')}", f"--optShapes={_spec(shapes, 'opt')}",
                  f"--maxShapes={_spec(shapes, 'max')}"]
    return " ".join(parts)


def write_plan_dir(onnx_build, final_dir: Path, target: str = "jetson", device: str | None = None) -> Manifest:
    """OUT/tensorrt-plan: fp16 graphs (checked with onnxruntime) + processor + plan.json + manifest,
    profiles sized for the device profile `device` (default DEFAULT_DEVICE)."""
    from genrecal.artifacts.profiles import get_profile

    profile = get_profile(device or DEFAULT_DEVICE)

    def build(tmp: Path) -> Manifest:
        extra = onnx_build.write_precision(tmp, "fp16")
        for stray in ("embed_tokens_genai.onnx", layout.GENAI_CONFIG):  # onnxruntime-genai only
            (tmp / stray).unlink(missing_ok=True)
        manifest = onnx_build.manifest("fp16", target, extra)
        plan = make_plan(onnx_build, tmp, {**extra, "family": manifest.family}, profile)  # refuses before parity
        parity = onnx_build.check_dir(tmp, manifest)  # the same graphs TensorRT will parse
        (tmp / layout.PLAN_NAME).write_text(json.dumps(plan, indent=2) + "\n")
        manifest.format, manifest.precision = PLAN_FORMAT, "fp16"
        manifest.parity = {**parity, "checked_with": "onnxruntime CPU on the fp16 graphs (engines: on device)"}
        manifest.extra = {**extra, "plan": layout.PLAN_NAME, "plan_memory": plan["memory"], "build_command":
                          f"genrecal-export build-engine {final_dir.name} --out tensorrt-engines"}
        return manifest

    return build_dir_atomically(Path(final_dir), build)


# ---- the engines (device side) ----
def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTError("TensorRT is not installed here: build-engine runs on the Jetson with JetPack's "
                            "tensorrt Python package (python3 -c 'import tensorrt'); copy the plan dir there") from None
    return trt


def device_facts() -> dict:
    """GPU name/compute capability (as torch reports them, which the tensorrt runtime compares) and
    the Jetson's L4T/JetPack release from /etc/nv_tegra_release when present."""
    facts = {"gpu": "unknown", "compute_capability": None, "l4t": None, "jetpack": None}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            facts.update(gpu=torch.cuda.get_device_name(0), compute_capability=f"{props.major}.{props.minor}")
    except ImportError:
        pass
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        facts["l4t"], facts["jetpack"] = jetpack_from_release(release.read_text())
    return facts


# L4T major.minor -> JetPack release (NVIDIA's published pairs; others are reported as L4T only)
_JETPACK = {"35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4", "36.2": "6.0 DP", "36.3": "6.0",
            "36.4": "6.1/6.2", "38.2": "7.0"}


def jetpack_from_release(text: str) -> tuple[str | None, str | None]:
    """'# R36 (release), REVISION: 3.0, ...' -> ('36.3.0', '6.0')."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None, None
    l4t = f"{m.group(1)}.{m.group(2)}"
    return l4t, _JETPACK.get(".".join(l4t.split(".")[:2]), f"unknown (L4T {l4t})")


def _build_engine(trt, logger, onnx_path: Path, graph: dict, builder_cfg: dict) -> bytes:
    builder = trt.Builder(logger)
    explicit = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # TensorRT 8.x needs the flag
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(builder_cfg["workspace_mib"]) << 20)
    if builder_cfg.get("fp16"):
        config.set_flag(trt.BuilderFlag.FP16)
    for prof in graph["profiles"]:
        profile = builder.create_optimization_profile()
        for name, s in prof["shapes"].items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT could not build {graph['engine']} (see the TensorRT log above)")
    return bytes(serialized)


def build_engines(plan_dir: Path, out_dir: Path | None = None, workspace_mib: int | None = None) -> Manifest:
    """Build every engine of a plan dir into `out_dir` (default: a sibling `tensorrt-engines`)."""
    trt = import_tensorrt()  # first: a host without TensorRT gets one clear line
    plan_dir = Path(plan_dir)
    plan_manifest = load_manifest(plan_dir)
    if plan_manifest.format != PLAN_FORMAT:
        raise TensorRTError(f"{plan_dir} is a {plan_manifest.format!r} artifact, not a TensorRT plan "
                            "(use the tensorrt-plan dir written by genrecal-export --target jetson)")
    plan = json.loads((plan_dir / layout.PLAN_NAME).read_text())
    builder_cfg = {**plan["builder"], **({"workspace_mib": workspace_mib} if workspace_mib else {})}
    out_dir = Path(out_dir) if out_dir else plan_dir.parent / "tensorrt-engines"
    logger = trt.Logger(trt.Logger.WARNING)

    def build(tmp: Path) -> Manifest:
        for graph in plan["graphs"].values():
            engine = _build_engine(trt, logger, plan_dir / graph["onnx"], graph, builder_cfg)
            (tmp / graph["engine"]).write_bytes(engine)
        for path in plan_dir.iterdir():  # processor, tokenizer, configs travel with the engines
            if path.is_file() and path.suffix != ".onnx" and not path.name.startswith("genrecal_manifest"):
                shutil.copyfile(path, tmp / path.name)
        facts = plan_manifest.extra
        extra = {**{k: facts[k] for k in ("num_layers", "num_kv_heads", "head_dim", "image_token_id",
                                          "eos_token_ids", "mrope", "vision_inputs", "vision_feeds") if k in facts},
                 "eos_token_id": facts.get("eos_token_ids"), "tensorrt_version": trt.__version__,
                 **device_facts(), "engines": {r: g["engine"] for r, g in plan["graphs"].items()},
                 "decoder_profiles": plan["decoder_profiles"], "builder": builder_cfg, "plan": plan["limits"]}
        return Manifest(format="tensorrt", target=plan_manifest.target, family=plan_manifest.family,
                        precision="fp16", source_sha256=plan_manifest.source_sha256, extra=extra)

    return build_dir_atomically(out_dir, build)


def check_engine_dir(path: Path, trt_version: str | None = None, gpu: str | None = None,
                     capability: str | None = None) -> Manifest:
    """Refuse an engine dir built by another TensorRT version or for another GPU (checksums first).
    Versions default to this machine's (needs TensorRT); tests pass them explicitly."""
    from genrecal.runtimes.tensorrt import check_compatible

    manifest = load_manifest(Path(path))
    if manifest.format != "tensorrt":
        raise TensorRTError(f"{path} is a {manifest.format!r} artifact, not TensorRT engines")
    if trt_version is None:
        trt_version = import_tensorrt().__version__
        here = device_facts()
        gpu, capability = gpu or here["gpu"], capability or here["compute_capability"]
    check_compatible(manifest.extra, trt_version, gpu or "", capability)
    return manifest
