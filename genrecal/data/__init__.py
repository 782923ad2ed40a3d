"""Conversation samples: loading LLaVA JSON / JSONL / HF datasets, validation, easy-vqa.

A leaf package: it imports nothing else from genrecal.
"""

from genrecal.data.easy_vqa import easy_vqa_answers, load_easy_vqa_questions, write_easy_vqa
from genrecal.data.errors import SKIPPABLE_REASONS, DataError, SkipReport
from genrecal.data.records import IMAGE_PLACEHOLDER
from genrecal.data.samples import Sample, load_samples

__all__ = [
    "IMAGE_PLACEHOLDER",
    "SKIPPABLE_REASONS",
    "DataError",
    "Sample",
    "SkipReport",
    "easy_vqa_answers",
    "load_easy_vqa_questions",
    "load_samples",
    "write_easy_vqa",
]
