"""``coderx-agent models storage-path|load|unload|rm``, ``whoami``, ``update`` and the
interactive terminal's refusal without a terminal: the real CLI in this process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent.conftest import FakeOllama, cli

from coderx_agent.config import OllamaConfig
from coderx_agent.errors import ConfigError
from coderx_agent.ollama_admin import parse_size, serve_env
from coderx_agent.update import check_due, installer, upgrade_argv


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (the tests run as root)."""
    path.mkdir()
    opts = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_storage_path_refuses_missing_file_read_only_and_too_full_paths(
        agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"XDG_CONFIG_HOME": str(agent_home / "config")}

    def storage(*args: str) -> tuple[int, str]:
        code, out, err = cli(["models", "storage-path", *args], env, tmp_path, monkeypatch)
        return code, out + err

    code, msg = storage(str(tmp_path / "gone"))
    assert code == 2
    assert msg == (f"error: the Ollama storage path {tmp_path / 'gone'} does not exist (is "
                   "its drive mounted?)\n")
    (tmp_path / "file").write_text("x")
    assert storage(str(tmp_path / "file")) == (
        2, f"error: the Ollama storage path {tmp_path / 'file'} is not a directory\n")
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        code, msg = storage(str(ro))
    assert code == 2 and f"{ro} is not writable (Read-only file system)" in msg
    with tmpfs(tmp_path / "small", "1m") as small:
        code, msg = storage(str(small), "--min-free", "20G")
        assert code == 2
        assert "has 1.0M free, less than the 20.0G asked for (--min-free)" in msg
        assert storage(str(small), "--min-free", "lots")[1] == (
            "error: 'lots' is not a size: use a number with K, M, G or T (20G)\n")
        assert storage(str(small), "--min-free", "512K") == (
            0, f"Ollama models will be stored in {small}\n")
    config = (agent_home / "config" / "coderx" / "config.toml").read_text()
    assert f'models_path = "{small}"' in config
    small.rmdir()
    # the drive is gone now: starting `ollama serve` names the path, no silent fallback
    with pytest.raises(ConfigError, match=f"{small} does not exist"):
        serve_env(OllamaConfig(models_path=str(small)))
    assert serve_env(OllamaConfig(models_path=str(tmp_path)), {})["OLLAMA_MODELS"] == str(
        tmp_path)


def test_models_load_unload_rm_through_keep_alive(
        ollama_api: FakeOllama, agent_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"XDG_CONFIG_HOME": str(agent_home / "config"), "CODERX_OLLAMA__HOST": ollama_api.url}
    assert cli(["models", "load", "qwen3:8b"], env, tmp_path, monkeypatch)[:2] == (
        0, "loaded qwen3:8b\n")
    assert cli(["models", "unload", "ollama:qwen3:8b"], env, tmp_path, monkeypatch)[:2] == (
        0, "unloaded qwen3:8b\n")
    assert cli(["models", "rm", "gemma2:2b"], env, tmp_path, monkeypatch)[:2] == (
        0, "removed gemma2:2b\n")
    code, _, err = cli(["models", "rm", "gemma2:2b"], env, tmp_path, monkeypatch)
    assert code == 1 and err == "error: Ollama answered 404: model 'gemma2:2b' not found\n"
    code, _, err = cli(["models", "load", "sonnet"], env, tmp_path, monkeypatch)
    assert code == 2 and "only Ollama models" in err
    sent = [(r["path"], r["model"], r.get("keep_alive")) for r in ollama_api.requests]
    assert sent[:3] == [("/api/generate", "qwen3:8b", "30m"),
                        ("/api/generate", "qwen3:8b", 0), ("/api/delete", "gemma2:2b", None)]


