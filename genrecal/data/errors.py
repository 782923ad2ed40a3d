"""Why a data record was rejected: `DataError` for one record, `SkipReport` for a whole load."""

from __future__ import annotations

from collections import Counter

from genrecal.errors import GenrecalError
# The image reasons are genrecal.images' own (the one image-opening rule).
from genrecal.images import CORRUPT_IMAGE, IMAGE_SIZE, MISSING_IMAGE

# Reason slugs. Record- and sample-level ones can be skipped with on_bad="skip"; file-level
# ones (missing_file, bad_file) always raise because nothing in the file can be trusted.
EMPTY_ANSWER = "empty_answer"
NO_IMAGE = "no_image"
TOO_LONG = "too_long"
PATH_ESCAPE = "path_escape"
BAD_RECORD = "bad_record"
NO_SYSTEM_ROLE = "no_system_role"  # the model's chat template drops or refuses a system turn
NO_ANSWER_SPAN = "no_answer_span"
NO_IMAGE_TOKEN = "no_image_token"
PROCESSOR_ERROR = "processor_error"  # the model's processor refused the rendered sample
MISSING_FILE = "missing_file"
BAD_FILE = "bad_file"

SKIPPABLE_REASONS = (
    CORRUPT_IMAGE, MISSING_IMAGE, IMAGE_SIZE, EMPTY_ANSWER, NO_IMAGE, TOO_LONG, PATH_ESCAPE, BAD_RECORD,
    NO_SYSTEM_ROLE, NO_ANSWER_SPAN, NO_IMAGE_TOKEN, PROCESSOR_ERROR,
)


class DataError(GenrecalError):
    """One bad data record (or a bad data file when `index` is None).

    `reason` is a short slug (see the constants above) that `SkipReport` counts; `detail` is
    the human-readable part. `turn` is set when only one assistant turn of a record is bad.
    """

    def __init__(self, source: str, index: int | None, reason: str, detail: str,
                 turn: int | None = None):
        # Passing every field to Exception keeps the error picklable (DataLoader workers).
        super().__init__(source, index, reason, detail, turn)
        self.source = str(source)
        self.index = index
        self.reason = reason
        self.detail = detail
        self.turn = turn

    def where(self) -> str:
        """`file record 12 turn 1`, or just `file` for file-level errors."""
        text = self.source
        if self.index is not None:
            text += f" record {self.index}"
        if self.turn is not None:
            text += f" turn {self.turn}"
        return text

    def __str__(self) -> str:
        return f"{self.where()}: {self.detail} ({self.reason})"


class SkipReport:
    """Counts of skipped records/samples per reason, with a few examples of each.

    Record-level problems (a bad image, a malformed record) count once per record; sample-level
    ones (empty_answer, too_long) count once per assistant turn.
    """

    def __init__(self, max_examples: int = 3):
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, err: DataError) -> None:
        self.counts[err.reason] += 1
        examples = self.examples.setdefault(err.reason, [])
        if len(examples) < self.max_examples:
            examples.append(str(err))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        """JSON-ready: `{"total": n, "counts": {reason: n}, "examples": {reason: [str, ...]}}`."""
        return {
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "examples": {reason: list(ex) for reason, ex in sorted(self.examples.items())},
        }

    def summary(self) -> str:
        """One line, e.g. `skipped 3 (missing_image 2, empty_answer 1)`."""
        if not self.total:
            return "skipped 0"
        parts = ", ".join(f"{reason} {n}" for reason, n in self.counts.most_common())
        return f"skipped {self.total} ({parts})"

    def __repr__(self) -> str:
        return f"SkipReport({self.summary()})"
