"""Managing local Ollama models: where they are stored, loading, unloading, removing.

``storage-path`` checks a directory before it is saved (exists, is a directory, is
writable, has the free space asked for); the saved path is checked again whenever the
agent starts ``ollama serve`` itself, so a drive that is gone gives an error naming the
path instead of a silent fallback to Ollama's default. Load and unload use Ollama's
``keep_alive`` (an empty generate request loads a model; ``keep_alive=0`` unloads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import ollama

from coderx_agent.config import OllamaConfig
from coderx_agent.errors import ConfigError, ModelError, UsageError
from coderx_agent.models.ollama import describe

SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
#: Longest a started ``ollama serve`` may take to answer.
START_TIMEOUT_S = 30.0
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of ``20G``, ``512M``, ``1.5T`` or a plain number.

    Raises:
        UsageError: Not a size.
    """
    m = SIZE.match(text)
    if m is None:
        raise UsageError(f"{text!r} is not a size: use a number with K, M, G or T (20G)")
    return int(float(m[1]) * UNITS[m[2].upper()])


def human(n: float) -> str:
    """``1.5G`` style."""
    for unit in ("", "K", "M", "G"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def check_storage(path: Path, min_free: int = 0) -> None:
    """Raise unless ``path`` can hold Ollama's models.

    Raises:
        ConfigError: Missing, not a directory, not writable, or less free space than
            ``min_free`` bytes (the message names the path).
    """
    if not path.exists():
        raise ConfigError(f"the Ollama storage path {path} does not exist (is its drive "
                          "mounted?)")
    if not path.is_dir():
        raise ConfigError(f"the Ollama storage path {path} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".coderx-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"the Ollama storage path {path} is not writable "
                          f"({exc.strerror or exc})") from None
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise ConfigError(f"the Ollama storage path {path} has {human(free)} free, less than "
                          f"the {human(min_free)} asked for (--min-free)")


def serve_env(config: OllamaConfig, environ: Mapping[str, str] | None = None
              ) -> dict[str, str]:
    """The environment of an ``ollama serve`` the agent starts: ``OLLAMA_MODELS`` set to
    the saved storage path (checked first) and ``OLLAMA_HOST`` to the configured host.

    Raises:
        ConfigError: The saved storage path is unusable (e.g. its drive is gone).
    """
    env = dict(os.environ if environ is None else environ)
    if config.models_path:
        path = Path(config.models_path)
        check_storage(path)
        env["OLLAMA_MODELS"] = str(path)
    env["OLLAMA_HOST"] = config.host.removeprefix("http://").removeprefix("https://")
    return env


async def _admin(config: OllamaConfig, action: str, model_id: str) -> None:
    client = ollama.AsyncClient(host=config.host, timeout=config.timeout_s)
    try:
        if action == "load":
            await client.generate(model=model_id, keep_alive="30m")
        elif action == "unload":
            await client.generate(model=model_id, keep_alive=0)
        else:
            await client.delete(model_id)
    except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
        raise ModelError(describe(exc, config.host)) from None
    finally:
        await client._client.aclose()


async def load(config: OllamaConfig, model_id: str) -> None:
    """Load a model into memory (kept 30 minutes).

    Raises:
        ModelError: Ollama refused or cannot be reached.
    """
    await _admin(config, "load", model_id)


async def unload(config: OllamaConfig, model_id: str) -> None:
    """Unload a model from memory now."""
    await _admin(config, "unload", model_id)


async def remove(config: OllamaConfig, model_id: str) -> None:
    """Delete a model from Ollama's storage."""
    await _admin(config, "rm", model_id)


async def answers(host: str, timeout_s: float = 2.0) -> bool:
    """Whether an Ollama answers at ``host``."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            return (await client.get(f"{host.rstrip('/')}/api/version")).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.asynccontextmanager
async def serving(config: OllamaConfig, log_file: Path,
                  start_timeout_s: float = START_TIMEOUT_S) -> AsyncIterator[None]:
    """Start ``ollama serve`` for the body when nothing answers at the configured host
    (``--start-ollama``), with ``OLLAMA_MODELS`` from the saved storage path; stopped on
    exit. An Ollama already answering is used as it is.

    Raises:
        ConfigError: The saved storage path is unusable (named).
        ModelError: ``ollama`` is not installed, or did not answer in time.
    """
    if await answers(config.host):
        yield
        return
    env = serve_env(config)
    exe = shutil.which("ollama", path=env.get("PATH"))
    if exe is None:
        raise ModelError(f"nothing answers at {config.host} and `ollama` is not on PATH to "
                         "start it; install Ollama or start it yourself")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            exe, "serve", env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not await answers(config.host):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise ModelError(f"`ollama serve` did not answer at {config.host} (see "
                                 f"{log_file})")
            await asyncio.sleep(0.2)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
