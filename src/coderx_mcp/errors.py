"""The one exception tree of Coder-X MCP.

::

    CoderxError
    ├── ConfigError(CoderxError, ValueError)
    │   └── WorkspaceRefused(ConfigError, PermissionError)   outside the roots, unusable uid
    ├── GitError                 a host-side git operation of a session failed
    ├── SessionError
    │   ├── SessionNotFound(SessionError, LookupError)
    │   │   └── SessionExpired       closed for idleness: says when, why and what was reset
    │   └── SessionLimitReached(SessionError)
    ├── SandboxError
    │   ├── SandboxUnavailable       Docker engine or image missing, container start failed
    │   ├── SandboxGone              container or runner died; the session restarts on next use
    │   ├── RunnerProtocolError      the runner spoke out of turn or an incompatible version
    │   └── (raised from the runner, by its protocol ``type``)
    │       ├── PathNotFound(SandboxError, FileNotFoundError)
    │       ├── OutsideWorkspace(SandboxError, PermissionError)
    │       ├── ProtectedPath(SandboxError, PermissionError)
    │       ├── NotRegularFile(SandboxError, IsADirectoryError)
    │       ├── FileTooLarge(SandboxError)
    │       ├── StaleFile(SandboxError)           carries ``current`` hash
    │       ├── FileAlreadyExists(SandboxError, FileExistsError)
    │       ├── UnknownProcess(SandboxError, LookupError)
    │       ├── BadRequest(SandboxError, ValueError)
    │       └── RemoteOSError(SandboxError, OSError)
    ├── ToolInputError(CoderxError, ValueError)   a tool's own argument check failed
    └── KeyStoreError                             the encrypted key store (keystore.py)
        ├── KeyStoreLocked                        no passphrase given
        ├── WrongPassphrase                       the passphrase does not open the store
        ├── KeyStoreCorrupt                       tampered, truncated or not a key store
        └── KeyNotFound(KeyStoreError, LookupError)
    DelegateError                                 a delegated agent run (agent_run …)
    ├── RunNotFound(DelegateError, LookupError)
    └── RunLimitReached(DelegateError)            the principal's runs are all working

Runner errors travel as data (``{"type": ..., "message": ...}``) and are re-raised here by
type in :func:`error_from_runner`. Domain errors become MCP tool errors in exactly one
place (``coderx_mcp.server.errors``); anything else is masked there.
"""

from __future__ import annotations

from typing import Any


class CoderxError(Exception):
    """Base of every error this package raises on purpose; the message is user-facing."""


class ConfigError(CoderxError, ValueError):
    """Settings or command-line options are invalid."""


class WorkspaceRefused(ConfigError, PermissionError):
    """A workspace is outside the allowed roots, a system or server directory, or cannot be
    used by the sandbox's uid; the message names the allowed roots or the fix."""


class GitError(CoderxError):
    """A host-side git operation of a session (worktree, diff, commit) failed."""


class SessionError(CoderxError):
    """A session could not be found, opened or used."""


class SessionNotFound(SessionError, LookupError):
    """No open session has that id (or it belongs to someone else)."""


class SessionExpired(SessionNotFound):
    """The session was closed after being idle; the message says when and what was lost."""


class SessionLimitReached(SessionError):
    """The server already runs its maximum number of sessions."""


class SandboxError(CoderxError):
    """Something failed inside or around a sandbox."""


class SandboxUnavailable(SandboxError):
    """The sandbox cannot be started: no Docker engine, no image, or a start failure."""


class SandboxGone(SandboxError):
    """The container or its runner died; ``reason`` says why when it is known."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class RunnerProtocolError(SandboxError):
    """The runner answered something the host cannot understand."""


class PathNotFound(SandboxError, FileNotFoundError):
    """The path does not exist in the workspace."""


class OutsideWorkspace(SandboxError, PermissionError):
    """The path resolves outside the session's workspace."""


class ProtectedPath(SandboxError, PermissionError):
    """The path is protected metadata (git hooks, git config, .coderx)."""


class NotRegularFile(SandboxError, IsADirectoryError):
    """A directory, FIFO, socket or device where a regular file was needed."""


class FileTooLarge(SandboxError):
    """The file is larger than the operation allows."""


class StaleFile(SandboxError):
    """The file changed since it was read; ``current`` is its hash now (None if deleted)."""

    def __init__(self, message: str, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current


class FileAlreadyExists(SandboxError, FileExistsError):
    """The file exists although the caller expected it not to."""


class UnknownProcess(SandboxError, LookupError):
    """No process or spooled output has that id in this session."""


class BadRequest(SandboxError, ValueError):
    """The runner refused a malformed request."""


class RemoteOSError(SandboxError, OSError):
    """An operating-system error inside the sandbox (permission denied, disk full, ...)."""


class RequestCancelled(SandboxError):
    """The runner cancelled the request on the host's demand."""


class ToolInputError(CoderxError, ValueError):
    """A tool argument passed schema validation but makes no sense (bad range, bad regex)."""


class KeyStoreError(CoderxError):
    """The key store could not be read, opened or written; the file is left as it was."""


class KeyStoreLocked(KeyStoreError):
    """No passphrase was given (``CODERX_KEY_PASSPHRASE`` or a prompt)."""


class WrongPassphrase(KeyStoreError):
    """The passphrase does not decrypt the key store."""


class KeyStoreCorrupt(KeyStoreError):
    """The file is not a key store this version can read (tampered, truncated, other)."""


class KeyNotFound(KeyStoreError, LookupError):
    """No key has that name."""


_BY_TYPE: dict[str, type[SandboxError]] = {
    "NotFound": PathNotFound,
    "OutsideWorkspace": OutsideWorkspace,
    "ProtectedPath": ProtectedPath,
    "NotRegularFile": NotRegularFile,
    "FileTooLarge": FileTooLarge,
    "FileExists": FileAlreadyExists,
    "UnknownProcess": UnknownProcess,
    "BadRequest": BadRequest,
    "OSError": RemoteOSError,
    "Cancelled": RequestCancelled,
}


def error_from_runner(error: dict[str, Any]) -> SandboxError:
    """Rebuild the host exception for an error the runner sent as data.

    Args:
        error: The ``error`` object of a runner reply.

    Returns:
        An instance of the matching exception class (``SandboxError`` for unknown types).
    """
    kind = str(error.get("type", "RunnerError"))
    message = str(error.get("message", "sandbox error"))
    details = error.get("details") or {}
    if kind == "StaleFile":
        return StaleFile(message, current=details.get("current"))
    return _BY_TYPE.get(kind, SandboxError)(message)


class DelegateError(CoderxError):
    """A delegated agent run cannot start or go on (model, key, host sampling, state)."""


class RunNotFound(DelegateError, LookupError):
    """No run with that id for this principal."""


class RunLimitReached(DelegateError):
    """The principal has ``max_runs_per_principal`` runs working already."""
