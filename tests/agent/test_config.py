"""Layered config, ``config show|set|unset``, memory files, saved conversations, models list."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.agent.conftest import FakeAnthropic, FakeOllama
from typer.testing import CliRunner

from coderx_agent.cli import app
from coderx_agent.config import load_config, user_config_path
from coderx_agent.conversations import ConversationStore
from coderx_agent.errors import ConfigError, ConversationError
from coderx_agent.memory import load_memory
from coderx_agent.messages import Message, ToolUseBlock


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_layers_user_project_env_flags_with_origins(agent_home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    sub = repo / "pkg"
    sub.mkdir()
    user = write(user_config_path(), 'model = "haiku"\nmax_turns = 7\n[ollama]\nnum_ctx = 8192\n'
                 '[mcpServers.gh]\ncommand = "gh-mcp"\nallow = ["search_*"]\n')
    project = write(repo / ".coderx" / "config.toml", "max_turns = 9\ncompact_at = 0.5\n")
    monkeypatch.setenv("CODERX_COMPACT_AT", "0.6")
    monkeypatch.setenv("CODERX_OLLAMA__HOST", "http://gpu:11434")
    monkeypatch.setenv("CODERX_WORKSPACE", "/ignored")  # the server's setting, not ours
    loaded = load_config(sub, {"max_turns": 3, "model": None})
    c = loaded.config
    assert (c.model, c.max_turns, c.compact_at) == ("haiku", 3, 0.6)
    assert (c.ollama.num_ctx, c.ollama.host) == (8192, "http://gpu:11434")
    assert c.mcpServers["gh"].allow == ["search_*"]
    origins = loaded.origins()
    assert origins["model"] == f"user ({user})"
    assert origins["max_turns"] == "flag"
    assert origins["compact_at"] == "env"
    assert origins["ollama.num_ctx"] == f"user ({user})"
    assert origins["keep_recent"] == "default"
    assert project.read_text() == "max_turns = 9\ncompact_at = 0.5\n"  # never rewritten


def test_invalid_files_name_file_line_and_key(agent_home: Path, tmp_path: Path) -> None:
    path = write(user_config_path(), "max_turns = 3\n[anthropic]\ntimeout_s = 1\n"
                 "[ollama]\ntimeout_s = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert str(err.value) == (f"{path}:5: ollama.timeout_s: Input should be greater than 0")
    write(path, "max_turnz = 3\n")
    with pytest.raises(ConfigError, match=r"config.toml:1: max_turnz: Extra inputs"):
        load_config(tmp_path)
    write(path, "max_turns = = 3\n")
    with pytest.raises(ConfigError, match=r"config.toml: invalid TOML: .*line 1"):
        load_config(tmp_path)
    write(path, '[mcpServers.x]\nargs = ["a"]\n')
    with pytest.raises(ConfigError, match="exactly one of `command`"):
        load_config(tmp_path)


def test_config_commands(agent_home: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    assert run(app, ["config", "set", "ollama.num_ctx", "32768"]).exit_code == 0
    assert run(app, ["config", "set", "model", "ollama:qwen3:8b", "--project"]).exit_code == 0
    assert user_config_path().read_text() == "[ollama]\nnum_ctx = 32768\n"
    assert (tmp_path / ".coderx" / "config.toml").read_text() == 'model = "ollama:qwen3:8b"\n'
    bad = run(app, ["config", "set", "max_turns", "0"])
    assert bad.exit_code == 2
    assert bad.stderr == "error: not set: max_turns: Input should be greater than 0\n"
    shown = run(app, ["config", "show", "--origin"]).stdout
    assert any(line.startswith("ollama.num_ctx = 32768") and "# user (" in line
               for line in shown.splitlines())
    assert any(line.startswith('model = "ollama:qwen3:8b"') and "# project (" in line
               for line in shown.splitlines())
    assert run(app, ["config", "unset", "ollama.num_ctx"]).exit_code == 0
    assert "ollama.num_ctx = 16384" in run(app, ["config", "show"]).stdout
    missing = run(app, ["config", "unset", "ollama.num_ctx"])
    assert missing.exit_code == 2 and "ollama.num_ctx is not set" in missing.stderr


def test_config_set_keeps_comments_and_layout(agent_home: Path) -> None:
    """A user's file is edited, not regenerated: comments and other keys stay as written."""
    path = user_config_path()
    original = ("# my agent settings\nmax_turns = 7  # enough for me\n\n"
                "[ollama]\n# the big box\nhost = \"http://127.0.0.1:11434\"\n")
    write(path, original)
    assert CliRunner().invoke(app, ["config", "set", "ollama.num_ctx", "8192"]).exit_code == 0
    text = path.read_text()
    assert text.startswith(original.rstrip("\n")) and "num_ctx = 8192" in text
    assert CliRunner().invoke(app, ["config", "unset", "ollama.num_ctx"]).exit_code == 0
    assert path.read_text() == original


