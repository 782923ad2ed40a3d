"""Child-process entry that runs llama.cpp's own convert_hf_to_gguf.py with one addition: a fallback
BPE pre-tokenizer name.

    python converter_run.py --src LLAMA_CPP_DIR --pre gpt-2 -- MODEL_DIR --outfile OUT.gguf [--mmproj]

The converter names a BPE tokenizer's pre-tokenizer by a sha256 of its token ids on a fixed text and
stops on a hash it does not know (every locally trained tokenizer). `--pre NAME` is used only then;
a known hash keeps the converter's own answer. Run as a file, not as part of genrecal: the converter
puts its own gguf-py first on sys.path, and nothing here may import another `gguf` before it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _patch_pre(pre: str) -> None:
    from conversion.base import TextModel

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:  # unknown hash: the name the caller derived from tokenizer.json
            return pre

    TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="llama.cpp source dir (convert_hf_to_gguf.py)")
    parser.add_argument("--pre", default=None, help="pre-tokenizer name used when the hash is unknown")
    idx = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:idx])
    sys.path[0] = str(args.src)  # instead of this file's dir, whose module names could shadow the converter's
    import convert_hf_to_gguf  # noqa: E402 - from --src, after the path is set

    if args.pre:
        _patch_pre(args.pre)
    sys.argv = [str(args.src / "convert_hf_to_gguf.py"), *argv[idx + 1:]]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
