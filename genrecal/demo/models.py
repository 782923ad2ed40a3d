"""The demo's models: the teacher, and the student as any of its artifacts (HF dir, ONNX, GGUF).

    models = Models.open("genrecal-out/teacher", "genrecal-out/student-genrecal")
    models.student_choices()   # [(label, path), ...]: the HF student + every export artifact found
    models.student(path)       # loaded on first use, then kept

Student artifacts are found next to the student: a `--student` that is an export root lists its
artifacts; an HF student dir also offers the artifacts under `<dir>/export/` and `<parent>/export/`
(the quickstart writes OUT/student-genrecal and OUT/export/...). Every runtime goes through
`genrecal.runtimes.load`, which verifies export checksums before loading. --device/--dtype go to
every model the torch runtime runs (the teacher, an HF student); exports keep their own runtime's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from genrecal import runtimes
from genrecal.errors import GenrecalError
from genrecal.artifacts.manifest import MANIFEST_NAME
from genrecal.runtimes import sysinfo
from genrecal.runtimes.base import Runtime


@dataclass
class Loaded:
    role: str  # "teacher" | "student"
    path: str
    runtime: Runtime
    load_s: float  # wall time of runtimes.load
    load_mb: float  # resident memory the load added to this process (MiB)

    @property
    def label(self) -> str:
        return f"{getattr(self.runtime, 'family', '?')} · {self.runtime.name} · {self.path}"

    @property
    def load_note(self) -> str:
        return f"loaded in {self.load_s:.1f} s, +{self.load_mb:,.0f} MiB"


def open_model(role: str, path: str | Path, runtime: str | None = None, threads: int | None = None,
               device: str | None = None, dtype: str | None = None) -> Loaded:
    """Load one artifact and record its load time and the resident memory it added. device/dtype
    apply when the torch runtime runs it (an HF dir) and are left out for exports."""
    _, default = runtimes.describe(path, verify=False)  # load() verifies the checksums
    placement = {"device": device, "dtype": dtype} if (runtime or default) == "torch" else {}
    before = sysinfo.current_rss_mb()
    t0 = time.perf_counter()
    rt = runtimes.load(path, runtime=runtime, threads=threads, **placement)
    return Loaded(role, str(path), rt, time.perf_counter() - t0, max(sysinfo.current_rss_mb() - before, 0.0))


def _artifacts_in(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file())


def student_artifacts(student: str | Path) -> list[Path]:
    """The student path (first) and the export artifacts found beside it, without duplicates."""
    student = Path(student)
    if not (student / MANIFEST_NAME).is_file() and not (student / "config.json").is_file():
        found = _artifacts_in(student)  # an export root: offer each of its artifacts
        return found or [student]  # nothing there: let runtimes.load say what is wrong
    found = [student]
    for root in (student / "export", student.parent / "export"):
        found += [p for p in _artifacts_in(root) if p.resolve() not in {f.resolve() for f in found}]
    return found


def artifact_label(path: Path) -> str:
    """'onnx int8 · onnx-int8' or 'hf (transformers) · student-genrecal' for the dropdown."""
    try:
        manifest, default = runtimes.describe(path, verify=False)  # cheap: checksums are checked on load
    except GenrecalError:
        return f"? · {path}"
    if manifest is None:
        return f"transformers ({default}) · {path}"
    return f"{manifest.format} {manifest.precision} ({default}) · {path}"


@dataclass
class Models:
    teacher: Loaded
    student_paths: list[Path]
    runtime: str | None = None  # --runtime: applies to the first student artifact (the --student path)
    threads: int | None = None
    device: str | None = None  # --device / --dtype: for every torch-run model (None: auto)
    dtype: str | None = None
    _students: dict[str, Loaded] = field(default_factory=dict)

    @classmethod
    def open(cls, teacher: str | Path, student: str | Path, runtime: str | None = None,
             threads: int | None = None, device: str | None = None, dtype: str | None = None) -> "Models":
        """Load the teacher and the first student artifact now, so a broken path fails at start-up."""
        models = cls(open_model("teacher", teacher, threads=threads, device=device, dtype=dtype),
                     student_artifacts(student), runtime, threads, device, dtype)
        models.student(str(models.student_paths[0]))
        return models

    def student_choices(self) -> list[tuple[str, str]]:
        return [(artifact_label(p), str(p)) for p in self.student_paths]

    @property
    def default_student(self) -> str:
        return str(self.student_paths[0])

    def student(self, path: str | None) -> Loaded:
        """The loaded student artifact at `path` (one of student_paths), loading it on first use."""
        path = path or self.default_student
        if path not in {str(p) for p in self.student_paths}:
            raise GenrecalError(f"unknown student artifact {path!r}; pick one from the list")
        if path not in self._students:
            runtime = self.runtime if path == self.default_student else None
            self._students[path] = open_model("student", path, runtime=runtime, threads=self.threads,
                                              device=self.device, dtype=self.dtype)
        return self._students[path]
