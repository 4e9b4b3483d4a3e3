"""Delegated agents (``agent_run`` and friends): a coderx-agent loop per run, on its own
worktree session, reaching this server's tools over an in-memory MCP client."""
