"""Conversation samples: loading JSON / JSONL / saved HF datasets in the LLaVA, HF chat, TRL
prompt-completion and SmolVLM texts layouts, validation, rendering, easy-vqa.

A leaf package: of genrecal it imports only shared modules (`genrecal.images`, `genrecal.fsutil`).
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
