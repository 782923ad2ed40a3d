"""Render every sample once for the student (and the teacher), with bad-input handling."""
from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from genrecal.data.render import Encoded, collate, load_images, render
from genrecal.data.samples import DataError, Sample, SkipReport


@dataclass
class Pair:
    sample: Sample
    student: Encoded
    teacher: Encoded | None


def encode_pairs(samples: list[Sample], student, teacher, max_length: int, on_bad: str, report: SkipReport,
                 progress: bool = True) -> list[Pair]:
    """student/teacher are LoadedVLM (teacher may be None). Bad samples raise or are counted."""
    pairs = []
    for sample in tqdm(samples, desc="render", disable=not progress, leave=False):
        try:
            images = load_images(sample)
            s = render(student.processor, sample, images, max_length, student.image_token_id)
            t = None if teacher is None else render(teacher.processor, sample, images, max_length,
                                                     teacher.image_token_id)
        except DataError as err:
            if on_bad == "error":
                raise
            report.add(err)
            continue
        pairs.append(Pair(sample, s, t))
    return pairs


def batch_of(pairs: list[Pair], indices: list[int], student_pad: int, teacher_pad: int | None):
    s = collate([pairs[i].student for i in indices], student_pad)
    t = None if teacher_pad is None else collate([pairs[i].teacher for i in indices], teacher_pad)
    return s, t