def test_memory_is_loaded_user_then_root_then_cwd(tmp_path: Path) -> None:
    user, repo = tmp_path / "user", tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    write(user / "CODERX.md", "USER-MEMORY")
    write(repo / "AGENTS.md", "ROOT-AGENTS")
    write(repo / "CLAUDE.md", "ROOT-CLAUDE")
    write(repo / "src" / "app" / "CODERX.md", "APP-MEMORY")
    write(tmp_path / "CODERX.md", "ABOVE-THE-REPO")
    text = load_memory(repo / "src" / "app", ["CODERX.md", "AGENTS.md", "CLAUDE.md"], user)
    order = [text.index(s) for s in ("USER-MEMORY", "ROOT-AGENTS", "ROOT-CLAUDE",
                                     "APP-MEMORY")]
    assert order == sorted(order)
    assert "ABOVE-THE-REPO" not in text
    assert load_memory(tmp_path / "nowhere", ["CODERX.md"], tmp_path / "no-user") == ""


def test_conversation_store_finds_forks_and_survives_a_torn_line(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "c")
    conv = store.create(tmp_path, "anthropic:claude-sonnet-4-5", "plan")
    conv.append(Message.user("hello"))
    conv.append(Message(role="assistant", content=[ToolUseBlock(id="t1", name="read_file")]))
    with conv.path.open("a") as f:
        f.write('{"type": "message", "message": {"role": "us')  # kill -9 mid-write
    loaded = store.load(store.find(conv.id[:17]))
    assert [m.role for m in loaded.messages] == ["user", "assistant"]
    assert loaded.unanswered_tool_uses() == ["t1"]
    assert store.last_in(tmp_path).stem == conv.id
    fork = store.fork(loaded)
    assert fork.header.parent == conv.id and len(fork.messages) == 2
    with pytest.raises(ConversationError, match="2 conversations start with"):
        store.find(conv.id[:9])
    with pytest.raises(ConversationError, match="no saved conversation in"):
        store.last_in(tmp_path / "elsewhere")
    assert [h.id for h in store.listing()] == [fork.id, conv.id]  # newest first


def test_models_list_shows_both_providers(agent_home: Path, anthropic_api: FakeAnthropic,
                                          ollama_api: FakeOllama, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"ANTHROPIC_API_KEY": "sk-test", "CODERX_ANTHROPIC__BASE_URL": anthropic_api.url,
           "CODERX_OLLAMA__HOST": ollama_api.url}
    out = CliRunner().invoke(app, ["models", "list"], env=env).stdout.splitlines()
    assert out[0].startswith("anthropic:claude-sonnet-4-5") and "Claude Sonnet 4.5" in out[0]
    assert any(line.startswith("ollama:qwen3:8b") and "no tool support" not in line
               for line in out)
    assert any(line.startswith("ollama:gemma2:2b") and "no tool support" in line
               for line in out)
    no_key = CliRunner().invoke(app, ["models", "list"],
                                env={"CODERX_OLLAMA__HOST": ollama_api.url}).stdout
    assert "anthropic: unavailable (no Anthropic API key" in no_key
    pulled = CliRunner().invoke(app, ["models", "pull", "ollama:qwen3:8b"], env=env)
    assert pulled.exit_code == 0, pulled.output
    assert ollama_api.requests[-1]["model"] == "qwen3:8b"
