"""Key tools: list the key store's names, grant keys to a session, and let the user add one.

No tool ever returns a value. A granted key becomes an environment variable of the
session's later commands (sent with each runner request, see :mod:`coderx_mcp.ops`) and
is redacted from everything the server sends out (:mod:`coderx_mcp.redact`).
"""

import asyncio
from pathlib import Path
from typing import Annotated, Any

import mcp.types as mt
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import ToolResult
from pydantic import BaseModel, Field

from coderx_mcp.context import app_of, current, session_ops
from coderx_mcp.errors import KeyNotFound, KeyStoreError, ToolInputError
from coderx_mcp.keystore import KeyInfo, KeyStore, check_name, open_store
from coderx_mcp.redact import MIN_SECRET
from coderx_mcp.tools.common import Out, SessionArg, modern_protocol, result, tool

CLI_HINT = "set it on the server's machine with `coderx-mcp keys set NAME`"

Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]], Field(
    description="Key names from keys_list.", min_length=1, max_length=50)]


class KeysOut(Out):
    """The key store's names and dates (never values)."""

    keys: list[KeyInfo]


class GrantOut(Out):
    """The keys now granted to the session."""

    changed: list[str] = Field(description="Names granted or revoked by this call.")
    granted: list[str] = Field(description="Every name granted to the session now.")


class KeySetOut(Out):
    """A key stored from the user's answer."""

    name: str
    stored: bool


class _Answer(BaseModel):
    value: str = Field(description="The secret value (stored encrypted; never shown to the "
                                   "model).", min_length=1)


async def _store(ctx: Context) -> KeyStore:
    path: Path | None = app_of(ctx).settings.key_file
    # PBKDF2 with 600,000 iterations takes a few hundred milliseconds: off the event loop.
    return await asyncio.to_thread(open_store, path)


def _can_elicit(ctx: Context) -> bool:
    try:
        caps = ctx.session.client_capabilities
    except (RuntimeError, AttributeError):
        return False
    return caps is not None and caps.elicitation is not None


async def _ask(ctx: Context, name: str) -> str | mt.InputRequiredResult | None:
    """The user's value for ``name`` (None if declined), or the request that asks for it."""
    message = (f"Enter the value of the secret {name} for Coder-X. It is stored encrypted on "
               "the server and never shown to the AI model.")
    if not modern_protocol(ctx):
        answer = await ctx.elicit(message, response_type=_Answer)
        return answer.data.value if answer.action == "accept" else None
    responses = ctx.input_responses
    if responses is None or "value" not in responses:
        schema = _Answer.model_json_schema()
        return mt.InputRequiredResult(input_requests={"value": mt.ElicitRequest(
            params=mt.ElicitRequestFormParams(message=message, requested_schema=schema))})
    reply: Any = responses["value"]
    if getattr(reply, "action", None) != "accept":
        return None
    content = getattr(reply, "content", None) or {}
    value = content.get("value")
    return value if isinstance(value, str) and value else None


def register(mcp: FastMCP) -> None:
    """Register the key tools."""

    @tool(mcp, out=KeysOut, read_only=True, idempotent=True, title="List stored keys",
          session=False)
    async def keys_list(ctx: Context) -> ToolResult:
        """List the names of the keys in the server's encrypted key store (never values).

        Grant one to a session with keys_grant; its commands then see it as an
        environment variable of the same name.
        """
        keys = (await _store(ctx)).list()
        text = "\n".join(f"{k.name} (updated {k.updated})" for k in keys) or (
            f"the key store is empty; {CLI_HINT} or key_set(name)")
        return result(KeysOut(session="", keys=keys), text)

    @tool(mcp, out=GrantOut, read_only=False, title="Grant keys to a session")
    async def keys_grant(ctx: Context, names: Names, session: SessionArg = None) -> ToolResult:
        """Make stored keys environment variables of this session's later commands.

        Values are passed with each command, never written into the container or its shell
        state, and replaced by [redacted:NAME] wherever they would appear in output.
        Use "$NAME" in run_command; never echo it.
        """
        s, _ = session_ops()
        for n in names:
            check_name(n)
        store = await _store(ctx)
        missing = [n for n in names if store.get(n) is None]
        if missing:
            raise KeyNotFound(f"no key named {', '.join(missing)} in the key store; keys_list "
                              f"shows the names ({CLI_HINT})")
        values = {n: str(store.get(n)) for n in names}
        short = [n for n, v in values.items() if len(v) < MIN_SECRET]
        if short:
            raise KeyStoreError(f"{', '.join(short)} is shorter than {MIN_SECRET} characters, "
                                "too short to redact safely; it was not granted")
        grants = app_of(ctx).grants
        grants.grant(s.id, values)
        current().notes["audit"] = f"granted {', '.join(sorted(names))}"
        out = GrantOut(session=s.id, changed=sorted(names), granted=grants.names(s.id))
        return result(out, f"granted {', '.join(out.changed)} to session {s.id}; now granted: "
                           f"{', '.join(out.granted)}")

    @tool(mcp, out=GrantOut, read_only=False, idempotent=True,
          title="Revoke keys from a session")
    async def keys_revoke(ctx: Context, names: Names, session: SessionArg = None) -> ToolResult:
        """Stop passing keys to this session's commands (values stay redacted)."""
        s, _ = session_ops()
        grants = app_of(ctx).grants
        gone = grants.revoke(s.id, names)
        current().notes["audit"] = f"revoked {', '.join(sorted(gone)) or 'nothing'}"
        out = GrantOut(session=s.id, changed=sorted(gone), granted=grants.names(s.id))
        return result(out, (f"revoked {', '.join(out.changed)}" if gone else
                            "none of these keys was granted") + f" in session {s.id}")

    @tool(mcp, out=KeySetOut, read_only=False, title="Ask the user for a key", session=False)
    async def key_set(
        ctx: Context,
        name: Annotated[str, Field(description="Key name (letters, digits, _).",
                                   min_length=1, max_length=128)],
    ) -> Any:
        """Ask the user (not the model) for a secret's value and store it encrypted.

        The MCP host shows the user a form; the value never passes through the model.
        Hosts without elicitation support cannot do this: set the key with the CLI.
        """
        check_name(name)
        if not _can_elicit(ctx):
            raise ToolInputError(f"this MCP host cannot ask you for a value (no elicitation "
                                 f"support); {CLI_HINT.replace('NAME', name)}")
        try:
            value = await _ask(ctx, name)
        except ToolError as exc:  # the host claimed elicitation but could not do it
            raise ToolInputError(f"the host could not ask for the value ({exc}); "
                                 f"{CLI_HINT.replace('NAME', name)}") from None
        if isinstance(value, mt.InputRequiredResult):
            return value
        if value is None:
            return result(KeySetOut(session="", name=name, stored=False),
                          f"the user declined; {name} was not stored")
        store = await _store(ctx)
        await asyncio.to_thread(store.set, name, value)
        current().notes["audit"] = f"stored key {name}"
        return result(KeySetOut(session="", name=name, stored=True),
                      f"stored {name} in the key store; grant it with keys_grant")
