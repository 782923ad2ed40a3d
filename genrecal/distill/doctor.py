"""`genrecal-distill --dry-run`: what each model sees for the first sample, and what a run will cost.

Fails (DataError) if an answer span cannot be located or an image token is missing, before any
training starts.
"""
from __future__ import annotations

from genrecal.data.render import load_images, render
from genrecal.data.records import ANSWER_IDS_FIELD
from genrecal.data.samples import load_samples
from genrecal.data.teacher_answers import keep_matching_ids, render_teacher
from genrecal.distill.config import DistillConfig
from genrecal.distill.lengths import default_max_length
from genrecal.distill.models import LoadedVLM, load_vlm
from genrecal.distill.precision import TORCH_DTYPES
from genrecal.distill.launch import run_dtype
from genrecal.distill.stages import build_stage, set_trainable
from genrecal.families import base

BYTES = 4  # the student and the Recalibrator: fp32 master weights, grads and AdamW state


def _model_report(role: str, vlm: LoadedVLM, enc, max_length: int) -> list[str]:
    ids = enc.input_ids
    n_img = int((ids == vlm.image_token_id).sum()) if vlm.image_token_id is not None else 0
    span = vlm.tokenizer.decode(ids[enc.answer_start:enc.answer_end].tolist())
    fam = vlm.family.name if vlm.family else f"{vlm.model_type} (generic teacher path)"
    return [
        f"[{role}] {vlm.path}",
        f"  family: {fam}   class: {type(vlm.model).__name__}",
        f"  parameters: {vlm.num_parameters():,}   vocab: {len(vlm.tokenizer):,}",
        f"  image tokens for this sample: {n_img} (token id {vlm.image_token_id})",
        f"  sequence: {enc.length} tokens (question {enc.answer_start}, answer {enc.answer_end - enc.answer_start});"
        f" max_length {max_length}",
        f"  rendered prompt: {enc.prompt_text!r}",
        f"  answer span decodes to: {span!r}",
    ] + ([f"  pad token: {vlm.pad_note}"] if vlm.pad_note else [])


def memory_estimate(cfg: DistillConfig, student: LoadedVLM, teacher: LoadedVLM | None, seq_s: int,
                    seq_t: int, dtype: str = "fp32") -> list[str]:
    """Weights (student fp32, teacher in `dtype`) + grads + AdamW state for the largest stage + a
    rough activation figure (fp32)."""
    t_bytes = TORCH_DTYPES[dtype].itemsize
    weights = student.num_parameters() + (teacher.num_parameters() * t_bytes / BYTES if teacher else 0)
    trainable = 0
    for name in cfg.stage_names():
        stage = build_stage(name, cfg)
        n = sum(p.numel() for p in set_trainable(student.model, None, stage))
        if stage.train_recal and teacher is not None:
            d_s = student.model.config.get_text_config().hidden_size
            d_l = teacher.model.config.get_text_config().hidden_size
            block = base.attention_layers(student.family.text_model(student.model))[-1]  # what the Recalibrator copies
            n += 2 * d_s * d_l + cfg.recal_depth * sum(p.numel() for p in block.parameters())
        trainable = max(trainable, n)
    s_cfg = student.model.config.get_text_config()
    act = cfg.batch_size * (seq_s * s_cfg.hidden_size * s_cfg.num_hidden_layers * 16)
    if teacher is not None:
        t_cfg = teacher.model.config.get_text_config()
        act += cfg.batch_size * seq_t * t_cfg.hidden_size * 2 + cfg.head_chunk * t_cfg.vocab_size * 3
    total = (weights + 3 * trainable) * BYTES + act * BYTES
    gib = 1024 ** 3
    return [
        f"[memory estimate per process: student fp32, teacher {dtype}]",
        f"  weights {weights * BYTES / gib:.3f} GiB; trainable (largest stage) {trainable:,} params ->"
        f" grads + AdamW {3 * trainable * BYTES / gib:.3f} GiB; activations ~{act * BYTES / gib:.3f} GiB",
        f"  total ~{total / gib:.3f} GiB (head applied in chunks of {cfg.head_chunk} tokens)",
    ]


def doctor(cfg: DistillConfig) -> str:
    student = load_vlm(cfg.student, "student", cfg.trust_remote_code)
    teacher = load_vlm(cfg.teacher, "teacher", cfg.trust_remote_code) if cfg.teacher else None
    samples = load_samples(cfg.data, on_bad="error", require_image=cfg.require_image, image_root=cfg.image_root)
    if not samples:
        from genrecal.data.samples import DataError

        raise DataError(cfg.data, None, "bad_file", "no samples in the data")
    sample = samples[0]
    images = load_images(sample)
    lines = [f"data: {cfg.data} ({len(samples)} samples; first: record {sample.index} turn {sample.turn} of "
             f"{sample.source}, {len(images)} image(s))",
             f"method: {cfg.method}; stages: {', '.join(cfg.stage_names())}; steps {cfg.stage_steps()}"]
    max_length = cfg.max_length or default_max_length(student, teacher)
    s_enc = render(student.processor, sample, images, max_length, student.image_token_id)
    lines += _model_report("student", student, s_enc, max_length)
    t_enc = None
    if teacher is not None:
        (sample,), dropped = keep_matching_ids([sample], teacher.tokenizer)
        t_enc = render_teacher(teacher.processor, sample, images, max_length, teacher.image_token_id)
        lines += _model_report("teacher", teacher, t_enc, max_length)
        if samples[0].answer_ids is not None:
            lines.append(f"  answer from: the teacher's own {ANSWER_IDS_FIELD}" if not dropped else
                         f"  answer from: the text ({ANSWER_IDS_FIELD} do not decode to it with this teacher)")
    lines += memory_estimate(cfg, student, teacher, s_enc.length, t_enc.length if t_enc else 0, run_dtype(cfg))
    lines.append("dry run OK: answer spans located, image tokens present")
    return "\n".join(lines)
