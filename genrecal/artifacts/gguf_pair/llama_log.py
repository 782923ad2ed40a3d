"""llama.cpp's log, captured: with verbose off nothing is printed, yet the error lines llama.cpp and
libmtmd log (llama-cpp-python's verbose=False otherwise hides them) go into genrecal's exceptions.

    with captured_log() as log:
        ctx = mtmd_init_from_file(...)
    if not ctx:
        raise RuntimeError_(f"libmtmd could not load it: {log.errors()}")
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import threading
from dataclasses import dataclass, field
from typing import Iterator

_ERROR_LEVELS = (2, 3)  # ggml_log_level WARN, ERROR
_CONT = 5  # GGML_LOG_LEVEL_CONT: continuation of the previous line


def missing_bindings(*modules: str) -> str:
    """'' when every module imports, else "X and Y not installed: pip install 'genrecal[gguf]'"."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed: pip install 'genrecal[gguf]'" if missing else ""


class _LogBuffer:
    def __init__(self):
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=400)
        self.verbose = 0
        self.lock = threading.Lock()
        self.installed = False


_LOG = _LogBuffer()


@dataclass
class _LogWindow:
    lines: list = field(default_factory=list)

    def errors(self) -> str:
        """WARN/ERROR lines logged inside the window, joined; '' when there were none."""
        picked = [text.strip() for level, text in self.lines if level in _ERROR_LEVELS and text.strip()]
        return " | ".join(picked[-6:])


def _install_log_callback() -> None:
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    @llama_cpp.llama_log_callback
    def callback(level, text, user_data):
        msg = text.decode("utf-8", errors="replace") if text else ""
        with _LOG.lock:
            if level == _CONT and _LOG.lines:
                prev_level, prev = _LOG.lines.pop()
                _LOG.lines.append((prev_level, prev + msg))
            else:
                _LOG.lines.append((level, msg))
        if _LOG.verbose:
            print(msg, end="", flush=True)

    _LOG.callback = callback  # keep the ctypes thunk alive for the life of the process
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    mtmd.mtmd_log_set(callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(callback, ctypes.c_void_p(0))
    _LOG.installed = True


@contextlib.contextmanager
def captured_log(verbose: bool = False) -> Iterator[_LogWindow]:
    """Collect llama.cpp / libmtmd log lines emitted inside the block (printed too when verbose)."""
    if not _LOG.installed:
        _install_log_callback()
    with _LOG.lock:
        _LOG.lines.clear()
    window = _LogWindow()
    _LOG.verbose += int(verbose)
    try:
        yield window
    finally:
        _LOG.verbose -= int(verbose)
        with _LOG.lock:
            window.lines = list(_LOG.lines)


