"""The real transports: `coderx-mcp serve` as a subprocess over stdio and streamable HTTP."""

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from tests.conftest import (
    SERVE,
    RawStdio,
    child_env,
    containers_of,
    facts,
    free_port,
    raw_facts,
    wait_port,
)

pytestmark = pytest.mark.docker

@pytest.fixture
def project(tmp_path: Path) -> Path:
    ws = tmp_path / "proj"
    ws.mkdir()
    (ws / "hello.txt").write_text("hello\nworld\n")
    for p in (ws, ws / "hello.txt"):
        os.chown(p, 1000, 1000)
    return ws


@pytest.fixture
def raw_server(project: Path) -> Iterator[RawStdio]:
    proc = subprocess.Popen([*SERVE, "--workspace", str(project)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    peer = RawStdio(proc)
    try:
        init = peer.reply(peer.send("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "0"}}))
        assert init["result"]["serverInfo"]["name"] == "coderx"
        peer.send("notifications/initialized", notify=True)
        yield peer
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_pr10_stdout_carries_only_json_rpc(raw_server: RawStdio) -> None:
    r = raw_server.call("run_command", {
        "command": "echo hi; python3 -c 'print(1)'; echo to-stderr >&2"})
    result = r["result"]
    assert not result.get("isError")
    assert result["content"][0]["text"].startswith(
        "$ echo hi; python3 -c 'print(1)'; echo to-stderr >&2\nhi\n1\n[stderr]\nto-stderr\n")
    r = raw_server.call("read_file", {"path": "hello.txt"})
    assert "  1|hello" in r["result"]["content"][0]["text"]
    bad = raw_server.call("read_file", {"path": "hello.txt", "evil": 1})
    assert bad["result"]["isError"] and "evil" in bad["result"]["content"][0]["text"]
    assert len(raw_server.lines) >= 4  # each one parsed as JSON on the way in


def test_cr02_eof_on_stdin_exits_cleanly_and_removes_containers(raw_server: RawStdio) -> None:
    raw_server.call("run_command", {"command": "true"})
    pid = raw_server.proc.pid
    assert containers_of(pid), "the default session should have a container"
    assert raw_server.proc.stdin is not None
    raw_server.proc.stdin.close()
    assert raw_server.proc.wait(15) == 0
    assert containers_of(pid) == []


def test_cr02_sigterm_exits_cleanly_and_removes_containers(raw_server: RawStdio) -> None:
    raw_server.call("run_command", {"command": "true"})
    pid = raw_server.proc.pid
    raw_server.proc.send_signal(signal.SIGTERM)
    assert raw_server.proc.wait(15) == 0
    assert containers_of(pid) == []


async def test_stdio_client_end_to_end(project: Path) -> None:
    transport = StdioTransport(command=sys.executable,
                               args=["-m", "coderx_mcp", "serve", "--workspace", str(project)],
                               env=child_env())
    async with Client(transport) as client:
        tools = {t.name: t for t in await client.list_tools()}
        assert {"read_file", "edit_file", "grep", "run_command", "session_open"} <= set(tools)
        assert all(t.input_schema.get("additionalProperties") is False for t in tools.values())
        read = await client.call_tool("read_file", {"path": "hello.txt"})
        edit = await client.call_tool("edit_file", {
            "path": "hello.txt", "old_string": "world", "new_string": "there"})
        assert not edit.is_error and "hello" in read.content[0].text  # type: ignore[union-attr]
        run = await client.call_tool("run_command", {"command": "cat hello.txt"})
        assert facts(run) is not None
        assert facts(run)["stdout"] == "hello\nthere\n"
    assert (project / "hello.txt").read_text() == "hello\nthere\n"


async def _wait_port(port: int) -> None:
    await asyncio.to_thread(wait_port, port)


TOKENS = {"alice": "tok-alice-0123456789abcdefghij", "bob": "tok-bob-0123456789abcdefghijkl"}


@pytest.fixture
async def http_url(project: Path) -> AsyncIterator[str]:
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - a server process, not awaited
        [*SERVE, "--http", "--port", str(port), "--workspace", str(project)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            env=child_env(CODERX_HTTP_TOKENS=json.dumps(TOKENS)))
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        await _wait_port(port)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert containers_of(proc.pid) == []


async def test_http_principals_have_separate_sessions(http_url: str) -> None:
    async with Client(http_url, auth=TOKENS["alice"]) as a, \
            Client(http_url, auth=TOKENS["bob"]) as b:
        ra = await a.call_tool("run_command", {"command": "export WHO=a; echo $WHO"})
        rb = await b.call_tool("run_command", {"command": "echo [$WHO]"})
        assert facts(ra) is not None and facts(rb) is not None
        sa, sb = facts(ra)["session"], facts(rb)["session"]
        assert sa != sb
        assert facts(rb)["stdout"] == "[]\n"
        stolen = await b.call_tool("run_command", {"command": "id", "session": sa},
                                   raise_on_error=False)
        assert stolen.is_error and "no open session" in stolen.content[0].text
        listed = await b.call_tool("session_list", {})
        assert listed.structured_content is not None
        assert [s["session"] for s in listed.structured_content["sessions"]] == [sb]
        # The history is per principal too: bob sees neither alice's calls nor her session.
        mine = await a.call_tool("history", {"tool": "run_command"})
        theirs = await b.call_tool("history", {"session": sa})
        assert mine.structured_content is not None and theirs.structured_content is not None
        assert [e["session"] for e in mine.structured_content["entries"]] == [sa]
        assert theirs.structured_content["entries"] == []
        seen = await b.read_resource("coderx://sessions")
        assert sa not in seen[0].text and sb in seen[0].text  # type: ignore[union-attr]


async def test_ta02_http_rejects_foreign_host_header(http_url: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "x", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    port = int(http_url.split(":")[2].split("/")[0])

    def post(host: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/mcp", json.dumps(body), {**headers, "Host": host})
            return conn.getresponse().status
        finally:
            conn.close()

    auth = {"Authorization": f"Bearer {TOKENS['alice']}"}
    headers = {**headers, **auth}
    evil = await asyncio.to_thread(post, "evil.example.com")
    good = await asyncio.to_thread(post, f"127.0.0.1:{port}")
    assert 400 <= evil < 500
    assert good == 200


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef"])
async def test_ta06_http_needs_a_valid_bearer_token(http_url: str, token: str | None) -> None:
    port = int(http_url.split(":")[2].split("/")[0])
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def post() -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": 1,
                                                     "method": "tools/list"}), headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("WWW-Authenticate") or ""
        finally:
            conn.close()

    status, challenge = await asyncio.to_thread(post)
    assert status == 401
    assert challenge.startswith("Bearer")


def _raw_line(peer: RawStdio, data: bytes) -> None:
    assert peer.proc.stdin is not None
    peer.proc.stdin.write(data)
    peer.proc.stdin.flush()


@pytest.mark.parametrize(("line", "code"), [
    (b"this is not json\n", -32700),
    (b'{"jsonrpc":"2.0","id":5,"method":"tools/list"\n', -32700),
    (b"[" * 100_000 + b"]" * 100_000 + b"\n", -32700),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}\n', -32600),
])
def test_pr01_pr02_pr08_bad_lines_get_an_error_and_the_server_goes_on(
        raw_server: RawStdio, line: bytes, code: int) -> None:
    _raw_line(raw_server, line)
    err = raw_server.reply(None, timeout=10)
    assert err["error"]["code"] == code
    assert raw_server.reply(raw_server.send("ping"))["result"] == {}


def test_pr08_lone_surrogate_request_is_answered_with_its_id(raw_server: RawStdio) -> None:
    _raw_line(raw_server, b'{"jsonrpc":"2.0","id":77,"method":"tools/call","params":'
                          b'{"name":"read_file","arguments":{"path":"\\ud800"}}}\n')
    err = raw_server.reply(77, timeout=10)
    assert err["error"]["code"] == -32600


def test_pr11_ping_answers_while_a_command_runs(raw_server: RawStdio) -> None:
    # Not a latency test (the machine may be loaded): the ping's answer must come while
    # the command still runs, i.e. the ping never waits behind a tool call.
    sent = time.monotonic()
    rid = raw_server.send("tools/call", {"name": "run_command",
                                         "arguments": {"command": "sleep 10; echo done"}})
    time.sleep(0.3)
    assert raw_server.reply(raw_server.send("ping"))["result"] == {}
    assert time.monotonic() - sent < 10
    done = raw_server.reply(rid, timeout=30)
    assert raw_facts(done["result"])["stdout"] == "done\n"


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_stdio_default_workspace_from_client_roots(project: Path) -> None:
    """`claude mcp add coderx -- coderx-mcp serve` from a host that sends roots: the sandbox
    sees the host's project even though the server was started in `/`."""
    transport = StdioTransport(command=sys.executable, args=["-m", "coderx_mcp", "serve"],
                               env=child_env(), cwd="/")
    async with Client(transport, roots=[project.as_uri()], mode="legacy") as client:
        read = await client.call_tool("read_file", {"path": "hello.txt"})
        assert "hello" in read.content[0].text  # type: ignore[union-attr]
        info = await client.call_tool("session_info", {})
        assert info.structured_content is not None
        assert info.structured_content["info"]["chosen_by"] == "mcp-roots"
        assert info.structured_content["info"]["workspace"] == str(project.resolve())


async def test_sigterm_with_open_sessions_leaves_no_scratch(project: Path, tmp_path: Path) -> None:
    """Two shutdown handlers used to race and leave scratch directories behind."""
    port, data = free_port(), tmp_path / "data"
    proc = subprocess.Popen(  # noqa: ASYNC220 - a server process, not awaited
        [*SERVE, "--http", "--port", str(port), "--workspace", str(project)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=child_env(CODERX_DATA_DIR=str(data)))
    try:
        await _wait_port(port)
        async with Client(f"http://127.0.0.1:{port}/mcp") as c:
            for _ in range(3):
                r = await c.call_tool("session_open", {"mode": "scratch"})
                assert not r.is_error
        assert len(list((data / "scratch").iterdir())) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert list((data / "scratch").iterdir()) == []
    assert list((data / "records").iterdir()) == []
    assert containers_of(proc.pid) == []
