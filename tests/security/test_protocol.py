"""Catalogue B5 (protocol robustness) over the real stdio transport, and TA-13: the server
as a subprocess spoken to line by line (every stdout line must parse: PR-10)."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SERVE, RawStdio, child_env
from tests.security.conftest import listening

pytestmark = pytest.mark.docker

INIT = {"protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "security-tests", "version": "0"}}


@pytest.fixture
def stdio(tmp_path: Path) -> Iterator[RawStdio]:
    """A stdio server nobody has initialized yet."""
    ws = tmp_path / "proj"
    ws.mkdir()
    os.chown(ws, 1000, 1000)
    proc = subprocess.Popen([*SERVE, "--workspace", str(ws)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env())
    try:
        yield RawStdio(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def ready(peer: RawStdio) -> dict[str, Any]:
    init = peer.reply(peer.send("initialize", INIT))
    peer.send("notifications/initialized", notify=True)
    return init


def test_pr03_unknown_method_is_method_not_found(stdio: RawStdio) -> None:
    ready(stdio)
    reply = stdio.reply(stdio.send("no/such", {}))
    assert reply["error"]["code"] == -32601
    assert stdio.reply(stdio.send("ping"))["result"] == {}


def test_pr04_unknown_tool_is_one_clear_tool_error(stdio: RawStdio) -> None:
    ready(stdio)
    reply = stdio.call("nope", {})
    assert reply["result"]["isError"] is True
    text = reply["result"]["content"][0]["text"]
    assert text == "unknown tool 'nope'; tools/list shows the tools"
    long = stdio.call("x" * 5000, {})["result"]["content"][0]["text"]
    assert long.startswith("unknown tool") and len(long) < 200
    assert stdio.reply(stdio.send("ping"))["result"] == {}


def test_pr09_lifecycle_out_of_order_answers_and_never_hangs(stdio: RawStdio) -> None:
    early = stdio.call("run_command", {"command": "echo too-early"})
    assert "error" in early and "too-early" not in str(early), early
    first = ready(stdio)
    assert first["result"]["serverInfo"]["name"] == "coderx"
    second = stdio.reply(stdio.send("initialize", INIT), timeout=30)
    assert second.get("result", {}).get("serverInfo") == first["result"]["serverInfo"] or \
        "error" in second, second
    ran = stdio.call("run_command", {"command": "echo fine"})
    assert ran["result"]["structuredContent"]["stdout"] == "fine\n"


def test_pr09_initialized_never_sent_still_answers(stdio: RawStdio) -> None:
    stdio.reply(stdio.send("initialize", INIT))
    reply = stdio.reply(stdio.send("tools/list", {}), timeout=30)
    assert "result" in reply or "error" in reply


def test_ta13_stdio_opens_no_listener(stdio: RawStdio) -> None:
    ready(stdio)
    assert stdio.call("run_command", {"command": "true"})["result"]["isError"] is False
    assert listening(stdio.proc.pid) == []