def test_whoami_shows_fingerprints_only(agent_home: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from coderx_agent.account import fingerprint

    key = "sk-ant-WHOAMI-KEY-0123456789"
    env = {"XDG_CONFIG_HOME": str(agent_home / "config"), "ANTHROPIC_API_KEY": key}
    code, out, _ = cli(["whoami"], env, tmp_path, monkeypatch)
    assert code == 0 and key not in out
    assert out.splitlines() == [
        f"anthropic: key {fingerprint(key)} from the environment; model: "
        "anthropic:claude-sonnet-4-5",
        "ollama: no key (none needed for a local Ollama); model: not the configured model "
        "(pick one with --model or /model)"]


def test_update_uses_the_installer_that_installed_it(
        agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli(["update", "--dry-run", "--index-url", "https://pypi.example/simple"],
                       {}, tmp_path, monkeypatch)
    assert code == 0
    assert out == (f"installed with pip: {sys.executable} -m pip install --upgrade "
                   "--index-url https://pypi.example/simple coderx-mcp\n")
    assert installer("/home/u/.local/share/pipx/venvs/coderx-mcp", "pip") == "pipx"
    assert installer("/home/u/.local/share/uv/tools/coderx-mcp", "uv") == "uv-tool"
    assert installer("/srv/venv", "uv\n") == "uv"
    assert upgrade_argv("pipx") == ["pipx", "upgrade", "coderx-mcp"]
    assert upgrade_argv("uv-tool", "https://i/simple") == [
        "uv", "tool", "upgrade", "--index-url", "https://i/simple", "coderx-mcp"]
    stamp = tmp_path / "stamp"
    day = 24 * 3600
    assert check_due(stamp, now=10 * day) and not check_due(stamp, now=10 * day + 3600)
    assert check_due(stamp, now=11 * day + 1)
    assert parse_size("1.5G") == 1610612736


def test_the_terminal_needs_a_terminal(agent_home: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli([], {"XDG_CONFIG_HOME": str(agent_home / "config")}, tmp_path,
                       monkeypatch)
    assert (code, err) == (2, "error: the interactive terminal needs a terminal; run a "
                              "prompt with -p\n")


FAKE_OLLAMA = """#!{python}
import http.server, os, sys
with open({record!r}, "w") as f:
    f.write(os.environ.get("OLLAMA_MODELS", "") + " " + " ".join(sys.argv[1:]))
host, port = os.environ["OLLAMA_HOST"].rsplit(":", 1)


class Version(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{{}}")

    def log_message(self, *args):
        pass


http.server.HTTPServer((host, int(port)), Version).serve_forever()
"""


async def test_start_ollama_applies_the_saved_storage_path_and_stops_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    from coderx_agent.ollama_admin import answers, serving

    bin_dir, record, models = tmp_path / "bin", tmp_path / "record", tmp_path / "models"
    bin_dir.mkdir()
    models.mkdir()
    fake = bin_dir / "ollama"
    fake.write_text(FAKE_OLLAMA.format(python=sys.executable, record=str(record)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config = OllamaConfig(host=f"http://127.0.0.1:{free_port()}", models_path=str(models),
                          start=True)
    async with serving(config, tmp_path / "ollama.log"):
        assert await answers(config.host)
        assert record.read_text() == f"{models} serve"
    assert not await answers(config.host)


def test_start_ollama_with_the_storage_drive_gone_names_the_path(
        agent_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    gone = tmp_path / "usb" / "models"
    env = {"XDG_CONFIG_HOME": str(agent_home / "config"),
           "XDG_DATA_HOME": str(agent_home / "data"),
           "CODERX_OLLAMA__HOST": f"http://127.0.0.1:{free_port()}",
           "CODERX_OLLAMA__MODELS_PATH": str(gone)}
    code, _, err = cli(["-p", "hi", "--model", "ollama:qwen3:8b", "--start-ollama"], env,
                       tmp_path, monkeypatch)
    assert (code, err) == (2, f"error: the Ollama storage path {gone} does not exist (is its "
                              "drive mounted?)\n")


async def test_update_check_reads_the_index_and_finds_a_newer_final_release() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from coderx_agent.update import newer_release

    seen: list[str] = []

    class Index(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers['accept']}")
            body = json.dumps({"name": "coderx-mcp", "versions": [
                "0.1.0", "0.10.0", "0.9.5", "1.0.0rc1"]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/vnd.pypi.simple.v1+json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    try:
        assert await newer_release("0.1.0", url) == "0.10.0"
        assert await newer_release("0.10.0", url) is None
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0] == "/simple/coderx-mcp/ application/vnd.pypi.simple.v1+json"
    assert await newer_release("0.1.0", url) is None  # unreachable: no answer, no error
