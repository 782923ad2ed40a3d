"""The regime of `genrecal-bench quality-v4`: pre-registered criteria and gate (`CRITERIA`), task, models and
budgets (`V4Plan`), the full and quick presets. benchmarks/results/quality_v4_criteria.md says why each is so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

CRITERIA = {
    "sft_over_prior": 0.10,
    "start_in_kind": 0.95,
    "start_near_prior": 0.10,
    "teacher_min": 0.80,
    "teacher_over_sft": 0.10,
    "teachers_within": 0.05,
    "kind_over_prior": 0.10,
    "gate_margin": 0.03,
}
"""Pre-registered (before any method run): budget SFT >= prior + 10 points; the start student answers in kind
>= 95 % and within 10 points of the prior; each teacher >= 80 % held-out and >= 10 points above budget SFT, the
two teachers within 5 points of each other; a question kind stays only where the teacher beats its prior by >= 10
points; the gate: KD - SFT >= 3 points (mean of the seeds) with every KD seed above every SFT seed."""

KIND_WEIGHTS = {"count": 1.0, "color": 1.0, "shape": 1.0, "size": 1.0}
"""Question kinds asked (genrecal.data.scenes): relation and describe are dropped, every model of v3 answered
them at chance (quality_v4_criteria.md)."""


@dataclass(frozen=True)
class V4Plan:
    """Task, models and budgets (optimizer steps of `batch_size` samples); see quality_v4_criteria.md."""

    student_family: str = "qwen2_vl"
    student_size: str = "deep8"
    vision_steps: int = 2000
    vision_lr: float = 3e-3
    vision_warmup: int = 100
    """One vision pretraining (v3's schedule, every probe >= 85 %); the teacher's tower starts as a copy."""
    teacher_hidden: int = 128
    teacher_layers: int = 8
    """The same-tokenizer teacher: the student's architecture with a 2x wider text model (4x its parameters)."""
    teacher_images: int = 8000
    teacher_steps: int = 1500
    pretrain_images: int = 600
    pretrain_steps: int = 100
    pretrain_shuffled: bool = False
    """Pretrain the start on its scenes with the images shuffled across questions: it learns the answers' form
    and the prior, not to look (criteria 3 and 4)."""
    b1_images: int = 300
    b1_epochs: int = 10
    b2_images: int = 3000
    """B2: B1's labelled images plus this many other images whose prompts the teacher answers (unlabelled)."""
    objects: tuple[int, int] = (2, 3)
    questions_per_image: int = 3
    test_images: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-4
    temperature: float = 1.0
    """KD's softmax temperature (a regime knob of the gate)."""
    max_new_tokens: int = 16
    data_seed: int = 0

    def __post_init__(self):
        lo, hi = self.objects
        if not 1 <= lo <= hi <= 5:
            raise ValueError(f"objects wants 1 <= least <= most <= 5, got {self.objects}")
        if self.b1_images < 1 or self.b1_epochs < 1:
            raise ValueError("b1_images and b1_epochs must be >= 1")

    @property
    def budget_steps(self) -> int:
        """Optimizer steps of every method in both budgets: B1's labels for `b1_epochs` epochs."""
        return math.ceil(self.b1_images * self.questions_per_image * self.b1_epochs / self.batch_size)

    def data_recipe(self, name: str) -> dict:
        """What decides data set `name`'s content (its cache key part)."""
        images = {"teacher": self.teacher_images, "pretrain": self.pretrain_images, "b1": self.b1_images,
                  "b2-prompts": self.b2_images, "test": self.test_images}[name]
        shuffled = {"shuffled": True} if name == "pretrain" and self.pretrain_shuffled else {}
        return {"name": name, "images": images, "objects": list(self.objects), "kinds": KIND_WEIGHTS,
                "questions_per_image": self.questions_per_image, "data_seed": self.data_seed, **shuffled}

    def to_dict(self) -> dict:
        return {**asdict(self), "objects": list(self.objects), "budget_steps": self.budget_steps}


FULL = V4Plan()
QUICK = replace(FULL, vision_steps=15, vision_warmup=2, teacher_images=120, teacher_steps=24, pretrain_images=30,
                pretrain_steps=6, b1_images=20, b1_epochs=2, b2_images=20, test_images=10, batch_size=8,
                teacher_hidden=128, teacher_layers=2)
"""A smoke run of every step (minutes): its numbers say nothing about the methods."""
