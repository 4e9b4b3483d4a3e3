"""The real Claude Code CLI as the MCP host, exactly as the README tells a user to add us.

`claude mcp add coderx -- coderx-mcp serve` run inside a project, then `claude -p`: the
model (a loopback Messages API stand-in speaking SSE) calls our `read_file`, and the answer
carries the project's README — the sandbox's /workspace is the project the user is in.
The CLI (pinned) is installed once from the npm registry into ~/.cache/coderx/claude-code;
its HOME is a temporary directory, so the user's own Claude configuration is never touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import child_env, chown_tree, npm_install

pytestmark = pytest.mark.docker

VERSION = "2.1.332"
SERVE = str(Path(sys.executable).with_name("coderx-mcp"))
TOOL = "mcp__coderx__read_file"


@pytest.fixture(scope="module")
def claude() -> Path:
    return npm_install("@anthropic-ai/claude-code", VERSION, "node_modules/.bin/claude")


def _blocks_sse(blocks: list[dict[str, Any]], stop: str) -> bytes:
    """One assistant message as Messages API server-sent events."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_standin", "type": "message", "role": "assistant", "model": "claude-standin",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1}}}]
    for i, b in enumerate(blocks):
        if b["type"] == "text":
            events += [{"type": "content_block_start", "index": i,
                        "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": b["text"]}}]
        else:
            events += [{"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}},
                {"type": "content_block_delta", "index": i, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(b["input"])}}]
        events.append({"type": "content_block_stop", "index": i})
    events += [{"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5}}, {"type": "message_stop"}]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


class _Model(BaseHTTPRequestHandler):
    """Scripted model: wait for MCP servers if offered, call read_file, then answer with
    what the tool returned. Any side request (titles, token counts) gets a short text."""

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if "count_tokens" in self.path:
            return self._send("application/json", json.dumps({"input_tokens": 10}).encode())
        tools = [t.get("name") for t in body.get("tools", [])]
        blocks = [c for m in body.get("messages", []) if isinstance(m.get("content"), list)
                  for c in m["content"] if isinstance(c, dict)]
        waits = sum(c.get("name") == "WaitForMcpServers" for c in blocks
                    if c.get("type") == "tool_use")
        result = next((c for c in blocks if c.get("type") == "tool_result"
                       and c.get("tool_use_id") == "toolu_read"), None)
        if result is not None:
            reply: list[dict[str, Any]] = [{"type": "text",
                                            "text": "RESULT " + json.dumps(result["content"])}]
            stop = "end_turn"
        elif TOOL in tools:
            reply = [{"type": "tool_use", "id": "toolu_read", "name": TOOL,
                      "input": {"path": "README.md"}}]
            stop = "tool_use"
        elif "WaitForMcpServers" in tools and waits < 6:  # a loaded machine starts us slowly
            reply = [{"type": "tool_use", "id": "toolu_wait", "name": "WaitForMcpServers",
                      "input": {}}]
            stop = "tool_use"
        else:
            reply, stop = [{"type": "text", "text": "no coderx tools offered"}], "end_turn"
        if body.get("stream"):
            return self._send("text/event-stream", _blocks_sse(reply, stop))
        return self._send("application/json", json.dumps({
            "id": "msg_standin", "type": "message", "role": "assistant",
            "model": "claude-standin", "content": reply, "stop_reason": stop,
            "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}).encode())

    def do_GET(self) -> None:
        self._send("application/json", b'{"data": [], "has_more": false}')

    def _send(self, kind: str, data: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def model_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Model)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _claude(exe: Path, cwd: Path, home: Path, *args: str, model: str = "") -> str:
    env = {k: v for k, v in child_env().items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(HOME=str(home), ANTHROPIC_BASE_URL=model, ANTHROPIC_API_KEY="sk-test-standin",
               MCP_TIMEOUT="120000",  # server start-up, ms (Python imports on a loaded machine)
               ENABLE_TOOL_SEARCH="false", DISABLE_TELEMETRY="1",
               DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    r = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("with_workspace", [False, True])
def test_claude_code_mcp_add_sees_the_project(claude: Path, model_url: str, tmp_path: Path,
                                              with_workspace: bool) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# The project Claude Code was started in\n")
    chown_tree(project)
    home = tmp_path / "home"
    home.mkdir()
    extra = ["--workspace", str(project)] if with_workspace else []
    # The README's line, as typed inside the project (or elsewhere, with --workspace).
    cwd = project if not with_workspace else home
    out = _claude(claude, cwd, home, "mcp", "add", "coderx", "--", SERVE, "serve", *extra)
    assert "Added stdio MCP server coderx" in out
    answer = _claude(claude, cwd, home, "-p", "What does the README say?",
                     "--allowedTools", TOOL, model=model_url)
    assert "The project Claude Code was started in" in answer, answer
