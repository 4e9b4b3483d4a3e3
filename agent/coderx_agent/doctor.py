"""``coderx-agent doctor`` and ``/doctor``: one line per check, with the fix when it fails.

Checks: Python, the config files, the coderx-mcp server (starts and lists its tools),
Docker and the sandbox image, the key store, each provider (key and reachability) and
the Ollama storage path.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from coderx_agent.config import AgentConfig, load_config
from coderx_agent.errors import AgentError
from coderx_agent.keys import Keys
from coderx_agent.models import make_model
from coderx_agent.ollama_admin import check_storage
from coderx_agent.servers import ToolHub, build_servers, coderx_entry

#: Longest one reachability check may take.
CHECK_TIMEOUT_S = 15.0
DEFAULT_IMAGE = "coderx-sandbox:latest"


class Check(BaseModel):
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``ok   name: detail`` or ``FAIL name: detail; fix: …``."""
        fix = f"; fix: {self.fix}" if not self.ok and self.fix else ""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}{fix}"


def check_python() -> Check:
    """Python 3.11 or newer."""
    v = sys.version_info
    return Check(name="python", ok=v >= (3, 11), detail=f"{v.major}.{v.minor}.{v.micro}",
                 fix="install Python 3.11 or newer")


def check_config(cwd: Path) -> tuple[Check, AgentConfig | None]:
    """The config files load and validate."""
    try:
        loaded = load_config(cwd)
    except AgentError as exc:
        return Check(name="config", ok=False, detail=str(exc),
                     fix="correct the file and key named"), None
    files = [str(la.path) for la in loaded.layers if la.path] or ["defaults only"]
    return Check(name="config", ok=True, detail=", ".join(files)), loaded.config


async def check_server(config: AgentConfig, workspace: Path, hub: ToolHub | None) -> Check:
    """The coderx-mcp server starts (or is connected) and lists its tools."""
    if hub is not None:
        return Check(name="coderx-mcp server", ok=True,
                     detail=f"connected, {len(hub.tools())} tools")
    entry = coderx_entry(workspace, config.server_url, None, config.server_timeout_s)
    try:
        async with ToolHub(build_servers(entry, {})) as fresh:
            n = len(fresh.tools())
    except AgentError as exc:
        return Check(name="coderx-mcp server", ok=False, detail=str(exc),
                     fix="run `coderx-mcp doctor` for the server's own checks")
    return Check(name="coderx-mcp server", ok=True, detail=f"started, {n} tools")


def check_docker(environ: Mapping[str, str]) -> Check:
    """The Docker engine answers and has the sandbox image."""
    import docker
    import docker.errors

    image = environ.get("CODERX_IMAGE") or DEFAULT_IMAGE
    try:
        client = docker.from_env(timeout=10)
        try:
            client.ping()
            client.images.get(image)
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        return Check(name="docker", ok=False, detail=f"the image {image} is missing",
                     fix="coderx-mcp image build")
    except Exception as exc:  # any failure to reach the engine is the finding itself
        return Check(name="docker", ok=False, detail=f"the engine does not answer ({exc})",
                     fix="start Docker (or set DOCKER_HOST)")
    return Check(name="docker", ok=True, detail=f"engine up, image {image} present")


def check_key_store(environ: Mapping[str, str]) -> Check:
    """The key store opens (when a passphrase is set)."""
    from coderx_mcp.errors import KeyStoreError
    from coderx_mcp.keystore import PASSPHRASE_ENV, open_store

    if not environ.get(PASSPHRASE_ENV):
        return Check(name="key store", ok=True,
                     detail=f"not used ({PASSPHRASE_ENV} is not set; keys come from the "
                     "environment)")
    try:
        store = open_store(passphrase=environ[PASSPHRASE_ENV])
    except KeyStoreError as exc:
        return Check(name="key store", ok=False, detail=str(exc),
                     fix=f"check {PASSPHRASE_ENV} and the store file")
    return Check(name="key store", ok=True, detail=f"{store.path}, {len(store.list())} keys")


async def check_provider(provider: str, config: AgentConfig, keys: Keys) -> Check:
    """The provider has a key (Anthropic) and answers."""
    name = f"provider {provider}"
    try:
        model = make_model(provider, "-", config, keys)
    except AgentError as exc:
        return Check(name=name, ok=False, detail=str(exc),
                     fix=f"coderx-agent login {provider}")
    try:
        found = await asyncio.wait_for(model.list_models(), CHECK_TIMEOUT_S)
    except (AgentError, TimeoutError) as exc:
        fix = ("start `ollama serve` or set ollama.host" if provider == "ollama"
               else "check the network and anthropic.base_url")
        return Check(name=name, ok=False, detail=str(exc) or "no answer in time", fix=fix)
    finally:
        await model.aclose()
    return Check(name=name, ok=True, detail=f"reachable, {len(found)} models")


def check_ollama_storage(config: AgentConfig) -> Check:
    """The saved Ollama storage path is usable."""
    path = config.ollama.models_path
    if not path:
        return Check(name="ollama storage", ok=True, detail="Ollama's default")
    try:
        check_storage(Path(path))
    except AgentError as exc:
        return Check(name="ollama storage", ok=False, detail=str(exc),
                     fix="mount the drive, or `coderx-agent models storage-path PATH`")
    return Check(name="ollama storage", ok=True, detail=path)


async def run_checks(cwd: Path, keys: Keys, hub: ToolHub | None = None,
                     environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check, in order (a broken config skips the checks that need it)."""
    environ = os.environ if environ is None else environ
    out = [check_python()]
    config_check, config = check_config(cwd)
    out.append(config_check)
    if config is not None:
        out.append(await check_server(config, cwd, hub))
    out.append(await asyncio.to_thread(check_docker, environ))
    out.append(check_key_store(environ))
    if config is not None:
        for provider in ("anthropic", "ollama"):
            out.append(await check_provider(provider, config, keys))
        out.append(check_ollama_storage(config))
    return out
