"""The errors a user can cause, each carrying what it is about."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_STEP_FAILED = 1
EXIT_USAGE = 2


class StacksError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code: int = EXIT_STEP_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(StacksError):
    """Bad command-line usage."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where it is, what is wrong, how to fix it."""

    file: str
    layer: str | None
    field: str | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.layer:
            where += f": layer '{self.layer}'"
        if self.field:
            where += f", field '{self.field}'"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class SpecError(StacksError):
    """A stack spec with one or more problems, all reported together."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"invalid stack spec ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class LockError(StacksError):
    """A layer could not be locked."""


class RuntimeFetchError(StacksError):
    """A runtime could not be found, downloaded, verified or unpacked."""


class BuildError(StacksError):
    """A layer environment could not be built or failed its smoke check."""


class PublishError(StacksError):
    """A layer could not be archived or exported."""


class BusyError(StacksError):
    """Another stacks run holds the project lock."""


class DiskError(StacksError):
    """A file could not be read or written (full disk, read-only or unwritable folder)."""

    @classmethod
    def from_os_error(cls, exc: OSError, doing: str | None = None) -> DiskError:
        """Describe an OSError as what failed, on which path, and what usually fixes it."""
        import errno

        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        reason = exc.strerror or str(exc)
        message = f"{doing + ': ' if doing else ''}{reason}" + (f": {paths}" if paths else "")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "free some space on that disk (or point the folder elsewhere) and run again"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "make the folder writable (or choose another one) and run again"
        else:
            hint = "check the folder and run again; finished outputs were left as they were"
        return cls(message, hint=hint)
