"""TRL's GOLD trainer (`trl.experimental.gold`, trl 1.16.0) as an external peer in the scenes benchmark.

    train_gold(GoldRun(student="S", teacher="T", data="D/data.json", out="runs/gold", steps=200))

The same student start, teacher, samples (first `samples` records, LLaVA JSON with one image each) and
optimizer-step budget as genrecal's methods. Settings the benchmark fixes, as the issue asks:
`use_uld_loss=True` (teacher and student are different families with different tokenizers) with a
cross-entropy term of weight `ce_weight` (1.0: the ULD paper's and genrecal's `uld` objective);
`use_extended_uld` only when both tokenizers are byte-level BPE; `lmbda` 0.0 (offline: the data's
answers) or 0.5 (on-policy: half the batches the student's own generations); on CPU `bf16=False`,
`gradient_checkpointing=False`, `max_length=None`. Writes OUT/student (save_pretrained + processor) and
OUT/train_log.jsonl (one line per logged step, with `seconds` per optimizer step).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from genrecal.errors import GenrecalError

TRL_VERSION = "1.16.0"


class GoldUnavailable(GenrecalError):
    """trl (with trl.experimental.gold) is not installed, or not the tested version."""


@dataclass(frozen=True)
class GoldRun:
    student: str
    teacher: str
    data: str
    """LLaVA JSON file (a list of records with `image` and `conversations`)."""
    out: str
    steps: int
    batch_size: int = 32
    samples: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-4
    seed: int = 0
    lmbda: float = 0.0
    """0.0: offline (the data's answers); 0.5: on-policy half the time."""
    ce_weight: float = 1.0
    """GOLDConfig.uld_crossentropy_weight: cross-entropy on the completion beside the ULD term (weight 1.0), as
    the ULD paper (arXiv 2402.12030) and genrecal's `uld` (w_sft = w_uld = 1) have it. TRL's default, 0.0, is ULD
    alone, which matches sorted probabilities and never says which token: students trained so answered nothing
    (0.0 % on held-out scenes, empty strings, in the first full scenes run)."""
    max_completion_length: int = 48
    parts: tuple[str, ...] = ("layers", "norm", "embed", "head", "projector")
    """Student parts trained (genrecal's SFT default: the vision tower frozen)."""


def gold_modules():
    """(GOLDConfig, GOLDTrainer) from trl.experimental.gold; GoldUnavailable with the install line otherwise."""
    try:
        import trl
        from trl.experimental.gold import GOLDConfig, GOLDTrainer
    except ImportError as err:
        raise GoldUnavailable(f"TRL's GOLD trainer is not importable ({err}); pip install trl=={TRL_VERSION}") from None
    if trl.__version__ != TRL_VERSION:
        raise GoldUnavailable(f"trl {trl.__version__} is installed; the benchmark is written for trl=={TRL_VERSION}")
    return GOLDConfig, GOLDTrainer


def byte_level_bpe(tokenizer) -> bool:
    """True when the fast tokenizer is BPE with a ByteLevel pre-tokenizer (GOLD's extended ULD needs it)."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = json.dumps(state.get("pre_tokenizer") or {})
    return state["model"]["type"] == "BPE" and '"ByteLevel"' in pre


def dataset(data: str, limit: int | None):
    """The records as a `datasets.Dataset` of prompt / completion messages + images (PIL, genrecal's image rule)."""
    from datasets import Dataset

    from genrecal.images import open_image

    root = Path(data).parent
    records = json.loads(Path(data).read_text())[:limit]
    rows = {"prompt": [], "completion": [], "images": []}
    for r in records:
        image = r["image"] if "image" in r else r["images"][0]
        question = r["conversations"][0]["value"].replace("<image>", "").strip()
        rows["prompt"].append([{"role": "user", "content": question}])
        rows["completion"].append([{"role": "assistant", "content": r["conversations"][1]["value"]}])
        rows["images"].append([open_image(root / image)])
    return Dataset.from_dict(rows)


def _optimizer(student, run: GoldRun):
    """AdamW over `run.parts` with genrecal's schedule (3 % warmup, linear lr -> min_lr), as its methods get."""
    from types import SimpleNamespace

    import torch

    from genrecal.distill.stages import student_param_groups
    from genrecal.distill.trainer import lr_lambda

    for p in student.parameters():
        p.requires_grad_(False)
    params = [p for part in run.parts for p in student_param_groups(student)[part]]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=run.lr, weight_decay=0.0)
    schedule = lr_lambda(SimpleNamespace(warmup=0.03, lr=run.lr, min_lr=run.min_lr), run.steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def _no_special_samples(trainer, tokenizer) -> None:
    """On-policy GOLD samples the student's answers (do_sample, temperature 0.9); a sampled image placeholder
    then makes the student's next forward fail ("Image features and image tokens do not match", seen with a
    weak student). So sampling may not emit the student's special tokens, its end-of-turn token excepted."""
    banned = sorted(set(tokenizer.all_special_ids) - {tokenizer.eos_token_id})
    trainer.generation_kwargs["suppress_tokens"] = banned
    trainer.generation_config.suppress_tokens = banned


def train_gold(run: GoldRun) -> Path:
    """Train the student with GOLD for `run.steps` optimizer steps; returns OUT/student."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, PrinterCallback, TrainerCallback

    GOLDConfig, GOLDTrainer = gold_modules()
    out = Path(run.out)
    student = AutoModelForImageTextToText.from_pretrained(run.student, dtype=torch.float32)
    teacher = AutoModelForImageTextToText.from_pretrained(run.teacher, dtype=torch.float32)
    s_proc, t_proc = AutoProcessor.from_pretrained(run.student), AutoProcessor.from_pretrained(run.teacher)
    extended = byte_level_bpe(s_proc.tokenizer) and byte_level_bpe(t_proc.tokenizer)
    args = GOLDConfig(
        output_dir=str(out / "trainer"), max_steps=run.steps, per_device_train_batch_size=run.batch_size,
        gradient_accumulation_steps=1, learning_rate=run.lr, max_grad_norm=1.0,
        seed=run.seed, lmbda=run.lmbda, use_uld_loss=True, use_extended_uld=extended,
        uld_crossentropy_weight=run.ce_weight, uld_distillation_weight=1.0,
        teacher_tokenizer_name_or_path=run.teacher, max_completion_length=run.max_completion_length,
        bf16=False, fp16=False, gradient_checkpointing=False, max_length=None, use_cpu=True,
        logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0,
        remove_unused_columns=False, disable_tqdm=True,
    )
    log = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    log.write_text("")

    class StepLog(TrainerCallback):
        def __init__(self):
            self.t0 = time.perf_counter()

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_log(self, _args, state, _control, logs=None, **k):
            with log.open("a") as f:
                f.write(json.dumps({"stage": "gold", "step": state.global_step, **(logs or {}),
                                    "seconds": round(time.perf_counter() - self.t0, 4)}) + "\n")

    trainer = GOLDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset(run.data, run.samples),
                          processing_class=s_proc, callbacks=[StepLog()], optimizers=_optimizer(student, run))
    _no_special_samples(trainer, s_proc.tokenizer)
    trainer.remove_callback(PrinterCallback)  # our StepLog keeps the log; no dict per step on stdout
    trainer.train()
    trainer.model.save_pretrained(out / "student")
    s_proc.save_pretrained(out / "student")
    return out / "student"
