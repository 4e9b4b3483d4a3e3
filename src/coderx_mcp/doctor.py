"""``coderx-mcp doctor``: what stands between this machine and a working server.

Each check gives one line: what is wrong and the command that fixes it. Checks never
change anything.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from coderx_mcp.config import Settings
from coderx_mcp.errors import CoderxError

MIN_FREE_BYTES = 1 << 30
MAX_SKEW_S = 5.0


class Check(BaseModel):
    """One check's outcome.

    Attributes:
        name: What was checked.
        ok: Whether it is fine.
        detail: What was found (the problem when not ok).
        fix: The command or step that fixes it (when not ok).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _docker(settings: Settings) -> list[Check]:
    import docker

    from coderx_mcp.image import image_status

    try:
        client = docker.from_env(timeout=int(settings.docker_timeout_s))
        client.ping()
    except docker.errors.DockerException as exc:
        return [Check(name="docker", ok=False, detail=f"the Docker engine does not answer ({exc})",
                      fix="start it (systemctl start docker, or dockerd) and check "
                          "DOCKER_HOST"),
                Check(name="image", ok=False, detail="not checked: no Docker engine",
                      fix="fix docker first")]
    checks = [Check(name="docker", ok=True, detail="the engine answers")]
    try:
        status = image_status(client, settings.image)
        if not status.exists:
            checks.append(Check(name="image", ok=False, detail=f"{settings.image} is missing",
                                fix=f"coderx-mcp image build --image {settings.image}"))
        elif not status.up_to_date:
            checks.append(Check(name="image", ok=False,
                                detail=f"{settings.image} is older than this server's runner",
                                fix=f"coderx-mcp image build --image {settings.image}"))
        else:
            checks.append(Check(name="image", ok=True, detail=f"{settings.image} is current"))
        # Docker reports nanoseconds, which fromisoformat does not take.
        engine_time = re.sub(r"\.\d+", "", client.info().get("SystemTime", ""))
        skew = abs(datetime.fromisoformat(engine_time.replace("Z", "+00:00")).timestamp()
                   - time.time())
        checks.append(Check(name="clock", ok=skew <= MAX_SKEW_S,
                            detail=f"host and Docker engine clocks differ by {skew:.1f} s",
                            fix="" if skew <= MAX_SKEW_S else "sync the clocks (chrony, "
                                                               "systemd-timesyncd)"))
    except (docker.errors.DockerException, ValueError) as exc:
        checks.append(Check(name="clock", ok=False, detail=f"cannot read the engine's clock "
                            f"({exc})", fix="check the Docker engine"))
    finally:
        client.close()
    return checks


def _docker_hosts(settings: Settings) -> list[Check]:
    """One line per engine of ``CODERX_DOCKER_HOSTS``: answers, and holds the image."""
    from coderx_mcp.image import image_status
    from coderx_mcp.sandbox.docker_hosts import close_quietly, engine_problem, make_client

    checks = []
    for host in settings.docker_hosts:
        name = f"docker host {host.label}"
        client = make_client(host, min(settings.docker_timeout_s, 10))
        try:
            status = image_status(client, settings.image)
        except Exception as exc:  # any failure to talk to it is the line's finding
            checks.append(Check(name=name, ok=False, detail=f"{engine_problem(host)} ({exc})"[:300],
                                fix=f"start dockerd there, check its TLS files in {host.tls}"
                                if host.tls else "start dockerd there and check ssh access"))
            continue
        finally:
            close_quietly(client)
        if status.exists and status.up_to_date:
            checks.append(Check(name=name, ok=True, detail=f"answers; {settings.image} is "
                                "current"))
        else:
            checks.append(Check(name=name, ok=True, detail=f"answers; {settings.image} is "
                                f"{'stale' if status.exists else 'missing'} there: the server "
                                "copies it from this machine's engine at start"))
    return checks


def _directory(name: str, path: Path) -> Check:
    if not path.exists():
        return Check(name=name, ok=True, detail=f"{path} will be created at first use")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check(name=name, ok=False, detail=f"{path} is not writable by this user",
                     fix=f"chown -R {os.getuid()} {path}")
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        return Check(name=name, ok=False, detail=f"only {free >> 20} MiB free on {path}",
                     fix=f"free space on the file system of {path} (du -sh {path}/*)")
    return Check(name=name, ok=True, detail=f"{path} is writable, {free >> 30} GiB free")


def _tokens(settings: Settings) -> Check:
    from coderx_mcp.principals import TokenStore

    path = settings.tokens_path
    if not path.exists():
        return Check(name="tokens", ok=True, detail="no managed tokens (coderx-mcp tokens "
                                                    "create NAME makes one)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(name="tokens", ok=False, detail=f"{path} is readable by others "
                     f"({oct(mode)})", fix=f"chmod 600 {path}")
    try:
        n = len(TokenStore(path).list())
    except CoderxError as exc:
        return Check(name="tokens", ok=False, detail=str(exc),
                     fix=f"restore {path} or delete it and create the tokens again")
    return Check(name="tokens", ok=True, detail=f"{n} managed token(s)")


def _key_store(settings: Settings) -> Check:
    path = Path(os.environ.get("CODERX_KEY_FILE", Path.home() / ".coder_x_key.enc"))
    if not path.exists():
        return Check(name="key store", ok=True, detail=f"no key store at {path}")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(name="key store", ok=False, detail=f"{path} is readable by others "
                     f"({oct(mode)})", fix=f"chmod 600 {path}")
    return Check(name="key store", ok=True, detail=f"{path} is private")


def _port(port: int) -> Check:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return Check(name="port", ok=False, detail=f"port {port} is in use",
                         fix=f"serve --http --port <another>, or stop what listens "
                             f"(ss -ltnp 'sport = :{port}')")
    return Check(name="port", ok=True, detail=f"port {port} is free")


def _roots(settings: Settings) -> Check:
    from coderx_mcp.workspace.policy import WorkspacePolicy

    try:
        policy = WorkspacePolicy.from_settings(settings, Path.cwd(), http=True)
    except CoderxError as exc:
        return Check(name="workspace roots", ok=False, detail=str(exc),
                     fix="pass existing directories to serve --workspace / "
                         "CODERX_WORKSPACE_ROOTS")
    roots = ", ".join(map(str, policy.roots)) or "none (scratch workspaces only)"
    return Check(name="workspace roots", ok=True, detail=roots)


def run_checks(settings: Settings, port: int) -> list[Check]:
    """Every check, in the order an operator fixes things."""
    checks: list[Check] = []
    if settings.backend == "docker":
        checks += _docker(settings)
        checks += _docker_hosts(settings)
    simple: list[Callable[[], Check]] = [
        lambda: _directory("data directory", settings.data_dir),
        lambda: _directory("state directory", settings.state_dir),
        lambda: _tokens(settings), lambda: _key_store(settings), lambda: _port(port),
        lambda: _roots(settings)]
    for check in simple:
        checks.append(check())
    return checks
