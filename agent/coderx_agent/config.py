"""The agent's configuration: one pydantic-settings model, read in layers.

user ``~/.config/coderx/config.toml`` < project ``.coderx/config.toml`` (the nearest one
from the current directory up to the repository root) < ``CODERX_*`` environment
(``CODERX_ANTHROPIC__MAX_TOKENS=4096``) < command-line flags. Files are read, never
rewritten with defaults; ``config set|unset`` change one key of one file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from coderx_agent.errors import ConfigError

PermissionMode = Literal["ask", "accept-edits", "plan", "yolo"]


class AnthropicConfig(BaseModel):
    """The Anthropic provider."""

    model_config = ConfigDict(extra="forbid")
    base_url: str | None = None
    """API base URL (None: the SDK's default, or ``ANTHROPIC_BASE_URL``)."""
    max_tokens: int = Field(8192, gt=0)
    """Cap on the tokens of one reply."""
    max_retries: int = Field(4, ge=0, le=10)
    """Retries of 429/529/5xx and connection errors (the SDK honours ``retry-after``)."""
    timeout_s: float = Field(600.0, gt=0)
    """Timeout of one request."""
    context_window: int = Field(200_000, gt=0)
    """Tokens the model reads at most; compaction works against it."""


class OllamaConfig(BaseModel):
    """The Ollama provider."""

    model_config = ConfigDict(extra="forbid")
    host: str = "http://127.0.0.1:11434"
    """Where Ollama listens."""
    num_ctx: int = Field(16384, ge=512)
    """Context size sent with every request (Ollama's own default truncates silently)."""
    timeout_s: float = Field(600.0, gt=0)
    """Timeout of one request."""
    models_path: str | None = None
    """Where a local ``ollama serve`` started by the agent keeps its models
    (``OLLAMA_MODELS``); set it with ``coderx-agent models storage-path``."""
    start: bool = False
    """Start ``ollama serve`` when nothing answers at ``host`` (``--start-ollama``)."""


class ServerEntry(BaseModel):
    """One MCP server, in Claude Desktop's ``mcpServers`` shape plus our filters."""

    model_config = ConfigDict(extra="forbid")
    command: str | None = None
    """Program of a stdio server."""
    args: list[str] = Field(default_factory=list)
    """Its arguments."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment of a stdio server (it gets no API keys of ours)."""
    url: str | None = None
    """URL of a streamable HTTP server (instead of ``command``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers (e.g. ``Authorization``)."""
    allow: list[str] = Field(default_factory=list)
    """Tool name globs to expose (empty: all)."""
    deny: list[str] = Field(default_factory=list)
    """Tool name globs to hide (wins over ``allow``)."""
    timeout_s: float = Field(120.0, gt=0)
    """Longest a tool call may take before the model gets a timeout error."""

    @model_validator(mode="after")
    def _one_transport(self) -> ServerEntry:
        if (self.command is None) == (self.url is None):
            raise ValueError("a server needs exactly one of `command` (stdio) or `url` (HTTP)")
        return self


class PermissionsConfig(BaseModel):
    """Which tools run without asking."""

    model_config = ConfigDict(extra="forbid")
    mode: PermissionMode = "accept-edits"
    """``ask``: every non-read-only tool asks (interactive only); ``accept-edits``: reads and
    file edits run, others ask; ``plan``: read-only tools only; ``yolo``: everything runs
    (it all runs in the container). Headless never asks: what would ask is refused."""
    allow: list[str] = Field(default_factory=list)
    """Rules ``tool`` or ``tool(glob)`` (glob over the string arguments) that always run."""
    deny: list[str] = Field(default_factory=list)
    """Rules that never run (win over ``allow`` and the mode)."""


class UIConfig(BaseModel):
    """The interactive terminal."""

    model_config = ConfigDict(extra="forbid")
    vi_mode: bool = False
    """vi key bindings at the prompt (``/vim`` toggles and saves this)."""
    update_check: bool = False
    """Look for a newer release on start (at most once a day)."""


DEFAULT_ALIASES = {"opus": "anthropic:claude-opus-4-5", "sonnet": "anthropic:claude-sonnet-4-5",
                   "haiku": "anthropic:claude-haiku-4-5"}


class AgentConfig(BaseSettings):
    """Everything the agent can be told (flags override the same keys)."""

    model_config = SettingsConfigDict(env_prefix="CODERX_", env_nested_delimiter="__",
                                      extra="forbid")
    model: str = "sonnet"
    """``provider:model-id`` or an alias."""
    aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ALIASES))
    """Short names for models."""
    max_turns: int = Field(100, gt=0)
    """Model turns per prompt."""
    max_budget_usd: float | None = Field(None, gt=0)
    """Spend cap of a run; a turn whose estimate would pass it is refused."""
    compact_at: float = Field(0.8, gt=0.1, le=1.0)
    """Fraction of the model's context at which older turns are summarised."""
    keep_recent: int = Field(6, ge=2)
    """Messages kept verbatim by compaction."""
    server_url: str | None = None
    """The coderx-mcp server over streamable HTTP (default: start ``coderx-mcp serve``)."""
    server_timeout_s: float = Field(600.0, gt=0)
    """Longest a coderx tool call may take."""
    mcpServers: dict[str, ServerEntry] = Field(default_factory=dict)
    """More MCP servers; their tools are named ``mcp__<server>__<tool>``."""
    permissions: PermissionsConfig = Field(default_factory=PermissionsConfig)
    """Tool permissions."""
    memory_files: list[str] = Field(default_factory=lambda: ["CODERX.md", "AGENTS.md",
                                                             "CLAUDE.md"])
    """Project memory file names, loaded from the user's config dir, the repository root
    and every directory down to the current one."""
    anthropic: AnthropicConfig = Field(default_factory=AnthropicConfig)
    """The Anthropic provider."""
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    """The Ollama provider."""
    ui: UIConfig = Field(default_factory=UIConfig)
    """The interactive terminal."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The layers are merged by ``load_config`` (which also records their origins).
        return (init_settings,)


def user_config_path() -> Path:
    """``~/.config/coderx/config.toml`` (honours ``XDG_CONFIG_HOME``)."""
    return Path(platformdirs.user_config_dir("coderx")) / "config.toml"


def project_config_path(cwd: Path) -> Path:
    """The nearest ``.coderx/config.toml`` up to the repository root, else the one in cwd."""
    for d in (cwd, *cwd.parents):
        if (d / ".coderx" / "config.toml").is_file():
            return d / ".coderx" / "config.toml"
        if (d / ".git").exists():
            break
    return cwd / ".coderx" / "config.toml"


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's table ({} when absent); a syntax error names the file and line."""
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (leaves only)."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, tables merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k),
                                                                          dict) else v
    return out


