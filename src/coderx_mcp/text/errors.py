"""Errors raised by the pure text core.

Every error is a ``ValueError`` subclass so callers that only know about
``ValueError`` still treat them as bad input. The tool layer maps each class to
an MCP error; the message is written for the agent: what failed, why, and what
to do next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class TextError(ValueError):
    """Base class for all text-core errors.

    Attributes:
        message: The human-readable message (also ``str(err)``).
        edit_index: 1-based index of the failing edit inside a multi-edit, or
            None when the error did not come from a multi-edit.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.edit_index: int | None = None

    def __str__(self) -> str:
        return self.message

    def for_edit(self, index: int, total: int) -> Self:
        """Return a copy of this error that names the failing edit of a multi-edit.

        The copy keeps the class and every attribute (count, line numbers, ...)
        so the tool layer can map it exactly like the original.

        Args:
            index: 1-based index of the failing edit.
            total: Number of edits in the request.

        Returns:
            A new error of the same class with a prefixed message.
        """
        # Built by hand: subclasses have richer __init__ signatures, so
        # copy.copy (which calls cls(*args)) would not work for all of them.
        clone = self.__class__.__new__(self.__class__)
        clone.__dict__.update(self.__dict__)
        # Later edits see the text as changed by the earlier ones; say so, or
        # line numbers in the message would look wrong against the file.
        where = f" (line numbers refer to the text after edits 1-{index - 1})" if index > 1 else ""
        clone.message = (
            f"Edit {index} of {total} failed, so none of the {total} edits were "
            f"applied{where}: {self.message}"
        )
        clone.args = (clone.message,)
        clone.edit_index = index
        return clone


class BinaryFileError(TextError):
    """The bytes look like a binary file (magic number, NUL bytes, control bytes)."""


class UnsupportedEncodingError(TextError):
    """The bytes use an encoding we cannot decode or write back byte-exactly."""


class EditNotFoundError(TextError):
    """``old_string`` does not occur in the file (message carries diagnostics)."""


class AmbiguousEditError(TextError):
    """``old_string`` occurs more than once and ``replace_all`` was not set.

    Attributes:
        count: Number of non-overlapping occurrences.
        lines: 1-based start line of each occurrence (at most the first 20).
    """

    def __init__(self, message: str, count: int, lines: Sequence[int]) -> None:
        super().__init__(message)
        self.count = count
        self.lines: tuple[int, ...] = tuple(lines)


class NoOpEditError(TextError):
    """``old_string`` equals ``new_string``, so the edit would change nothing."""


class ReadArtifactError(TextError):
    """Content to write contains read_file line-number prefixes or truncation markers."""
