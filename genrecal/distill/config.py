"""`genrecal-distill` configuration: one typed dataclass; the CLI and `--config YAML` both fill it.

Defaults follow docs/method.md (the paper's lr 1e-4 -> 1e-5, 3% warmup,
2-layer Recalibrator initialised from the student's last two layers, loss weights 1, T = 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from genrecal.errors import GenrecalError

METHODS = ("genrecal", "sft", "kd", "uld")
GENRECAL_STAGES = ("align", "distill", "sft")
DTYPES = ("auto", "bf16", "fp16", "fp32")
SWITCHES = ("auto", "on", "off")
ANSWER_FEATURES = ("hidden", "embedding")


class ConfigError(GenrecalError, ValueError):
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
    method: str = field(default="genrecal", metadata={"choices": METHODS})
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
    """Peak learning rate of every stage (after warmup)."""
    min_lr: float = 1e-5
    """Learning rate at the end of each stage (linear decay from lr)."""
    warmup: float = 0.03
    """Warmup fraction of each stage's steps."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    """Seeds the sample order and every random number generator of the run (Accelerate's set_seed)."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N optimizer steps (and at each stage end)."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept on disk (the newest ones)."""
    stop_after: str | None = None
    """End this launch after the named stage (its checkpoint is written); `--resume` continues with
    the next one. Under FSDP/DeepSpeed every launch runs one stage."""
    max_length: int | None = None
    """Samples longer than this (tokens, either model) are bad input (`too_long`). None: derived
    from the two processors (largest image-token count of one image + 1024 text tokens)."""
    image_root: str | None = None
    """Image paths in the data resolve under this dir (default: the data file's dir); symlinks
    inside it may point anywhere, paths leaving it are refused."""
    on_bad_sample: str = field(default="error", metadata={"choices": ("error", "skip")})
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
    """Decoder layers in the Recalibrator."""
    recal_init: str = field(default="student", metadata={"choices": ("student", "random")})
    """student: copy the student's last layers; random."""
    recal_answer_input: str = field(default="hidden", metadata={"choices": ANSWER_FEATURES})
    """What the Recalibrator reads at the teacher's answer positions, on both paths: hidden = the
    teacher's last-layer answer states z_al (the paper); embedding = the teacher's input embeddings
    of its answer tokens, so every scored position must come from the student's question features
    (docs/method.md, "Does the answer leak?", names this knob). A research knob, not a new default."""
    recal_train_in_distill: bool = True
    """Stage 2 keeps training the Recalibrator (off: it stays as stage 1 left it, and L_reg goes with it)."""
    reg_in_distill: bool = True
    """Stage 2 adds L_reg while the Recalibrator trains."""
    sft_in_distill: bool = True
    """Stage 2 adds the student's own CE (L_sft), as the method says; False leaves stage 2 only the
    teacher's signal through the Recalibrator (a diagnostic: what does the student learn from it alone?)."""
    # ---- what the student trains in the distill stage ----
    distill_train: tuple[str, ...] = ("layers", "norm")
    """Student parts trained in stage 2: layers, norm, embed, head, projector, vision."""
    sft_train: tuple[str, ...] = ("layers", "norm", "embed", "head", "projector")
    """Student parts trained in stage 3 and by the sft/kd/uld baselines."""
    # ---- precision and devices ----
    dtype: str = field(default="auto", metadata={"choices": DTYPES})
    """auto | bf16 | fp16 | fp32: the frozen teacher's weights and the compute (autocast) precision.
    auto: Accelerate's launch setting if it has one, else the teacher's checkpoint dtype (the
    student's for sft); fp16 on CPU falls back to fp32. Trainable weights always stay fp32."""
    save_dtype: str = field(default="auto", metadata={"choices": DTYPES})
    """dtype of the saved student; auto: the input student checkpoint's dtype."""
    teacher_device_map: str | None = None
    """Place the teacher over several GPUs with this transformers `device_map` (e.g. auto);
    one process only. None: the teacher sits on the Accelerate device."""
    gradient_checkpointing: str = field(default="auto", metadata={"choices": SWITCHES})
    """auto | on | off: activation checkpointing of the student (auto: on when training on a GPU)."""
    trust_remote_code: bool = False
    """Let transformers run the model repositories' own code (models not built into transformers)."""
    log_attention_mass: bool = True
    """Log the diagnostics every attn_mass_every steps (see attn_mass_every)."""
    attn_mass_every: int = 10
    """Compute the diagnostics every N optimizer steps: the attention mass (an eager attention pass;
    the Recalibrator uses SDPA otherwise) and the shuffled-question rise of L_ar."""
    log_shuffle_rise: bool = True
    """On diagnostic steps of align/distill, also score L_ar with the student's question features
    shifted across the micro-batch and log `ar_shuffled` and `ar_shuffle_rise` (see diagnostics.py);
    null at batch size 1, where there is nothing to shuffle."""
    dry_run: bool = False
    """Print what each model sees for the first sample, and a memory estimate; train nothing."""
    resume: bool = False
    """Continue from OUT/checkpoints/latest."""
    allow_data_change: bool = False
    """With --resume: continue even though the data files differ from those the checkpoint was written
    with (by default that is refused: the run would go on with other data; see docs/robustness.md)."""

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


@dataclass
class AnswerConfig:
    """`genrecal data teacher-answers` (genrecal.distill.generate_answers): who answers which prompts, where."""

    teacher: str
    """Teacher model dir or hub id (any image-text-to-text model)."""
    data: str
    """Prompts: a JSON/JSONL file, a dir with data.json, or a saved HF dataset (any layout genrecal reads)."""
    out: str
    """Output dir (see genrecal.data.teacher_answers); a rerun with the same settings resumes it."""
    batch_size: int = 8
    """Prompts per generate() call (and per part file)."""
    max_new_tokens: int = 256
    """Longest answer in tokens; answers cut there are counted as `truncated` in the manifest."""
    max_length: int | None = None
    """Longest prompt in tokens (None: one largest image + 1024 text tokens, as genrecal-distill)."""
    limit: int | None = None
    """Answer only the first N prompts."""
    image_root: str | None = None
    """Image paths in the prompts resolve under this dir (default: the data file's dir)."""
    on_bad_sample: str = field(default="error", metadata={"choices": ("error", "skip")})
    """error: stop at the first bad prompt; skip: leave it out and count it in skips.json."""
    require_image: bool = False
    """Refuse text-only prompts (`no_image`) instead of answering them."""
    dtype: str = field(default="auto", metadata={"choices": DTYPES})
    """auto | bf16 | fp16 | fp32: the teacher's weights (auto: its checkpoint's, fp32 where that cannot run)."""
    trust_remote_code: bool = False
    """Let transformers run the model repository's own code (models not built into transformers)."""

    def __post_init__(self):
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("--batch-size and --max-new-tokens must be >= 1")
        if self.on_bad_sample not in ("error", "skip"):
            raise ConfigError("--on-bad-sample must be 'error' or 'skip'")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")


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

