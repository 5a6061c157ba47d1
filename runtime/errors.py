"""Exceptions of ticor, one module so every layer raises and catches the same classes."""

from __future__ import annotations


class TicorError(Exception):
    """Base class of ticor's own errors."""


class UsageError(TicorError):
    """Bad arguments or input found after parsing: exit code 2, nothing written."""


class MissingDependencyError(TicorError, RuntimeError):
    """An optional dependency is missing or installed wrongly; the message says what to run."""
