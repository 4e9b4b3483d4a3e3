"""Remote Docker engines (``CODERX_DOCKER_HOSTS``): their configuration, SDK clients and the
runner's byte stream to each.

An engine is ``tcp://host:port`` with mutual TLS (a directory holding Docker's own
``ca.pem``, ``cert.pem`` and ``key.pem``), ``ssh://user@host`` (the ``ssh`` binary and
``docker system dial-stdio`` on the far side) or a local ``unix://`` socket. Plain TCP is
refused: whoever reaches an engine's API is root on its machine.

The runner's stream is not docker-py's socket (over TLS that is an ``SSLSocket`` whose file
descriptor carries ciphertext): :func:`open_exec_stream` dials the engine with asyncio and
upgrades ``POST /exec/{id}/start`` itself, so the same code serves unix, TLS and ssh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
from docker.tls import TLSConfig

from coderx_mcp.config import TLS_FILES, DockerHostConfig
from coderx_mcp.errors import SandboxUnavailable

API_VERSION = "1.41"
"""Docker 20.10's API, which every later engine still serves. Fixed, because asking the
engine for its version would be the client's first request, made before ``trust_env`` is
off (``REQUESTS_CA_BUNDLE`` would replace the engine's CA)."""


def _tls_files(config: DockerHostConfig) -> tuple[str, str, str]:
    assert config.tls is not None  # checked by the model
    ca, cert, key = (str(config.tls / f) for f in TLS_FILES)
    return ca, cert, key


def make_client(config: DockerHostConfig, timeout: float) -> docker.DockerClient:
    """A docker-py client for one engine (nothing is sent yet).

    ``trust_env`` is turned off: requests would otherwise take ``REQUESTS_CA_BUNDLE`` (or a
    proxy) from the environment over the engine's own CA.
    """
    common: dict[str, Any] = {"timeout": int(timeout), "version": API_VERSION}
    parts = urlsplit(config.url)
    if parts.scheme == "tcp":
        ca, cert, key = _tls_files(config)
        client = docker.DockerClient(
            base_url=f"https://{parts.netloc}", **common,
            tls=TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=True))
    elif parts.scheme == "ssh":
        client = docker.DockerClient(base_url=config.url, use_ssh_client=True, **common)
    else:
        client = docker.DockerClient(base_url=config.url, **common)
    client.api.trust_env = False
    return client


def _ssl_context(config: DockerHostConfig) -> ssl.SSLContext:
    ca, cert, key = _tls_files(config)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


async def dial(config: DockerHostConfig,
               limit: int = 1 << 20) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A fresh byte stream to the engine's API (TLS, ssh or unix socket).

    Args:
        config: The engine.
        limit: What asyncio buffers ahead of the reader.
    """
    parts = urlsplit(config.url)
    if parts.scheme == "tcp":
        return await asyncio.open_connection(parts.hostname, parts.port,
                                             ssl=_ssl_context(config), limit=limit)
    if parts.scheme == "unix":
        return await asyncio.open_unix_connection(parts.path, limit=limit)
    target = f"{parts.username}@{parts.hostname}" if parts.username else str(parts.hostname)
    port = ["-p", str(parts.port)] if parts.port else []
    # BatchMode: never prompt (stdin is the API stream); the ssh process ends with its pipes.
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-o", "BatchMode=yes", *port, "--", target, "docker", "system", "dial-stdio",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, limit=limit)
    assert proc.stdin is not None and proc.stdout is not None
    return proc.stdout, proc.stdin


async def open_exec_stream(
    config: DockerHostConfig, api_version: str, exec_id: str, limit: int = 1 << 20,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Start a created exec and return its stream (Docker's multiplexed frames out, the
    process's stdin in), as ``docker exec -i`` does: an HTTP upgrade on a connection of its
    own.

    Raises:
        SandboxUnavailable: The engine refused the upgrade or did not answer.
    """
    reader, writer = await dial(config, limit)
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    head = (f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
            "Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        writer.write(head + body)
        await writer.drain()
        answer = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        writer.close()
        raise SandboxUnavailable(f"docker host {config.label} dropped the runner's stream "
                                 f"({exc or type(exc).__name__})") from None
    status = answer.split(b"\r\n", 1)[0].decode("latin-1")
    if " 101 " not in f"{status} ":
        writer.close()
        raise SandboxUnavailable(f"docker host {config.label} refused the runner's stream: "
                                 f"{status}")
    return reader, writer


def engine_problem(config: DockerHostConfig) -> str:
    """One sentence for an engine that does not answer (the cause is logged, not shown)."""
    return f"docker host {config.label} ({config.url}) does not answer"


def close_quietly(client: Any) -> None:
    """Close a docker-py client, ignoring errors of a dead connection."""
    with contextlib.suppress(Exception):
        client.close()