def _line_of(path: Path, key: str) -> int | None:
    """The line where the dotted ``key`` is assigned in a TOML file (for error messages):
    ``a.b.c`` is ``c = …`` under ``[a.b]``, or ``b.c = …`` under ``[a]``, and so on."""
    table = ""
    assign = re.compile(r"^\s*([\w.\"'-]+)\s*=")
    header = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if m := header.match(line):
            table = m[1].replace('"', "").replace("'", "").replace(" ", "")
        elif m := assign.match(line):
            name = m[1].replace('"', "").replace("'", "")
            full = f"{table}.{name}" if table else name
            if full == key or key.startswith(full + "."):
                return n
    return None


class Layer(BaseModel):
    """One source of settings."""

    name: str
    """``user``, ``project``, ``env`` or ``flag``."""
    path: Path | None = None
    values: dict[str, Any]


class LoadedConfig(BaseModel):
    """The effective configuration and where each key came from."""

    config: AgentConfig
    layers: list[Layer]

    def origins(self) -> dict[str, str]:
        """Dotted key → the layer that set it (``default`` when none did)."""
        out = dict.fromkeys(flatten(self.config.model_dump(mode="json")), "default")
        for layer in self.layers:
            for key in flatten(layer.values):
                out[key] = f"{layer.name} ({layer.path})" if layer.path else layer.name
        return out


def load_config(cwd: Path, flags: Mapping[str, Any] | None = None,
                user_path: Path | None = None) -> LoadedConfig:
    """Read every layer and validate the merge.

    Raises:
        ConfigError: A file is not TOML, or a value is invalid (names file, line and key).
    """
    user = user_path or user_config_path()
    project = project_config_path(cwd)
    env = EnvSettingsSource(AgentConfig, env_prefix="CODERX_", env_nested_delimiter="__",
                            case_sensitive=False)()
    layers = [Layer(name="user", path=user, values=read_toml(user)),
              Layer(name="project", path=project, values=read_toml(project)),
              Layer(name="env", values=env),
              Layer(name="flag", values={k: v for k, v in (flags or {}).items()
                                         if v is not None})]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer.values)
    try:
        config = AgentConfig(**merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, layers)) from None
    return LoadedConfig(config=config, layers=[la for la in layers if la.values])


def _explain(exc: ValidationError, layers: list[Layer]) -> str:
    """The first problem as ``file:line: key: message``."""
    e = exc.errors(include_input=False, include_url=False)[0]
    key = ".".join(str(p) for p in e["loc"])
    for layer in reversed(layers):
        keys = flatten(layer.values)
        if any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in keys):
            if layer.path is None:
                where = "the environment" if layer.name == "env" else "the command line"
                return f"invalid setting {key} from {where}: {e['msg']}"
            line = _line_of(layer.path, key)
            return f"{layer.path}{f':{line}' if line else ''}: {key}: {e['msg']}"
    return f"invalid setting {key}: {e['msg']}"
