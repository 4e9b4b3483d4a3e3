"""Key tools and redaction through a real MCP client and real containers."""

import base64
import io
import logging
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import mcp.types as mt
import pytest
import structlog
from fastmcp import Client, FastMCP
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from tests.tools.conftest import call, err, facts, ok, write_host_file

from coderx_mcp.config import Settings
from coderx_mcp.keystore import open_store
from coderx_mcp.logs import configure_logging
from coderx_mcp.server import build_server
from coderx_mcp.server.pipeline import default_middleware

pytestmark = pytest.mark.docker

SECRET = "tok-3f9a7c1e5b2d4680-XYZ"
PASSPHRASE = "test-passphrase"
RED = "[redacted:API_TOKEN]"


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "keys.enc"
    monkeypatch.setenv("CODERX_KEY_PASSPHRASE", PASSPHRASE)
    store = open_store(path)
    store.set("API_TOKEN", SECRET)
    store.set("OTHER_KEY", "other-value-123")
    return path


class LogArgs(Middleware):
    """Logs each call's arguments inside the pipeline (a test of log redaction)."""

    async def on_call_tool(self, context: MiddlewareContext[mt.CallToolRequestParams],
                           call_next: CallNext[mt.CallToolRequestParams, Any]) -> Any:
        structlog.get_logger("test").warning("call", args=context.message.arguments)
        return await call_next(context)


@pytest.fixture
def keyed_server(make_settings: Callable[..., Settings], key_file: Path) -> FastMCP:
    mw = default_middleware()
    return build_server(make_settings(key_file=key_file), middleware=[mw[0], LogArgs(), *mw[1:]])


@pytest.fixture
async def kc(keyed_server: FastMCP) -> AsyncIterator[Client[Any]]:
    async with Client(keyed_server) as c:
        yield c


async def run(c: Client[Any], command: str, **args: Any) -> dict[str, Any]:
    return await ok(c, "run_command", command=command, **args)


async def test_se07_keys_list_shows_names_only(kc: Client[Any]) -> None:
    r = await call(kc, "keys_list")
    assert [k["name"] for k in r.structured_content["keys"]] == ["API_TOKEN", "OTHER_KEY"]
    assert SECRET not in str(r.content) and SECRET not in str(r.structured_content)


async def test_grant_gives_the_value_to_commands_and_redacts_it(kc: Client[Any]) -> None:
    before = await run(kc, 'printf %s "$API_TOKEN" | wc -c')
    assert before["stdout"].strip() == "0"
    g = await ok(kc, "keys_grant", names=["API_TOKEN"])
    assert g["granted"] == ["API_TOKEN"]
    length = await run(kc, 'printf %s "$API_TOKEN" | wc -c')
    assert length["stdout"].strip() == str(len(SECRET))
    echo = await call(kc, "run_command", command="echo $API_TOKEN")
    assert facts(echo)["stdout"].strip() == RED
    assert SECRET not in echo.content[0].text and RED in echo.content[0].text
    b64 = await run(kc, 'printf %s "$API_TOKEN" | base64 -w0; echo; printf %s "$API_TOKEN" | '
                        "python3 -c 'import sys,urllib.parse; "
                        "print(urllib.parse.quote(sys.stdin.read(), safe=\"\"))'")
    assert base64.b64encode(SECRET.encode()).decode() not in b64["stdout"]
    assert b64["stdout"].count(RED) == 2, b64["stdout"]
    await ok(kc, "keys_revoke", names=["API_TOKEN"])
    after = await run(kc, 'printf %s "$API_TOKEN" | wc -c')
    assert after["stdout"].strip() == "0"
    # The grant was per command: nothing of it stayed in the shell state.
    exported = await run(kc, "export -p | grep -c API_TOKEN || true")
    assert exported["stdout"].strip() == "0"


async def test_is08_grant_is_per_session(kc: Client[Any]) -> None:
    other = (await ok(kc, "session_open"))["session"]
    await ok(kc, "keys_grant", names=["API_TOKEN"], session=other)
    mine = await run(kc, 'printf %s "$API_TOKEN" | wc -c')
    theirs = await run(kc, 'printf %s "$API_TOKEN" | wc -c', session=other)
    assert (mine["stdout"].strip(), theirs["stdout"].strip()) == ("0", str(len(SECRET)))


async def test_se06_secret_never_reaches_container_config_or_state(kc: Client[Any]) -> None:
    await ok(kc, "keys_grant", names=["API_TOKEN"])
    await run(kc, 'X=$API_TOKEN; cd /tmp; export KEEP=1; printf %s "$API_TOKEN" >/dev/null')
    info = await ok(kc, "session_info")
    client = docker.from_env()
    try:
        container = client.containers.get(info["info"]["container"])
        assert SECRET not in str(container.attrs)  # env, labels, command, image config
        state = container.exec_run(["sh", "-c", "cat /run/coderx/shell.env; ps -eo args; "
                                    "cat /proc/[0-9]*/environ 2>/dev/null"]).output
        assert b"KEEP" in state  # the state file was read: exports persist there, grants not
        assert SECRET.encode() not in state
    finally:
        client.close()


