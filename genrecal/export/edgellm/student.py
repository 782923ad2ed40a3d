"""What the Edge-LLM export reads of the clean student: its family and its chat template.

    from genrecal.export.edgellm.student import check_family, chat_template, family_of
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal.artifacts import edgellm as layout
from genrecal.export.edgellm.env import EdgeLLMError


def family_of(hf_dir: Path) -> str:
    return json.loads((Path(hf_dir) / "config.json").read_text())["model_type"]


def takes_vision(family: str) -> bool:
    """Edge-LLM's exporter takes this family with its vision tower (the family record says so)."""
    from genrecal.families import get_family

    record = get_family(family, role="teacher")
    return bool(record and record.edgellm)


def no_vision_reason(family: str) -> str:
    from genrecal.families import get_family

    record = get_family(family, role="teacher")
    note = record.edgellm_note if record else ""
    return note or f"Edge-LLM {layout.VERSION} does not list {family!r} among its VLM families"


def fallback_line(family: str) -> str:
    return layout.fallback_line(family, no_vision_reason(family))


def check_family(family: str) -> None:
    if not takes_vision(family):
        raise EdgeLLMError(fallback_line(family))


def chat_template(hf_dir: Path) -> str | None:
    """The student's chat template: chat_template.jinja (transformers 5), else the one in
    processor_config.json / tokenizer_config.json / chat_template.json."""
    hf_dir = Path(hf_dir)
    if (hf_dir / layout.CHAT_TEMPLATE).is_file():
        return (hf_dir / layout.CHAT_TEMPLATE).read_text()
    for name in ("processor_config.json", "tokenizer_config.json", "chat_template.json"):
        path = hf_dir / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if isinstance(template, str) and template.strip():
                return template
    return None
