"""Coder-X in-container runner: one long-lived process per sandbox.

Speaks newline-delimited JSON over stdin/stdout with the host. Every request is
``{"id": N, "op": "...", ...}`` and gets exactly one reply
``{"id": N, "ok": true, "result": {...}}`` or
``{"id": N, "ok": false, "error": {"type": "...", "message": "..."}}``.
Requests run concurrently; replies are matched by id. The runner never writes
anything else to stdout (it is the protocol stream); diagnostics go to stderr.

Stdlib only: it runs on whatever python3 the sandbox image has (3.11+).
The error ``type`` names are part of the protocol: the host re-raises them as
its own exception classes (see ``coderx_mcp.sandbox.protocol``).

Run as ``python3 -m coderx_runner`` with the directory holding this package as the
working directory (``/opt/coderx`` in the image). Every path resolves against
``CODERX_ROOT`` (the workspace) or ``CODERX_STATE`` (spools and shell state), never
against the working directory. Modules: ``errors`` (the protocol's error types),
``files`` (workspace paths and the file ops), ``shell`` (the session's shell state and
the waiting bashes), ``procs`` (the process table and the output spools), ``runner``
(the request dispatcher) and ``__main__`` (the stdin loop).
"""

PROTOCOL_VERSION = 1
