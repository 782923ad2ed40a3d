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


def check_family(family: str) -> None:
    from genrecal.export.edgellm.routing import fallback_line, takes_vision

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
