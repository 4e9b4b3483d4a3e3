"""The one place where errors become MCP tool errors.

Our own errors (``CoderxError``) carry a user-facing sentence and pass through. Argument
validation errors are rewritten to name the fields and the problem, never the rejected
value (it may be a secret, or 10 MB). Anything else is an internal error: logged with
its traceback on stderr and masked for the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import structlog
from fastmcp.exceptions import NotFoundError, ToolError
from pydantic import ValidationError

from coderx_mcp.errors import CoderxError
from coderx_mcp.text.errors import TextError

_log = structlog.get_logger("coderx.errors")
_MAX = 2000

# Arguments that were renamed so each name has one meaning (issue #8: ``offset`` is a line
# in read_file only): (tool, old name) -> what to say instead.
_RENAMED: Final[Mapping[tuple[str, str], str]] = MappingProxyType({
    ("grep", "offset"): "page with skip (entries to skip, next_skip of the last page)",
    ("glob", "offset"): "page with skip (entries to skip, next_skip of the last page)",
    ("read_output", "offset"): "use byte_offset (a byte position, next_offset of the last "
                               "page)",
})


def describe_validation(exc: ValidationError, tool: str | None = None) -> str:
    """Field-level summary of a pydantic error without the offending values.

    Args:
        exc: The validation error.
        tool: The tool called, to point from a renamed argument to its new name.
    """
    parts = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("call",)) or "arguments"
        kind = err.get("type", "")
        if kind == "unexpected_keyword_argument":
            msg = "is not an argument of this tool"
            if tool is not None and (tool, loc) in _RENAMED:
                msg += f"; {_RENAMED[tool, loc]}"
        elif kind == "missing_argument":
            msg = "is required"
        else:
            msg = str(err.get("msg", "is invalid"))
        parts.append(f"{loc}: {msg}")
    text = "invalid arguments: " + "; ".join(parts)
    return text[:_MAX]


def to_tool_error(exc: BaseException, tool: str) -> ToolError:
    """Translate any exception raised by a tool into the error the client sees."""
    if isinstance(exc, ToolError):
        return exc
    # Expected errors are answers, not faults: FastMCP logs them at INFO, not ERROR.
    if isinstance(exc, (CoderxError, TextError)):
        return ToolError(str(exc)[:_MAX], log_level=logging.INFO)
    if isinstance(exc, ValidationError):
        return ToolError(describe_validation(exc), log_level=logging.INFO)
    if isinstance(exc, NotFoundError):
        # FastMCP's answer to a tools/call of a name it does not have (PR-04): the caller's
        # mistake, answered as a tool error (the SDK's choice), not logged as our fault.
        return ToolError(f"unknown tool {tool[:100]!r}; tools/list shows the tools",
                         log_level=logging.INFO)
    _log.error("internal error in tool", tool=tool, error_type=type(exc).__name__,
               exc_info=exc)
    return ToolError(f"internal error in {tool} ({type(exc).__name__}); the server log has "
                     "the details")
