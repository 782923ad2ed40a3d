"""Resolving image paths under a root and verifying each image file once."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

from genrecal.data.errors import BAD_RECORD, CORRUPT_IMAGE, PATH_ESCAPE
from genrecal.data.records import RawRecord
from genrecal.images import ImageError, open_image


class ImageChecker:
    """Turns a record's image references into verified absolute paths.

    A reference written in the data must resolve (symlinks followed) inside `root`, so a
    dataset cannot make training read arbitrary files. With `allow_links` (a root the user named,
    e.g. `--image-root`), the check is on the path as written: symlinks inside the root may point
    anywhere (`coco -> /mnt/datasets/coco`), but `..` or an absolute path leaving it is refused.
    Each distinct file is opened and fully decoded once with `genrecal.images.open_image` (the
    rule training and serving share); the verdict is cached for the rest of the load.
    """

    def __init__(self, root: str | Path, allow_links: bool = False):
        self.root = Path(root).resolve()
        self.allow_links = allow_links
        # path -> None if fine, else (reason, problem text with a "{ref}" slot)
        self._verdicts: dict[Path, tuple[str, str] | None] = {}

    def resolve(self, rec: RawRecord) -> list[Path]:
        """The record's images as absolute resolved paths, or raise the first `DataError`."""
        return [self._resolve_one(rec, ref) for ref in rec.images]

    def _resolve_one(self, rec: RawRecord, ref: str | Path) -> Path:
        if isinstance(ref, Path):  # written by genrecal itself (HF image cache): trusted
            path = ref.resolve()
        else:
            path = self._inside_root(rec, ref)
        if path not in self._verdicts:
            self._verdicts[path] = _verify(path)
        verdict = self._verdicts[path]
        if verdict is not None:
            reason, problem = verdict
            raise rec.error(reason, problem.replace("{ref}", repr(str(ref))))
        return path

    def _inside_root(self, rec: RawRecord, ref: str) -> Path:
        if not ref.strip():
            raise rec.error(BAD_RECORD, "empty image path")
        written = Path(os.path.normpath(self.root / ref))  # an absolute `ref` replaces the root here
        path = written.resolve()
        if not (written if self.allow_links else path).is_relative_to(self.root):
            raise rec.error(PATH_ESCAPE, f"image path {ref!r} resolves outside {str(self.root)!r}")
        return path


def _verify(path: Path) -> tuple[str, str] | None:
    """None if `path` is an image `open_image` accepts, else (reason, problem with a "{ref}" slot)."""
    try:
        open_image(path)
    except ImageError as err:
        return err.reason, ("missing image file {ref}" if not path.is_file() else f"image {{ref}}: {err}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd-but-readable files
            # verify() checks chunk CRCs and truncation even if ImageFile.LOAD_TRUNCATED_IMAGES
            # is set globally, which a plain decode would let through.
            with Image.open(path) as image:
                image.verify()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return CORRUPT_IMAGE, f"unreadable image {{ref}} ({type(exc).__name__}: {exc})"
    return None
