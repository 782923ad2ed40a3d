"""The regime of `genrecal-bench quality`: model pair, data sizes and budgets (`Plan`), its full and quick
presets, and the GenRecal variants investigated beside the compared methods.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    """The regime. Budgets are optimizer steps of `batch_size` samples."""

    teacher_family: str = "llava"
    teacher_size: str = "base"
    student_family: str = "qwen2_vl"
    student_size: str = "tiny"
    teacher_vision_steps: int = 1500
    """Batches of 64 labelled renders that pretrain the teacher's vision encoder + projector before its VLM
    training (genrecal.experiments.vision_pretrain): the stand-in for a pretrained CLIP tower."""
    teacher_images: int = 12000
    """Rendered easy-vqa-style images for the teacher (easy-vqa itself has 4,000)."""
    teacher_questions_per_image: int = 4
    teacher_question_mix: tuple[tuple[str, float], ...] = (("yes_no", 0.4), ("shape", 0.3), ("color", 0.3))
    """Question kinds in the teacher's data. easy-vqa's own mix is 74% yes/no, which a model answers at
    77% from the question alone; more open questions make the teacher learn to look sooner."""
    teacher_steps: int = 2000
    student_vision_steps: int = 600
    """The same for the student, shorter: a smaller encoder that sees colour well and shape less well."""
    pretrain_images: int = 1000
    """easy-vqa train images for the student's pretraining (disjoint from the budget's)."""
    pretrain_steps: int = 150
    budget_images: int = 3000
    """easy-vqa train images the compared methods draw their samples from."""
    budget_samples: int = 4800
    """Distinct (image, question) samples in the budget (the first N of a seeded shuffle)."""
    budget_steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    """From-scratch tiny models; the paper's 1e-4 -> 1e-5 is for pretrained billion-size VLMs."""
    min_lr: float = 1e-4
    test_questions: int = 2000
    """First N questions of easy-vqa's test split after a shuffle seeded 0."""
    data_seed: int = 0
    student_parts: tuple[str, ...] | None = None
    """Student parts every method trains in the budget (sft_train, and GenRecal's distill_train); None: the
    DistillConfig defaults (the paper's: vision tower frozen throughout, stage 2 trains layers + norm)."""


FULL = Plan()
QUICK = replace(FULL, teacher_vision_steps=600, student_vision_steps=300, teacher_images=4000, teacher_steps=400,
                budget_samples=1600, budget_steps=100, test_questions=500)

# GenRecal knobs investigated when the target does not hold (DistillConfig overrides; defaults in
# docs/method.md). `distill-trains-sft-parts` gives stage 2 the student parts SFT trains
# throughout; `teacher-only-in-distill` also drops L_sft from stage 2, to see what the teacher's signal alone
# teaches the student.
VARIANTS = {
    "recal-random-init": {"recal_init": "random"},
    "recal-frozen-in-distill": {"recal_train_in_distill": False},
    "no-reg-in-distill": {"reg_in_distill": False},
    "split-10-80-10": {"stage_split": (0.1, 0.8, 0.1)},
    "split-10-45-45": {"stage_split": (0.1, 0.45, 0.45)},
    "distill-trains-sft-parts": {"distill_train": ("layers", "norm", "embed", "head", "projector")},
    # a diagnostic, not a method: stage 2 learns from the teacher through the Recalibrator ONLY (no L_sft)
    "teacher-only-in-distill": {"distill_train": ("layers", "norm", "embed", "head", "projector"),
                                "sft_in_distill": False},
}
