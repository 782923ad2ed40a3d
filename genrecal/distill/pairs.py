"""Render samples for the student (and the teacher), with bad-input handling.

Training renders lazily (`batches.py`); `usable_samples` renders every sample once beforehand to
find the bad ones without keeping any pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from genrecal.data.render import Encoded, load_images, render
from genrecal.data.samples import DataError, Sample, SkipReport
from genrecal.data.teacher_answers import render_teacher


@dataclass
class Pair:
    sample: Sample
    student: Encoded
    teacher: Encoded | None


def render_pair(sample: Sample, student, teacher, max_length: int) -> Pair:
    """One sample rendered by each model's own processor (teacher may be None); the teacher side from
    the sample's teacher answer ids when it has them. Raises DataError."""
    images = load_images(sample)
    s = render(student.processor, sample, images, max_length, student.image_token_id)
    t = None if teacher is None else render_teacher(teacher.processor, sample, images, max_length,
                                                    teacher.image_token_id)
    return Pair(sample, s, t)


def _good(samples, student, teacher, max_length, on_bad, report, progress):
    for sample in tqdm(samples, desc="render", disable=not progress, leave=False):
        try:
            yield render_pair(sample, student, teacher, max_length)
        except DataError as err:
            if on_bad == "error":
                raise
            report.add(err)


def encode_pairs(samples: list[Sample], student, teacher, max_length: int, on_bad: str, report: SkipReport,
                 progress: bool = True) -> list[Pair]:
    """Every good sample rendered and kept in memory (student/teacher are LoadedVLM; teacher may be None)."""
    return list(_good(samples, student, teacher, max_length, on_bad, report, progress))


def usable_samples(samples: list[Sample], student, teacher, max_length: int, on_bad: str, report: SkipReport,
                   progress: bool = True) -> list[Sample]:
    """The samples both models render (bad ones raise or are counted in `report`); the renders are dropped."""
    return [pair.sample for pair in _good(samples, student, teacher, max_length, on_bad, report, progress)]
