"""Catalogue B5 (protocol robustness) over the real stdio transport, and TA-13: the server
as a subprocess spoken to line by line (every stdout line must parse: PR-10)."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SERVE, RawStdio, child_env, raw_facts
from tests.security.conftest import listening

pytestmark = pytest.mark.docker

INIT = {"protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "security-tests", "version": "0"}}


def _serve(tmp: Path) -> subprocess.Popen[bytes]:
    ws = tmp / "proj"
    ws.mkdir()
    os.chown(ws, 1000, 1000)
    return subprocess.Popen([*SERVE, "--workspace", str(ws)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def stdio(tmp_path: Path) -> Iterator[RawStdio]:
    """A stdio server nobody has initialized yet."""
    proc = _serve(tmp_path)
    try:
        yield RawStdio(proc)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def ready_stdio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawStdio]:
    """One initialized stdio server shared by the cases that leave it as they found it."""
    base = tmp_path_factory.mktemp("stdio")
    base.chmod(0o711)
    proc = _serve(base)
    try:
        peer = RawStdio(proc)
        ready(peer)
        yield peer
    finally:
        _stop(proc)


def ready(peer: RawStdio) -> dict[str, Any]:
    init = peer.reply(peer.send("initialize", INIT))
    peer.send("notifications/initialized", notify=True)
    return init


def test_pr03_unknown_method_is_method_not_found(ready_stdio: RawStdio) -> None:
    stdio = ready_stdio
    reply = stdio.reply(stdio.send("no/such", {}))
    assert reply["error"]["code"] == -32601
    assert stdio.reply(stdio.send("ping"))["result"] == {}


def test_pr04_unknown_tool_is_one_clear_tool_error(ready_stdio: RawStdio) -> None:
    stdio = ready_stdio
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
    first = stdio.reply(stdio.send("initialize", INIT))
    assert first["result"]["serverInfo"]["name"] == "coderx"
    # `initialized` not sent yet: a request is still answered, one way or the other.
    listed = stdio.reply(stdio.send("tools/list", {}), timeout=30)
    assert "result" in listed or "error" in listed
    second = stdio.reply(stdio.send("initialize", INIT), timeout=30)
    assert second.get("result", {}).get("serverInfo") == first["result"]["serverInfo"] or \
        "error" in second, second
    stdio.send("notifications/initialized", notify=True)
    ran = stdio.call("run_command", {"command": "echo fine"})
    assert raw_facts(ran["result"])["stdout"] == "fine\n"


def test_ta13_stdio_opens_no_listener(ready_stdio: RawStdio) -> None:
    stdio = ready_stdio
    assert stdio.call("run_command", {"command": "true"})["result"]["isError"] is False
    assert listening(stdio.proc.pid) == []
