"""`genrecal-distill` configuration: one typed dataclass; the CLI and `--config YAML` both fill it.

Defaults follow ../shared/docs/genrecal-method.md (the paper's lr 1e-4 -> 1e-5, 3% warmup,
2-layer Recalibrator initialised from the student's last two layers, loss weights 1, T = 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

METHODS = ("genrecal", "sft", "kd", "uld")
GENRECAL_STAGES = ("align", "distill", "sft")
DTYPES = ("auto", "bf16", "fp16", "fp32")
SWITCHES = ("auto", "on", "off")
ANSWER_FEATURES = ("hidden", "embedding")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and why."""


@dataclass
class DistillConfig:
    teacher: str | None = None
    """Teacher model dir or hub id (any image-text-to-text model; not needed for `sft`)."""
    student: str = ""
    """Student model dir or hub id; its family must be registered (see `genrecal zoo list`)."""
    data: str = ""
    """JSON/JSONL file, a dir with data.json, or a HF dataset saved with save_to_disk; records in
    LLaVA, HF chat, TRL prompt-completion or SmolVLM texts layout (see genrecal.data.layouts)."""
    out: str = ""
    """Output dir: student/, recalibrator/, checkpoints/, train_log.jsonl."""
    method: str = "genrecal"
    """genrecal | sft | kd | uld."""
    stages: tuple[str, ...] = GENRECAL_STAGES
    """GenRecal stages to run, in order (a subset of align, distill, sft)."""
    stage_split: tuple[float, ...] = (0.2, 0.6, 0.2)
    """Share of max_steps given to align / distill / sft (renormalised over the stages run)."""
    max_steps: int = 300
    """Optimizer steps in total, summed over stages."""
    batch_size: int = 8
    """Samples per process per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global batch = batch_size x grad_accum x processes)."""
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup: float = 0.03
    """Warmup fraction of each stage's steps."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N optimizer steps (and at each stage end)."""
    keep_checkpoints: int = 2
    stop_after: str | None = None
    """End this launch after the named stage (its checkpoint is written); `--resume` continues with
    the next one. Under FSDP/DeepSpeed every launch runs one stage."""
    max_length: int | None = None
    """Samples longer than this (tokens, either model) are bad input (`too_long`). None: derived
    from the two processors (largest image-token count of one image + 1024 text tokens)."""
    image_root: str | None = None
    """Image paths in the data resolve under this dir (default: the data file's dir); symlinks
    inside it may point anywhere, paths leaving it are refused."""
    on_bad_sample: str = "error"
    """error: stop at the first bad sample; skip: drop it and report counts per reason."""
    limit: int | None = None
    """Use only the first N samples of the data."""
    data_workers: int = 0
    """DataLoader worker processes rendering the next micro-batches (0: render in the training process)."""
    require_image: bool = False
    """Refuse text-only samples (`no_image`) instead of training on them beside image samples."""
    # ---- losses ----
    w_ar: float = 1.0
    w_kl: float = 1.0
    w_reg: float = 1.0
    w_sft: float = 1.0
    w_uld: float = 1.0
    temperature: float = 1.0
    head_chunk: int = 256
    """Tokens per chunk when applying a (large) head; logits are recomputed in backward."""
    # ---- Recalibrator ----
    recal_depth: int = 2
    recal_init: str = "student"
    """student: copy the student's last layers; random."""
    recal_answer_input: str = "hidden"
    """What the Recalibrator reads at the teacher's answer positions, on both paths: hidden = the
    teacher's last-layer answer states z_al (the paper); embedding = the teacher's input embeddings
    of its answer tokens, so every scored position must come from the student's question features
    (genrecal-method.md, "answer leak", names this knob). A research knob, not a new default."""
    recal_train_in_distill: bool = True
    reg_in_distill: bool = True
    sft_in_distill: bool = True
    """Stage 2 adds the student's own CE (L_sft), as the method says; False leaves stage 2 only the
    teacher's signal through the Recalibrator (a diagnostic: what does the student learn from it alone?)."""
    # ---- what the student trains in the distill stage ----
    distill_train: tuple[str, ...] = ("layers", "norm")
    """Student parts trained in stage 2: layers, norm, embed, head, projector, vision."""
    sft_train: tuple[str, ...] = ("layers", "norm", "embed", "head", "projector")
    """Student parts trained in stage 3 and by the sft/kd/uld baselines."""
    # ---- precision and devices ----
    dtype: str = "auto"
    """auto | bf16 | fp16 | fp32: the frozen teacher's weights and the compute (autocast) precision.
    auto: Accelerate's launch setting if it has one, else the teacher's checkpoint dtype (the
    student's for sft); fp16 on CPU falls back to fp32. Trainable weights always stay fp32."""
    save_dtype: str = "auto"
    """dtype of the saved student; auto: the input student checkpoint's dtype."""
    teacher_device_map: str | None = None
    """Place the teacher over several GPUs with this transformers `device_map` (e.g. auto);
    one process only. None: the teacher sits on the Accelerate device."""
    gradient_checkpointing: str = "auto"
    """auto | on | off: activation checkpointing of the student (auto: on when training on a GPU)."""
    trust_remote_code: bool = False
    log_attention_mass: bool = True
    attn_mass_every: int = 10
    """Compute the diagnostics every N optimizer steps: the attention mass (an eager attention pass;
    the Recalibrator uses SDPA otherwise) and the shuffled-question rise of L_ar."""
    log_shuffle_rise: bool = True
    """On diagnostic steps of align/distill, also score L_ar with the student's question features
    shifted across the micro-batch and log `ar_shuffled` and `ar_shuffle_rise` (see diagnostics.py);
    null at batch size 1, where there is nothing to shuffle."""
    dry_run: bool = False
    resume: bool = False

    def __post_init__(self):
        self.stages = tuple(self.stages)
        self.stage_split = tuple(self.stage_split)
        self.distill_train, self.sft_train = tuple(self.distill_train), tuple(self.sft_train)
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        bad = [s for s in self.stages if s not in GENRECAL_STAGES]
        if bad:
            raise ConfigError(f"unknown stage(s) {bad}; GenRecal stages are {', '.join(GENRECAL_STAGES)}")
        if self.on_bad_sample not in ("error", "skip"):
            raise ConfigError("--on-bad-sample must be 'error' or 'skip'")
        if self.method != "sft" and not self.teacher:
            raise ConfigError(f"--method {self.method} needs --teacher")
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("max_steps, batch_size and grad_accum must be >= 1")
        if self.recal_init not in ("student", "random"):
            raise ConfigError("recal_init must be 'student' or 'random'")
        if self.recal_answer_input not in ANSWER_FEATURES:
            raise ConfigError(f"--recal-answer-input {self.recal_answer_input!r}: choose one of "
                              f"{', '.join(ANSWER_FEATURES)}")
        self._check_precision_and_lengths()

    def _check_precision_and_lengths(self) -> None:
        for name in ("dtype", "save_dtype"):
            value = getattr(self, name)
            if value not in DTYPES:
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: choose one of {', '.join(DTYPES)}")
        if self.gradient_checkpointing not in SWITCHES:
            raise ConfigError(f"--gradient-checkpointing must be one of {', '.join(SWITCHES)}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError("--max-length must be >= 1")
        if self.data_workers < 0:
            raise ConfigError("--data-workers must be >= 0")
        if self.attn_mass_every < 1:
            raise ConfigError("attn_mass_every must be >= 1 (log_attention_mass: false turns it off)")
        if self.stop_after is not None and self.stop_after not in self.stage_names():
            raise ConfigError(f"--stop-after {self.stop_after!r}: not a stage of this run "
                              f"({', '.join(self.stage_names())})")

    def stage_names(self) -> tuple[str, ...]:
        return self.stages if self.method == "genrecal" else (self.method,)

    def stage_steps(self) -> dict[str, int]:
        """Steps per stage; the budget is split across GenRecal stages and counted in full."""
        names = self.stage_names()
        if len(names) == 1:
            return {names[0]: self.max_steps}
        if self.max_steps < len(names):
            raise ConfigError(f"max_steps {self.max_steps} < {len(names)} stages: every stage needs a step")
        split = [self.stage_split[GENRECAL_STAGES.index(s)] for s in names]
        raw = [self.max_steps * w / sum(split) for w in split]
        steps = [max(1, int(r)) for r in raw]
        while sum(steps) > self.max_steps:  # the floors of 1 overshot: take from the largest stage
            steps[steps.index(max(steps))] -= 1
        while sum(steps) < self.max_steps:  # largest remainder first; ties go to the later stage
            rem = [r - n for r, n in zip(raw, steps)]
            steps[len(rem) - 1 - rem[::-1].index(max(rem))] += 1
        return dict(zip(names, steps))

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path: str | None, overrides: dict) -> DistillConfig:
    """YAML file (if any) then explicit CLI overrides (None values are 'not given')."""
    values: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        values = yaml.safe_load(p.read_text()) or {}
        known = {f.name for f in fields(DistillConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DistillConfig(**values)