async def test_se05_redaction_in_files_grep_errors_and_split_output(
        kc: Client[Any], tool_workspace: Path) -> None:
    await ok(kc, "keys_grant", names=["API_TOKEN"])
    await run(kc, 'printf "key=%s\\n" "$API_TOKEN" > leak.txt')
    read = await call(kc, "read_file", path="leak.txt")
    assert SECRET not in str(read.content) + str(read.structured_content) + str(read.meta)
    assert RED in read.content[0].text  # type: ignore[union-attr]
    hits = await call(kc, "grep", pattern="key=", output_mode="content")
    assert SECRET not in str(hits.content) + str(hits.structured_content)
    assert RED in hits.content[0].text
    message = await err(kc, "read_file", path=SECRET + ".txt")
    assert SECRET not in message and RED in message
    # A page boundary inside the value: each page's edge fragment is redacted.
    r = await run(kc, 'printf "%s" "$API_TOKEN"')
    half = len(SECRET) // 2
    first = await ok(kc, "read_output", output_id=r["output_id"], limit=half)
    second = await ok(kc, "read_output", output_id=r["output_id"], byte_offset=half)
    for page in (first, second):
        assert SECRET[:half] not in page["text"] and SECRET[half:] not in page["text"]
        assert RED in page["text"]
    # Pages of one byte each: every page inside the value is masked whole.
    for off in range(len(SECRET)):
        page = await ok(kc, "read_output", output_id=r["output_id"], byte_offset=off, limit=1)
        assert page["text"] == RED, (off, page["text"])
    # The runner's head/tail cut of a long output falls inside the value.
    cut = await run(kc, "printf '%11990s' '' | tr ' ' x; printf %s \"$API_TOKEN\"; "
                        "head -c 40000 /dev/zero | tr '\\0' y")
    assert cut["truncated"] and "bytes omitted" in cut["stdout"]
    assert SECRET[:10] not in cut["stdout"] and RED in cut["stdout"]
    write_host_file(tool_workspace, "plain.txt", b"nothing secret here\n")
    plain = await ok(kc, "read_file", path="plain.txt")
    assert "nothing secret here" in plain["text"]


async def test_progress_messages_are_redacted(kc: Client[Any]) -> None:
    await ok(kc, "keys_grant", names=["API_TOKEN"])
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    r = await kc.call_tool("run_command", {"command": 'echo "$API_TOKEN"; sleep 2.5'},
                           progress_handler=on_progress)
    assert not r.is_error and messages
    assert all(SECRET not in m for m in messages)
    assert any(RED in m for m in messages)


async def test_se05_logs_are_redacted(kc: Client[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    sink = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", sink)
    configure_logging("info")
    try:
        await ok(kc, "keys_grant", names=["API_TOKEN"])
        await call(kc, "run_command", command=f"echo {SECRET} >/dev/null")
        logged = sink.getvalue()
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
    assert "call" in logged and SECRET not in logged and RED in logged


async def test_unknown_or_bad_key_names_are_clear(kc: Client[Any]) -> None:
    assert "no key named NOPE" in await err(kc, "keys_grant", names=["NOPE"])
    assert "invalid" in await err(kc, "keys_grant", names=["1-bad"])


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # input_required / server request
async def test_key_set_through_elicitation(keyed_server: FastMCP, key_file: Path,
                                           mode: str) -> None:
    asked: list[str] = []

    async def handler(message: str, response_type: Any, params: Any, context: Any) -> Any:
        asked.append(message)
        return {"value": "elicited-value-42"}

    async with Client(keyed_server, elicitation_handler=handler, mode=mode) as c:
        r = await call(c, "key_set", name="NEW_KEY")
        assert not r.is_error, r.content
        assert r.structured_content["stored"] is True
        assert "elicited-value-42" not in str(r.content) + str(r.structured_content)
    assert asked and "NEW_KEY" in asked[0]
    assert open_store(key_file, PASSPHRASE).get("NEW_KEY") == "elicited-value-42"


async def test_key_set_without_elicitation_points_to_the_cli(kc: Client[Any]) -> None:
    message = await err(kc, "key_set", name="NEW_KEY")
    assert "coderx-mcp keys set NEW_KEY" in message


def test_cli_keys_round_trip(tmp_path: Path) -> None:
    import subprocess
    import sys

    f = str(tmp_path / "k.enc")
    env = {"CODERX_KEY_PASSPHRASE": "p1", "PATH": "/usr/bin:/bin"}
    exe = [sys.executable, "-m", "coderx_mcp", "keys"]
    subprocess.run([*exe, "set", "CLI_KEY", "--file", f], input="cli-value-9\n", env=env,
                   check=True, text=True, capture_output=True)
    listed = subprocess.run([*exe, "list", "--file", f], env=env, text=True,
                            capture_output=True, check=True).stdout
    assert listed.startswith("CLI_KEY\t") and "cli-value-9" not in listed
    subprocess.run([*exe, "rotate-passphrase", "--file", f], input="p2\n", env=env,
                   check=True, text=True, capture_output=True)
    wrong = subprocess.run([*exe, "list", "--file", f], env=env, text=True, capture_output=True)
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert open_store(Path(f), "p2").get("CLI_KEY") == "cli-value-9"


async def test_se05_bad_arguments_and_history_never_carry_the_value(kc: Client[Any]) -> None:
    await ok(kc, "keys_grant", names=["API_TOKEN"])
    for tool, args in (("run_command", {"command": "true", "timeout": SECRET}),
                       ("read_file", {"path": "a", "limit": SECRET}),
                       ("write_file", {"path": "x\0" + SECRET, "content": SECRET}),
                       ("keys_grant", {"names": [SECRET]})):
        r = await call(kc, tool, **args)
        assert r.is_error and SECRET not in str(r.content), (tool, r.content)
    await call(kc, "run_command", command=f"echo {SECRET}")
    sid = (await ok(kc, "session_info"))["info"]["session"]
    for tool, args in (("history", {}), ("history_export", {"session": sid})):
        h = await call(kc, tool, **args)
        assert not h.is_error and SECRET not in str(h.content) + str(h.structured_content)
