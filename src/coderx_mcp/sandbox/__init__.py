"""Sandbox backends: where a session's commands and file operations run.

``base.Sandbox`` is the seam; ``docker.DockerSandbox`` (isolated, the default) and
``local.LocalSandbox`` (no isolation, development only) sit behind it, chosen by name in
:func:`coderx_mcp.sandbox.factory.sandbox_factory`.
"""
