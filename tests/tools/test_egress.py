"""Network egress by allowlist: a session's only way out is the server's proxy.

A loopback HTTPS server on the host stands in for a package index (``localhost`` is
allowed); the proxy resolves and reaches it for the container, refuses other hosts with
a 403 naming the reason, and records every request in the session's history. A direct
connection from the container goes nowhere (internal network, no DNS).
"""

import asyncio
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.conftest import CLI, child_env
from tests.tools.conftest import err, ok, write_host_file

from coderx_mcp.config import EgressSettings, Settings
from coderx_mcp.egress.rules import allowed, check_rule
from coderx_mcp.errors import ConfigError
from coderx_mcp.principals import PrincipalPolicy, TokenStore
from coderx_mcp.quotas import Quotas
from coderx_mcp.server import build_server

FETCH = """\
import os, socket, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="/workspace/ca.pem")
for url in sys.argv[1:]:
    try:
        print(url, "->", urllib.request.urlopen(url, context=ctx, timeout=10).read().decode())
    except Exception as e:
        print(url, "-> FAILED", e)
try:
    socket.create_connection(("1.1.1.1", 443), timeout=3)
    print("direct: CONNECTED")
except OSError as e:
    print("direct: fails", e)
print("proxy:", os.environ.get("HTTPS_PROXY"), os.environ.get("PIP_PROXY"))
print("pip.conf:", open(os.path.expanduser("~/.config/pip/pip.conf")).read().split()[-1])
"""


@pytest.fixture
def index_server(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for localhost."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)

    class Index(BaseHTTPRequestHandler):
        def log_message(self, *_a: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = b"index ok"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], cert.read_bytes()
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.docker
async def test_allowlist_session_reaches_allowed_host_only(
        make_settings: Callable[..., Settings], tool_workspace: Path,
        index_server: tuple[int, bytes]) -> None:
    port, cert = index_server
    write_host_file(tool_workspace, "ca.pem", cert)
    write_host_file(tool_workspace, "fetch.py", FETCH.encode())
    server = build_server(make_settings(egress=EgressSettings(enabled=True,
                                                              allow=["localhost"])))
    async with Client(server) as c:
        sid = (await ok(c, "session_open", network="allowlist"))["session"]
        r = await ok(c, "run_command", session=sid, timeout=60, command=(
            f"python3 fetch.py https://localhost:{port}/simple/ https://example.com/"))
        out = r["stdout"]
        assert f"https://localhost:{port}/simple/ -> index ok" in out, out
        assert "https://example.com/ -> FAILED" in out and "403" in out, out
        assert "example.com is not in this session's egress allowlist" in out, out
        assert "direct: fails" in out, out
        assert "proxy: http://" in out and "None" not in out.split("proxy:")[1], out
        # Every request is in the session's history: host, verdict, bytes.
        end = time.monotonic() + 20
        while True:
            doc = (await ok(c, "history_export", session=sid, format="json"))["document"]
            egress = [e for e in json.loads(doc) if e["tool"] == "egress"]
            if len(egress) >= 2 or time.monotonic() > end:
                break
            await asyncio.sleep(0.3)
        seen = {e["args"]["host"]: e for e in egress}
        assert seen["localhost"]["outcome"] == "ok", egress
        assert seen["localhost"]["summary"].startswith(f"allowed CONNECT localhost:{port}")
        assert int(seen["localhost"]["summary"].split(", ")[1].split()[0]) > 0
        assert seen["example.com"]["outcome"] == "error"
        assert seen["example.com"]["summary"].startswith("denied CONNECT example.com:443")


async def test_allowlist_is_the_operators_decision(make_settings: Callable[..., Settings]
                                                   ) -> None:
    server = build_server(make_settings(backend="local"))
    async with Client(server) as c:
        text = await err(c, "session_open", network="allowlist")
    assert "network='allowlist' is off on this server" in text
    assert "CODERX_EGRESS__ENABLED=1" in text


def test_allowlist_rules() -> None:
    assert allowed("PyPI.org.", ["pypi.org"]) and not allowed("evil-pypi.org", ["pypi.org"])
    assert allowed("files.pythonhosted.org", ["*.pythonhosted.org"])
    assert not allowed("pythonhosted.org", ["*.pythonhosted.org"])
    assert not allowed("pythonhosted.org.evil.com", ["*.pythonhosted.org"])
    assert check_rule(" *.Example.COM. ") == "*.example.com"
    for bad in ("*", "a b", "http://x.org", "*.*.org", "x.org/path", "-x.org"):
        with pytest.raises(ValueError, match="allowlist rule"):
            check_rule(bad)
    with pytest.raises(ValueError, match="allowlist rule"):
        EgressSettings(allow=["pypi.org:443"])
    assert PrincipalPolicy(egress=("PyPI.org",)).egress == ("pypi.org",)
    with pytest.raises(ValueError, match=r"network \(the default\) must be none or bridge"):
        Settings(network="allowlist")


def test_principal_allowlist_and_network_refusal(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(egress=EgressSettings(enabled=True, allow=["pypi.org"]))
    own = Quotas(s, lambda o: PrincipalPolicy(egress=("registry.npmjs.org",))
                 if o == "principal:a" else PrincipalPolicy(network=False))
    assert own.egress_allow("principal:a") == ["registry.npmjs.org"]
    assert own.egress_allow("principal:b") == ["pypi.org"]
    with pytest.raises(ConfigError, match="does not allow network access"):
        own.limits("principal:b", "allowlist", None, None)


def test_tokens_create_takes_an_egress_list(tmp_path: Path) -> None:
    env = child_env(CODERX_STATE_DIR=str(tmp_path / "state"))
    bad = subprocess.run([*CLI, "tokens", "create", "alice", "--egress", "pypi.org/simple"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "--egress" in bad.stderr and "allowlist rule" in bad.stderr
    done = subprocess.run([*CLI, "tokens", "create", "alice", "--egress", "PyPI.org",
                           "--egress", "*.pythonhosted.org"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    policy = TokenStore(tmp_path / "state" / "tokens.json").policy("alice")
    assert policy is not None and policy.egress == ("pypi.org", "*.pythonhosted.org")
