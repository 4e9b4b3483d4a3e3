"""Sandbox backends: where a session's commands and file operations run.

``base.Sandbox`` is the seam a session sees; ``backends.Backend`` makes sandboxes of one
kind, chosen by name in :data:`coderx_mcp.sandbox.backends.BACKENDS`: ``docker``
(hardened containers, the default), ``kubernetes`` (a hardened Pod per session) and
``local`` (no isolation, development only). Every sandbox runs one runner and talks to it
through a ``protocol.RunnerClient`` over a ``stream.RunnerStream``.
"""
