"""Helpers shared by the sandbox tests."""

from typing import Any

from coderx_mcp.sessions import Session


async def sh(session: Session, command: str, timeout: float = 30, **kw: Any) -> dict[str, Any]:
    """Run one ``exec`` in the session."""
    return await session.call("exec", command=command, timeout=timeout, **kw)


def out(result: dict[str, Any]) -> str:
    """The stdout text of an ``exec`` result."""
    return str(result["stdout"]["text"])
