"""Settings of the server: one pydantic-settings model, read from ``CODERX_*`` variables.

Nested fields use ``__``: ``CODERX_LIMITS__MEMORY=2g``. Every field says what it is for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SIZE = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)

Network = Literal["none", "bridge", "allowlist"]


def parse_size(text: str) -> int:
    """Turn ``512m``/``2g``/``65536`` into bytes.

    Args:
        text: A size with an optional k, m or g suffix (powers of 1024).

    Returns:
        The size in bytes.

    Raises:
        ValueError: If the text is not such a size.
    """
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size like 512m or 2g")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/coderx")
    return Path.home() / ".local" / "share" / "coderx"


class SandboxLimits(BaseModel):
    """Resource limits of one sandbox container."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory: str = "1g"
    """Memory limit; swap is limited to the same value, so no swap is used."""
    cpus: float = Field(1.0, gt=0, le=64)
    """CPU quota in cores (Docker ``NanoCpus``)."""
    pids: int = Field(256, ge=16, le=65536)
    """Maximum number of processes and threads (stops fork bombs)."""
    nofile: int = Field(4096, ge=64, le=1048576)
    """Open-file limit (soft and hard)."""
    tmp_size: str = "256m"
    """Size of the ``/tmp`` tmpfs (``noexec,nosuid``)."""
    home_size: str = "64m"
    """Size of the home-directory tmpfs."""
    spool_size: str = "512m"
    """Size of the tmpfs that holds the runner's state and spooled command output."""

    @field_validator("memory", "tmp_size", "home_size", "spool_size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v


class KubernetesSettings(BaseModel):
    """Where and how the ``kubernetes`` backend runs a Pod per session (docs/kubernetes.md).

    The cluster comes from ``KUBECONFIG`` (or ``~/.kube/config``), else the in-cluster
    service account.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "coderx"
    """Namespace of the sandbox Pods, claims and network policies."""
    context: str | None = None
    """kubeconfig context; None: the current one."""
    runtime_class: str | None = None
    """``runtimeClassName`` of the Pods (e.g. ``gvisor``, ``kata``); None: the node default."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """How nodes get the sandbox image (``Never``: preloaded on every node)."""
    ephemeral_storage: str = "1g"
    """Ephemeral-storage limit (and request) of a sandbox container."""
    workspace_claim: str | None = None
    """An existing PersistentVolumeClaim holding the workspaces, mounted into the server at
    ``workspace_root``: a workspace under that root is mounted by sub-path (bind). None: a
    fresh claim per session (an empty workspace)."""
    workspace_root: Path | None = None
    """Where the server sees ``workspace_claim``."""
    workspace_size: str = "10Gi"
    """Storage request of a per-session workspace claim."""
    storage_class: str | None = None
    """Storage class of per-session claims; None: the cluster default."""
    api_timeout_s: float = Field(30.0, gt=0)
    """Timeout of one API request; also the longest wait for a Pod to start running."""

    @field_validator("ephemeral_storage")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v

    @model_validator(mode="after")
    def _claim_has_root(self) -> KubernetesSettings:
        if (self.workspace_claim is None) != (self.workspace_root is None):
            raise ValueError("workspace_claim and workspace_root go together: the claim is "
                             "mounted into the server at the root")
        return self

TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


class DockerHostConfig(BaseModel):
    """One Docker engine of ``CODERX_DOCKER_HOSTS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    """``tcp://host:port`` (needs ``tls``), ``ssh://user@host[:port]`` or ``unix:///path``."""
    tls: Path | None = None
    """Directory with ``ca.pem`` (the engine's CA), ``cert.pem`` and ``key.pem`` (this
    server's client certificate), as ``DOCKER_CERT_PATH`` holds them."""
    name: str | None = None
    """Shown in health and logs; default: the URL's host (and port)."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("tcp", "ssh", "unix"):
            raise ValueError(f"docker host {v!r} must start with tcp://, ssh:// or unix://")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError(f"docker host {v!r} names no socket path")
        if parts.scheme != "unix":
            if not parts.hostname:
                raise ValueError(f"docker host {v!r} names no host")
            try:
                port = parts.port
            except ValueError:
                raise ValueError(f"docker host {v!r} has a bad port") from None
            if parts.scheme == "tcp" and port is None:
                raise ValueError(f"docker host {v!r} needs a port (2376 for TLS)")
        return v

    @model_validator(mode="after")
    def _tls(self) -> DockerHostConfig:
        scheme = urlsplit(self.url).scheme
        if scheme == "tcp" and self.tls is None:
            raise ValueError(f"docker host {self.url} needs \"tls\": a directory with "
                             "ca.pem, cert.pem and key.pem (plain TCP gives anyone root)")
        if scheme != "tcp" and self.tls is not None:
            raise ValueError(f"docker host {self.url}: \"tls\" applies to tcp:// only")
        if self.tls is not None:
            missing = [f for f in TLS_FILES if not (self.tls / f).is_file()]
            if missing:
                raise ValueError(f"docker host {self.url}: {', '.join(missing)} missing in "
                                 f"{self.tls}")
        return self

    @property
    def label(self) -> str:
        """The name shown for this engine."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        return parts.path if parts.scheme == "unix" else parts.netloc
class EgressSettings(BaseModel):
    """``network="allowlist"`` sessions: HTTP(S) out through the server's proxy only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    """Let sessions ask for ``network="allowlist"`` (the operator's decision)."""
    allow: list[str] = []
    """Hosts (``pypi.org``) and ``*.domain`` rules sessions may reach; a principal's
    token may set its own list (``egress`` in its policy)."""

    @field_validator("allow")
    @classmethod
    def _rules(cls, v: list[str]) -> list[str]:
        from coderx_mcp.egress.rules import check_rule

        return [check_rule(r) for r in v]


class AgentRunSettings(BaseModel):
    """Delegated agent runs (``agent_run``): their model, key and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "anthropic:claude-sonnet-4-5"
    """Default model, ``anthropic:<id>`` or ``ollama:<id>`` (``model="host"`` asks the
    MCP host through sampling instead)."""
    api_key: str = Field("ANTHROPIC_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    """Key-store name of the Anthropic API key (the environment variable of that name
    when the store has none); never shown to the model."""
    anthropic_base_url: str | None = None
    """Messages API base URL (None: Anthropic's)."""
    ollama_host: str = "http://127.0.0.1:11434"
    """Ollama's address."""
    max_runs_per_principal: int = Field(2, ge=1, le=100)
    """Runs one principal may have working at once."""
    max_turns: int = Field(50, ge=1, le=1000)
    """Default and ceiling of ``max_turns`` per request."""
    max_budget_usd: float | None = Field(None, gt=0)
    """Ceiling of ``max_budget_usd`` per run (None: no ceiling)."""
    allow: list[str] = ["run_command", "read_output", "process_*"]
    """Permission rules allowed in every mode but plan: a run works in its own sandbox on
    its own branch, and cannot ask anyone."""


class Settings(BaseSettings):
    """All settings of a Coder-X MCP server."""

    model_config = SettingsConfigDict(
        env_prefix="CODERX_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    backend: Literal["docker", "local", "kubernetes"] = "docker"
    """Sandbox backend. ``local`` runs commands on the host WITHOUT isolation (development only);
    ``kubernetes`` runs a Pod per session (docs/kubernetes.md)."""
    image: str = "coderx-sandbox:latest"
    """Docker image of the sandbox (built by ``coderx-mcp image build``)."""
    kubernetes: KubernetesSettings = KubernetesSettings()
    """The ``kubernetes`` backend (``CODERX_KUBERNETES__NAMESPACE`` and so on)."""
    docker_hosts: list[DockerHostConfig] = []
    """Docker engines to place sessions on (``CODERX_DOCKER_HOSTS='[{"url":
    "tcp://host:2376", "tls": "/etc/coderx/host1"}, {"url": "ssh://coder@host2"}]'``): each
    new session goes to the least-loaded engine that answers, and the sandbox image is
    copied from the local engine to a host that lacks it. Empty: the local engine
    (``DOCKER_HOST``). Workspace paths must exist on every host (a shared file system)."""
    workspace: Path | None = None
    """Default workspace (``serve --workspace``, the first one when repeated): mounted for
    sessions opened without one. None: the host's MCP roots (stdio), else the server's
    current directory unless that is ``/``, the home directory or a system directory, else
    a scratch directory per session."""
    workspace_roots: list[Path] = []
    """Directories inside which ``session_open(workspace=...)`` may mount a workspace
    (``serve --workspace`` repeated, or ``CODERX_WORKSPACE_ROOTS='["/srv/a", "/srv/b"]'``).
    Operator configuration, never tool input. The default workspace is always allowed.
    Empty and no roots from the MCP host: sessions get scratch workspaces only."""
    client_roots: bool = True
    """On stdio (and in memory), use the MCP host's ``roots/list`` when no workspace or roots
    are configured: a ``file://`` root becomes an allowed root, the first one the default."""
    use_cwd: bool = True
    """When nothing else chooses a default workspace, use the server's current directory
    (unless it is ``/``, the home directory or a system directory)."""
    data_dir: Path = Field(default_factory=lambda: _default_data_dir())
    """Where the server creates the workspaces it owns (``scratch/``, ``copies/``,
    ``worktrees/``), their diff baselines and records. Never usable as a workspace.
    Default: ``~/.local/share/coderx``, or ``/var/lib/coderx`` for root (whose home is not
    reachable by the users that git runs as for worktrees)."""
    state_dir: Path = Path.home() / ".local" / "state" / "coderx"
    """Server state (instance records)."""
    network: Network = "none"
    """Default network of a session: ``none`` (no interface but loopback) or ``bridge``."""
    allow_network: bool = False
    """Whether a session may ask for ``bridge`` networking (session_open's ``network``).
    Network is the operator's decision (``--allow-network``), never the model's: off by
    default, and the ``network`` default above applies whatever this says."""
    limits: SandboxLimits = SandboxLimits()
    """Default resource limits of a session's container."""
    max_memory: str = "8g"
    """Largest memory limit a session may ask for."""
    max_cpus: float = 4.0
    """Largest CPU quota a session may ask for."""
    sandbox_uid: int | None = Field(None, ge=1, le=2**31 - 2)
    """Uid (and gid) the sandbox runs as. None: the workspace owner's uid (so files the
    sandbox creates belong to that user). The sandbox never runs as root and the server
    never changes the owner of a directory it did not create: a workspace this uid cannot
    write is refused with the fix."""
    scratch_uid: int = Field(1000, ge=1, le=2**31 - 2)
    """Owner of scratch workspaces the server creates when it runs as root (otherwise they
    belong to the server's user); ``sandbox_uid`` wins when set."""
    copy_ignored: bool = False
    """``mode="copy"``: also copy files the repository's ``.gitignore`` excludes
    (``node_modules``, build output). Off: a git repository is copied as ``git ls-files``
    sees it (tracked and untracked-not-ignored files, plus ``.git``)."""
    git_author: str = "Coder-X agent <coderx@localhost>"
    """Author and committer of ``session_commit`` commits and of commits made inside a
    worktree session (``Name <email>``)."""
    shared_sessions: bool = False
    """Server replicas (``serve --http`` behind one load balancer) share sessions: each
    session is found by its container's labels, so any replica serves it and it outlives
    the replica that opened it; orphans are reaped by heartbeat (``state_dir/sessions``,
    shared by the replicas) after ``idle_timeout_s``. The warm pool is off. See
    docs/remote-docker.md."""
    max_sessions: int = Field(16, ge=1, le=1000)
    """Maximum number of open sessions (all principals together)."""
    max_sessions_per_principal: int = Field(4, ge=1, le=1000)
    """Sessions one HTTP principal may hold at once (a managed token's ``--max-sessions``
    overrides it). The local owner (stdio) is bound by ``max_sessions`` only."""
    reserved_sessions: int = Field(4, ge=0, le=1000)
    """Session slots kept for principals holding none yet: a principal that already has a
    session cannot take the last ones, so one principal never locks the others out."""
    max_commands_per_principal: int = Field(8, ge=1, le=1000)
    """``run_command`` calls one HTTP principal may have running at once."""
    max_request_bytes: int = Field(32 << 20, ge=1 << 16)
    """Largest HTTP request body; larger ones get 413 before anything is parsed."""
    max_argument_keys: int = Field(10000, ge=100)
    """Most keys and list items a tool call's arguments may hold, counted before they are
    validated (a huge dictionary of unknown keys must not stall other principals)."""
    auth_failures_per_minute: int = Field(10, ge=1)
    """Failed HTTP authentications one client address may make per minute; after that it
    gets 429 until the minute has passed."""
    idle_timeout_s: float = Field(1800.0, gt=0)
    """Sessions unused this long are closed and their containers removed."""
    reaper_interval_s: float = Field(30.0, gt=0)
    """How often idle sessions are looked for."""
    pool_size: int = Field(1, ge=0, le=32)
    """Pre-started containers kept ready for the default workspace (0 disables the pool)."""
    start_timeout_s: float = Field(30.0, gt=0)
    """Longest wait for a container and its runner to come up."""
    docker_timeout_s: float = Field(30.0, gt=0)
    """Timeout of Docker API calls."""
    runner_link: bool = True
    """Talk to each sandbox's runner over a unix socket mounted into its container rather
    than through the engine's exec stream (one hop each way instead of three; local engines
    only: where the link cannot be made, the server says so once and uses the stream)."""
    command_timeout_s: float = Field(120.0, gt=0, le=600)
    """Default timeout of ``run_command``."""
    return_after_s: float = Field(50.0, gt=0, le=600)
    """A ``run_command`` still running after this long becomes a background process."""
    output_cap: int = Field(30000, ge=1000, le=1 << 20)
    """Bytes of each output stream shown in a reply (head and tail kept)."""
    read_max_chars: int = Field(40_000, ge=2_000, le=1 << 22)
    """Most characters one read_file reply shows (about 10K tokens by default); past it the
    reply ends at a whole line and names the offset that continues."""
    max_file_bytes: int = Field(16 << 20, ge=1 << 16)
    """Largest file read whole, edited or written through the file tools."""
    http_tokens: dict[str, SecretStr] = {}
    """HTTP bearer tokens in the environment, for containers and CI: principal name → token
    (at least 24 characters), e.g. ``CODERX_HTTP_TOKENS='{"alice": "…"}'``. On a machine,
    prefer managed tokens (``coderx-mcp tokens create``). Each principal owns its own
    sessions. Without any token every HTTP client is the same local owner, and only loopback
    binds are allowed."""
    allowed_hosts: list[str] = []
    """Extra Host header values the HTTP transport accepts (DNS-rebinding protection); the
    loopback names and the bound address are always accepted."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level (logs always go to stderr)."""
    log_file: Path | None = None
    """Append logs to this file instead of stderr (``--log-file``)."""
    log_json: bool = False
    """Emit logs as JSON lines."""
    pytest_command: list[str] = ["python3", "-m", "pytest"]
    """How ``run_tests`` starts pytest inside the sandbox (a project venv's python, say)."""
    key_file: Path | None = None
    """Encrypted key store (``coderx-mcp keys``); None: ``$CODERX_KEY_FILE`` or
    ``~/.coder_x_key.enc``. Its passphrase comes from ``CODERX_KEY_PASSPHRASE``."""
    history_path: Path | None = None
    """SQLite file of the call history; None: ``history.sqlite3`` in the user data directory."""
    history_max_age_days: float = Field(90.0, gt=0)
    """History entries older than this are deleted."""
    history_max_mb: float = Field(200.0, gt=0)
    """The oldest history entries are deleted while the file is larger than this."""
    image_wheels: Path | None = None
    """Directory of the sandbox image's Python tool wheels (pytest, ruff and their deps)
    for ``image build`` where PyPI is out of reach (the compose deployment ships them);
    None: downloaded once into ``~/.cache/coderx/wheels``."""
    egress: EgressSettings = EgressSettings()
    """Network egress by allowlist (``CODERX_EGRESS__ENABLED=1``,
    ``CODERX_EGRESS__ALLOW='["pypi.org", "files.pythonhosted.org"]'``)."""
    agents: AgentRunSettings = AgentRunSettings()
    """Delegated agent runs (``CODERX_AGENTS__MODEL`` …)."""

    @property
    def tokens_path(self) -> Path:
        """The managed tokens (``coderx-mcp tokens``): hashes and policies, 0600."""
        return self.state_dir / "tokens.json"

    @field_validator("http_tokens")
    @classmethod
    def _tokens(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for principal, token in v.items():
            if len(token.get_secret_value()) < 24:
                raise ValueError(f"the HTTP token of {principal!r} is shorter than 24 characters")
        return v

    @field_validator("network")
    @classmethod
    def _network(cls, v: Network) -> Network:
        if v == "allowlist":
            raise ValueError("network (the default) must be none or bridge; sessions ask for "
                             "allowlist with session_open(network='allowlist')")
        return v

    @field_validator("git_author")
    @classmethod
    def _author(cls, v: str) -> str:
        if not re.fullmatch(r"[^<>\n]+ <[^<>\s]+>", v):
            raise ValueError(f"git_author must look like 'Name <email>', got {v!r}")
        return v

    @field_validator("max_memory")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v
