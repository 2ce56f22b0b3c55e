"""Domain exceptions whose messages a scientist can act on.

Every problem names the file, the field (or table row) it concerns, what was expected and what was found; a
warning names the file and field and says what the study's user should know.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a study description or its files."""

    file: str
    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{_where(self.file, self.field)}: expected {self.expected}; found {self.found}"


@dataclass(frozen=True)
class StudyWarning:
    """Something the study may have but its user should know (missing covariate values): it does not stop
    validation; ``msma validate`` prints it."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{_where(self.file, self.field)}: {self.message}"


def _where(file: str, field: str) -> str:
    return f"{file}: {field}" if field else file


class ManifestError(ValueError):
    """A manifest, or a file it names, does not describe a usable study.

    ``problems`` holds every problem; the message lists the first ``MAX_LISTED`` of them.
    """

    MAX_LISTED = 50

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} in the study description:"]
        lines += [f"  - {p}" for p in self.problems[: self.MAX_LISTED]]
        if n > self.MAX_LISTED:
            lines.append(f"  ... and {n - self.MAX_LISTED} more of the same kinds")
        super().__init__("\n".join(lines))
