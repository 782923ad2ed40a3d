"""Child-process entry that runs llama.cpp's legacy convert_image_encoder_to_gguf.py under transformers 5.

    python llava_legacy_run.py SCRIPT -- -m VISION_DIR --llava-projector P --clip-model-is-vision ...

The script was written for transformers 4, where `CLIPVisionModel` holds the tower as `.vision_model`:
it pops encoder layers through `model.vision_model.encoder.layers` and maps state-dict names that
start with `vision_model.` to llama.cpp's `v.*` (skipping `vision_model.post_layernorm.*`). In
transformers 5 `CLIPVisionModel` is the tower itself, so the script would fail, or with names patched
elsewhere write unprefixed tensors and keep the post-layernorm. The one addition here: `from_pretrained`
returns the model wrapped so it again sits at `.vision_model`. Nothing else of the script changes.
Run as a file with PYTHONPATH = the sdist's gguf-py (the script does `from gguf import *`).
"""
from __future__ import annotations

import runpy
import sys


def _wrap_clip_vision_model() -> None:
    import torch
    from transformers import CLIPVisionModel

    class Transformers4Layout(torch.nn.Module):
        def __init__(self, tower):
            super().__init__()
            self.vision_model = tower  # state_dict names: vision_model.embeddings..., as in transformers 4

    original = CLIPVisionModel.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        return model if hasattr(model, "vision_model") else Transformers4Layout(model)

    CLIPVisionModel.from_pretrained = classmethod(from_pretrained)


def main(argv: list[str]) -> None:
    script, args = argv[0], argv[argv.index("--") + 1:]
    _wrap_clip_vision_model()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
