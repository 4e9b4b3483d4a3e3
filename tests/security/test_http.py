"""Catalogue B4 (transport and auth over HTTP) and the HTTP cases of B3 and B5 [H]:
``coderx-mcp serve --http`` on 127.0.0.1 as a subprocess, spoken to raw or by a real client."""

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client
from tests.conftest import (
    CLI,
    MCP_HEADERS,
    MakeServer,
    Server,
    child_env,
    containers_of,
    facts,
    raw_facts,
)
from tests.security.conftest import listening

pytestmark = pytest.mark.docker

ALICE, BOB = "tok-SENTINEL-alice-0123456789abc", "tok-bob-0123456789abcdefghijkl"
TOKENS = json.dumps({"alice": ALICE, "bob": BOB})
VERSION = {"MCP-Protocol-Version": "2025-06-18"}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "security-tests", "version": "0"}}}


def message(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC message of a reply (plain JSON or one SSE ``data:`` line), if any."""
    text = body.decode()
    for line in text.splitlines():
        if line.startswith("data: "):
            return dict(json.loads(line[6:]))
    return dict(json.loads(text)) if text.strip().startswith("{") else None


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def rpc(server: Server, msg: dict[str, Any] | bytes, sid: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """POST one message; (status, headers, the JSON-RPC reply or None)."""
    body = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    hdrs = {**MCP_HEADERS, **VERSION, **({"mcp-session-id": sid} if sid else {}),
            **(headers or {})}
    status, got, raw = await asyncio.to_thread(server.request, "POST", "/mcp", body, hdrs)
    return status, got, message(raw) if raw else None


async def initialize(server: Server, token: str | None = None) -> str:
    """A new MCP session (initialize + initialized); its id."""
    status, headers, reply = await rpc(server, INIT, headers=auth(token))
    assert status == 200 and reply is not None and "result" in reply, (status, reply)
    sid = headers["mcp-session-id"]
    status, _, _ = await rpc(server, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                             sid, auth(token))
    assert status == 202
    return sid


def call_msg(rid: int, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}


def _project(base: Path) -> Path:
    path = base / "proj"
    path.mkdir()
    os.chown(path, 1000, 1000)
    return path


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return _project(tmp_path)


@pytest.fixture(scope="module")
async def plain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server without tokens, shared by the cases that do not stop or configure it."""
    base = tmp_path_factory.mktemp("plain")
    base.chmod(0o711)
    server = Server(base, child_env(CODERX_STATE_DIR=str(base / "state"),
                                    CODERX_DATA_DIR=str(base / "data")))
    await server.start("--workspace", str(_project(base)))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def tokened(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One server with alice's and bob's tokens whose workspace root is its base directory."""
    base = tmp_path_factory.mktemp("tokened")
    base.chmod(0o711)
    server = Server(base, child_env(CODERX_STATE_DIR=str(base / "state"),
                                    CODERX_DATA_DIR=str(base / "data"),
                                    CODERX_HTTP_TOKENS=TOKENS,
                                    CODERX_WORKSPACE_ROOTS=json.dumps([str(base)])))
    await server.start("--workspace", str(_project(base)))
    try:
        yield server
    finally:
        server.stop()


def proj(server: Server) -> Path:
    return server.tmp / "proj"


async def test_ta01_default_bind_is_loopback_and_public_bind_needs_auth(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    assert server.proc is not None
    assert listening(server.proc.pid) == [f"127.0.0.1:{server.port}"]
    refused = await asyncio.to_thread(
        subprocess.run, [*CLI, "serve", "--http", "--host", "0.0.0.0"], env=child_env(),
        capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "without authentication" in refused.stderr
    assert refused.stdout == "" and "Traceback" not in refused.stderr


async def test_ta03_public_bind_still_checks_the_host_header(make_server: MakeServer,
                                                             ws: Path) -> None:
    server = make_server(CODERX_HTTP_TOKENS=TOKENS)
    await server.start("--host", "0.0.0.0", "--allowed-host", "coderx.internal:*",
                       "--workspace", str(ws))
    for host in ("evil.example.com", f"evil.example.com:{server.port}"):
        status, _, _ = await rpc(server, INIT, headers={**auth(ALICE), "Host": host})
        assert 400 <= status < 500, (host, status)
    status, _, _ = await rpc(server, INIT, headers={**auth(ALICE),
                                                    "Host": f"coderx.internal:{server.port}"})
    assert status == 200


async def test_ta04_no_permissive_cors(plain: Server) -> None:
    server, ws = plain, proj(plain)
    sid = await initialize(server)
    evil = {"Origin": "https://evil.example"}
    for method, body, headers in (
            ("OPTIONS", None, {**evil, "Access-Control-Request-Method": "POST"}),
            ("POST", json.dumps(call_msg(1, "run_command", command="touch ta04")).encode(),
             {**MCP_HEADERS, **VERSION, "mcp-session-id": sid, **evil})):
        status, got, _ = await asyncio.to_thread(server.request, method, "/mcp", body, headers)
        assert status == 403, (method, status)
        assert got.get("access-control-allow-origin") in (None, ""), got
        assert "access-control-allow-credentials" not in got
    assert not (ws / "ta04").exists()


async def test_ta05_csrf_shaped_posts_run_nothing(plain: Server) -> None:
    server, ws = plain, proj(plain)
    sid = await initialize(server)
    touch = json.dumps(call_msg(1, "run_command", command="touch ta05")).encode()
    base = {**VERSION, "mcp-session-id": sid}
    for headers, want in (({**base, "Accept": "application/json, text/event-stream",
                            "Content-Type": "text/plain"}, 400),
                          ({**base, "Accept": "application/json",
                            "Content-Type": "application/json"}, 406),
                          ({**base, "Content-Type": "application/json"}, 406)):
        status, _, _ = await asyncio.to_thread(server.request, "POST", "/mcp", touch, headers)
        assert status == want, (headers, status)
    status, _, reply = await rpc(server, call_msg(2, "run_command", command="ls"), sid)
    assert status == 200 and "ta05" not in json.dumps(reply)
    assert not (ws / "ta05").exists()


async def test_ta07_the_clients_token_is_never_passed_on(tokened: Server) -> None:
    server, ws = tokened, proj(tokened)
    seen: list[str] = []
    async with Client(server.url, auth=ALICE) as c:
        (ws / "f.txt").write_text("hello\n")
        os.chown(ws / "f.txt", 1000, 1000)
        for tool, args in (
                ("run_command", {"command": "env; ps -eo args; cat /proc/[0-9]*/environ; "
                                            "cat /run/coderx/* 2>/dev/null; true"}),
                ("read_file", {"path": "f.txt"}), ("grep", {"pattern": "hello"}),
                ("edit_file", {"path": "f.txt", "old_string": "hello", "new_string": "bye"}),
                ("session_info", {}), ("session_list", {}), ("health", {}),
                ("history", {}), ("keys_list", {}), ("session_diff", {})):
            r = await c.call_tool(tool, args, raise_on_error=False)
            seen.append(json.dumps([b.model_dump() for b in r.content]))
            seen.append(json.dumps(r.structured_content))
            seen.append(json.dumps(r.meta))
        assert server.proc is not None
        inspected = [json.dumps(x.attrs) for x in containers_of(server.proc.pid)]
        assert inspected
        sid = (await c.call_tool("session_info", {})).structured_content
        exported = await c.call_tool("history_export", {
            "session": sid["info"]["session"], "format": "json"})  # type: ignore[index]
        history = json.dumps([b.model_dump() for b in exported.content])
    sentinel = "SENTINEL"
    for where, text in (("tool results", "".join(seen)), ("docker inspect", "".join(inspected)),
                        ("server log", server.log.read_text()), ("history", history)):
        assert sentinel not in text, where


async def test_ta08_session_ids_are_random_and_printable(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                 timeout=30) as http:
        async def one() -> str:
            r = await http.post("/mcp", json=INIT, headers=MCP_HEADERS)
            assert r.status_code == 200
            return r.headers["mcp-session-id"]

        ids: list[str] = []
        for _ in range(8):  # 200 initializes, 25 at a time
            ids += await asyncio.gather(*(one() for _ in range(25)))
    assert len(set(ids)) == len(ids) == 200
    assert all(re.fullmatch(r"[\x21-\x7e]+", i) for i in ids)
    # 32 hex digits of uuid4: 122 random bits. Sequential ids would share long prefixes.
    assert all(uuid.UUID(hex=i).version == 4 for i in ids)
    assert len({i[:6] for i in ids}) > 190


async def test_ta09_session_is_bound_to_its_token(tokened: Server) -> None:
    server, ws = tokened, proj(tokened)
    sid = await initialize(server, ALICE)
    touch = call_msg(1, "run_command", command="touch ta09")
    status, _, _ = await rpc(server, touch, sid, auth(BOB))
    assert status in (403, 404), status
    status, got, _ = await rpc(server, touch, sid, {})  # the session id is no credential
    assert status == 401 and got["www-authenticate"].startswith("Bearer")
    assert not (ws / "ta09").exists()
    status, _, reply = await rpc(server, call_msg(2, "run_command", command="echo ok"), sid,
                                 auth(ALICE))
    assert status == 200 and raw_facts(reply["result"])["stdout"] == "ok\n"


async def test_ta10_session_state_machine(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert (await rpc(server, listing))[0] == 400  # no session id
    assert (await rpc(server, listing, uuid.uuid4().hex))[0] == 404
    sid = await initialize(server)
    assert (await rpc(server, listing, sid))[0] == 200
    status, _, _ = await rpc(server, listing, sid, {"MCP-Protocol-Version": "1999-01-01"})
    assert status == 400
    status, _, _ = await asyncio.to_thread(server.request, "DELETE", "/mcp", None,
                                           {**VERSION, "mcp-session-id": sid})
    assert status == 200
    assert (await rpc(server, listing, sid))[0] == 404


async def test_ta11_twenty_mib_post_is_413_and_the_server_goes_on(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    sid = await initialize(server)
    big = (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "'
           + b"x" * (20 << 20) + b'"}')
    status, _, _ = await rpc(server, big, sid)
    assert status == 413
    status, _, reply = await rpc(server, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, sid)
    assert status == 200 and reply == {"jsonrpc": "2.0", "id": 2, "result": {}}


def _rss_and_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def test_ta12_bounded_flood_of_sessions_and_requests(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    assert server.proc is not None
    sid = await initialize(server)
    await rpc(server, call_msg(1, "run_command", command="true"), sid)  # container started
    rss0, fds0 = _rss_and_fds(server.proc.pid)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30,
                                 limits=httpx.Limits(max_connections=30)) as http:
        async def opening() -> int:
            return (await http.post("/mcp", json=INIT, headers=MCP_HEADERS)).status_code

        start = time.monotonic()
        statuses = await asyncio.gather(*(opening() for _ in range(100)))
        flood_s = time.monotonic() - start
        assert set(statuses) <= {200, 429, 503} and statuses.count(200) > 0
        # 30 requests a second for two seconds to one session, while it keeps serving.
        hdrs = {**MCP_HEADERS, **VERSION, "mcp-session-id": sid}
        replies: list[httpx.Response] = []
        for second in range(2):
            tick = time.monotonic()
            replies += await asyncio.gather(*(
                http.post("/mcp", headers=hdrs, json=call_msg(100 * second + i, "glob",
                                                               pattern="*"))
                for i in range(30)))
            await asyncio.sleep(max(0.0, 1 - (time.monotonic() - tick)))
    assert all(r.status_code in (200, 429, 503) for r in replies)
    assert sum(r.status_code == 200 for r in replies) >= 30
    rss1, fds1 = _rss_and_fds(server.proc.pid)
    assert rss1 - rss0 < 200 * 1024, f"RSS grew {(rss1 - rss0) // 1024} MiB"
    assert fds1 - fds0 < 100, f"{fds1 - fds0} more descriptors"
    status, _, reply = await rpc(server, call_msg(999, "run_command", command="echo alive"), sid)
    assert status == 200 and raw_facts(reply["result"])["stdout"] == "alive\n"
    assert flood_s < 60


async def test_is05_clients_with_the_same_ids_get_only_their_replies(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    clients = [(uuid.uuid4().hex, await initialize(server)) for _ in range(3)]

    async def run(mark: str, sid: str, rid: int) -> tuple[str, int, dict[str, Any]]:
        status, _, reply = await rpc(server, call_msg(rid, "run_command",
                                                      command=f"echo {mark}"), sid)
        assert status == 200
        return mark, rid, reply

    got = await asyncio.gather(*(run(mark, sid, rid) for rid in range(50)
                                 for mark, sid in clients))
    for mark, rid, reply in got:
        assert reply["id"] == rid
        assert raw_facts(reply["result"])["stdout"] == f"{mark}\n"
    assert len(got) == 150


async def test_is10_ended_sessions_stay_dead(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    assert server.proc is not None
    async with Client(server.url) as c:
        opened = (await c.call_tool("session_open", {})).structured_content
        assert opened is not None
        sandbox = opened["session"]
        info = (await c.call_tool("session_info", {"session": sandbox})).structured_content
        container = info["info"]["container"]  # type: ignore[index]
        await c.call_tool("session_close", {"session": sandbox})
        again = await c.call_tool("run_command", {"command": "true", "session": sandbox},
                                  raise_on_error=False)
        assert again.is_error and sandbox in again.content[0].text  # type: ignore[union-attr]
        assert container not in {x.id[:len(container)] for x in containers_of(server.proc.pid)}
        fresh = (await c.call_tool("session_open", {})).structured_content
        assert fresh is not None and fresh["session"] != sandbox
    sid = await initialize(server)
    await asyncio.to_thread(server.request, "DELETE", "/mcp", None,
                            {**VERSION, "mcp-session-id": sid})
    assert (await rpc(server, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid))[0] == 404


async def test_is14_another_principals_scratch_is_refused(tokened: Server) -> None:
    server = tokened
    async with Client(server.url, auth=ALICE) as a, Client(server.url, auth=BOB) as b:
        mine = (await a.call_tool("session_open", {"mode": "scratch"})).structured_content
        assert mine is not None
        info = (await a.call_tool("session_info", {"session": mine["session"]})
                ).structured_content
        scratch = Path(info["info"]["workspace"])  # type: ignore[index]
        await a.call_tool("write_file", {"path": "a.txt", "content": "alice\n",
                                         "session": mine["session"]})
        stolen = await b.call_tool("session_open", {"workspace": str(scratch)},
                                   raise_on_error=False)
        assert stolen.is_error and "server's own directory" in stolen.content[0].text  # type: ignore[union-attr]
        assert (scratch / "a.txt").read_text() == "alice\n"
        await a.call_tool("session_close", {"session": mine["session"]})
    assert not scratch.exists()


async def test_pr02_not_json_rpc_or_a_batch_over_http(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    sid = await initialize(server)
    for bad in ({"foo": "SENTINEL-1"}, [{"jsonrpc": "2.0", "id": 5, "method": "ping"}],
                {"jsonrpc": "1.0", "id": 6, "method": "ping", "params": {"x": "SENTINEL-2"}},
                {"jsonrpc": "2.0", "id": None, "method": "tools/call",
                 "params": {"name": "run_command", "arguments": {"command": "touch pr02"}}},
                {"jsonrpc": "2.0", "id": True, "method": "ping"}):
        status, _, reply = await rpc(server, json.dumps(bad).encode(), sid)
        assert status == 400, (bad, status)
        assert reply is not None and reply["error"]["code"] == -32600, reply
        assert "SENTINEL" not in json.dumps(reply)  # the input is never echoed
    status, _, reply = await rpc(server, b'{"jsonrpc": "2.0", "id": 8, "method": ', sid)
    assert status == 400 and reply["error"]["code"] == -32700
    assert not (proj(server) / "pr02").exists()  # the id-null call never ran
    status, _, reply = await rpc(server, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, sid)
    assert status == 200 and reply["id"] == 7


async def test_pr12_client_vanishing_mid_call_breaks_nothing(plain: Server) -> None:
    server, _ws = plain, proj(plain)
    sid = await initialize(server)
    await rpc(server, call_msg(1, "run_command", command="true"), sid)
    hdrs = {**MCP_HEADERS, **VERSION, "mcp-session-id": sid}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/mcp", headers=hdrs, timeout=1.5, json=call_msg(
                2, "run_command", command="sleep 5; touch pr12", timeout=30))
    async with Client(server.url) as other:
        ran = await other.call_tool("run_command", {"command": "echo fine"})
        assert facts(ran)["stdout"] == "fine\n"
    status, _, reply = await rpc(server, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, sid)
    assert status == 200 and reply["id"] == 3
    assert server.proc is not None and server.proc.poll() is None
    assert "Traceback" not in server.log.read_text()
