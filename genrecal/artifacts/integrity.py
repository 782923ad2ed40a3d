"""Files that cannot lie: safetensors checked before a library reads them, full disks named as such.

    check_safetensors_dir(Path("runs/x/student"), "student")   # CorruptFileError naming the file
    with disk_full_guard(out, "checkpoint step-0000004"):       # ENOSPC -> DiskFullError, one line
        save_file(...)

Imports nothing heavy (no torch, no safetensors), so runtimes on a device bundle can use it. See
docs/robustness.md for what the user sees.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genrecal.errors import GenrecalError

# bytes per element of every safetensors dtype (the format's own list)
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
             "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8, "F4": 0.5,
             "F6_E2M3": 0.75, "F6_E3M2": 0.75}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NO_SPACE_TEXT = ("No space left on device", "[Errno 28]", "Disk quota exceeded")
# what torch.save / safetensors say when a write came up short (torch: "unexpected pos N vs M")
_SHORT_WRITE_TEXT = ("unexpected pos", "file write failed", "failed writing file")
LOW_SPACE = 256 * 2**20  # a short write with less than this free is taken for a full disk


class CorruptFileError(GenrecalError):
    """A model, checkpoint or artifact file that is truncated or is not what its name says."""


class DiskFullError(GenrecalError):
    """A write that failed because the filesystem (or the user's quota) is full."""


def check_safetensors(path: str | os.PathLike) -> None:
    """Read only the header of a .safetensors file and check that it describes the file: a valid
    JSON header, every tensor's byte range inside the file and of its shape's size, and the data
    covering the file exactly. Raises CorruptFileError naming the file."""
    path = Path(path)
    size = path.stat().st_size

    def bad(why: str) -> CorruptFileError:
        return CorruptFileError(f"{path} is not a valid safetensors file ({why}): it is truncated or damaged; "
                                "re-download or re-save it")

    if size < 8:
        raise bad(f"{size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise bad(f"its header claims {n} bytes, the file has {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in info["data_offsets"])
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            want = count * _ITEMSIZE.get(info["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has no valid dtype, shape and data_offsets") from None
        if not 0 <= begin <= stop or (info["dtype"] in _ITEMSIZE and stop - begin != int(want)):
            raise bad(f"tensor {name!r} spans bytes {begin}..{stop}, not its shape's size")
        end = max(end, stop)
    if end != data:
        raise bad(f"its tensors need {end} bytes of data, the file holds {data}")


def check_safetensors_dir(root: str | os.PathLike, what: str = "model") -> None:
    """check_safetensors for every *.safetensors directly in `root` (a transformers model dir, a
    checkpoint); a missing dir is left to the loader's own message."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return
    for path in sorted(root.glob("*.safetensors")):
        try:
            check_safetensors(path)
        except CorruptFileError as exc:
            raise CorruptFileError(f"the {what}'s weights: {exc}") from None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def free_bytes(where: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the filesystem of `where` (its nearest existing parent)."""
    path = Path(where).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, where: str | os.PathLike) -> bool:
    """True when `exc` (or what caused it) is a full disk: ENOSPC/EDQUOT, their text, or a short write
    (torch.save's "unexpected pos") with almost nothing free at `where`."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        text = str(e)
        if any(t in text for t in _NO_SPACE_TEXT):
            return True
        if any(t in text for t in _SHORT_WRITE_TEXT):
            free = free_bytes(where)
            return free is not None and free < LOW_SPACE
    return False


@contextmanager
def disk_full_guard(where: str | os.PathLike, what: str, hint: str = "free some space and run it again"):
    """Turn a full disk while writing `what` under `where` into one DiskFullError line (other errors
    pass through unchanged). Put it inside an atomic_dir block, so the free space is read before the
    partial files are removed."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:  # noqa: BLE001 - only a full disk is translated; everything else re-raised
        if not is_disk_full(exc, where):
            raise
        free = free_bytes(where)
        left = "" if free is None else f", {free / 2**20:.1f} MiB free there"
        raise DiskFullError(f"disk full: writing {what} to {where} failed (no space left on device{left}); "
                            f"{hint}") from None
