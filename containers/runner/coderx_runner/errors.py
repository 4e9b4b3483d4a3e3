"""Errors reported to the host as data: the ``type`` names are part of the protocol."""

from __future__ import annotations

from typing import Any


class RunnerError(Exception):
    """An error reported to the host as data; ``kind`` is the protocol type name."""

    kind = "RunnerError"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def _err(kind: str) -> type[RunnerError]:
    return type(kind, (RunnerError,), {"kind": kind})


NotFound = _err("NotFound")
OutsideWorkspace = _err("OutsideWorkspace")
NotRegularFile = _err("NotRegularFile")
FileTooLarge = _err("FileTooLarge")
StaleFile = _err("StaleFile")
FileExists_ = _err("FileExists")
ProtectedPath = _err("ProtectedPath")
UnknownProcess = _err("UnknownProcess")
BadRequest = _err("BadRequest")
