"""Host-side builder for the Coder-X sandbox image.

Used by ``coderx-mcp image build``. Nothing here prints: progress goes to
structlog and to an optional ``on_progress`` callback, because this module may
run inside a stdio MCP server whose stdout is the protocol.
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import docker
import docker.errors
import structlog
from docker.utils import parse_repository_tag
from pydantic import BaseModel

from coderx_mcp.toolchains import toolchain_stage

log = structlog.get_logger(__name__)

DEFAULT_IMAGE = "coderx-sandbox:latest"
PYTHON_BASE_IMAGE = "python:3.12-slim"
OFFLINE_BASE_IMAGE = "coderx-base:bookworm"
OFFLINE_BASE_PYTHON = "3.11"  # Debian bookworm's python3
HASH_LABEL = "coderx.context-hash"
BASE_LABEL = "coderx.base-image"
# The in-container runner: a stdlib package, run as ``python3 -m coderx_runner``.
RUNNER_PATH = Path("runner") / "coderx_runner"
# Tools baked into the image; pinned so that the context hash is meaningful.
WHEEL_REQUIREMENTS: tuple[str, ...] = ("pytest==9.2.0", "ruff==0.17.5")
PULL_PROBE_SECONDS = 10.0

Progress = Callable[[str], None] | None


class ImageBuildError(RuntimeError):
    """The sandbox image (or its base or wheels) could not be built."""


class ImageStatus(BaseModel):
    """State of the local sandbox image compared with the build context."""

    exists: bool
    context_hash: str | None
    expected_hash: str
    up_to_date: bool


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _report(on_progress: Progress, message: str) -> None:
    message = _ANSI.sub("", message).rstrip()
    if not message:
        return
    if on_progress is None:
        log.debug("image.progress", message=message)
    else:
        on_progress(message)


def containers_dir() -> Path:
    """Locate the ``containers/`` directory holding the Dockerfile.

    Returns:
        The source checkout's ``containers/`` (also used by editable installs),
        else the copy packaged inside the wheel as ``coderx_mcp/_containers``.

    Raises:
        ImageBuildError: If neither location has a Dockerfile.
    """
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "containers", here.parent / "_containers"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise ImageBuildError(f"cannot find the containers/ directory (Dockerfile) near {here.parent}")


def runner_files(containers: Path) -> list[Path]:
    """The files of the runner package, relative to ``containers/``.

    Args:
        containers: The ``containers/`` directory.

    Returns:
        Every regular file under :data:`RUNNER_PATH`, sorted by path, without
        ``__pycache__`` directories and compiled files; empty when the package is missing.
    """
    root = containers / RUNNER_PATH
    if not root.is_dir():
        return []
    return sorted(
        (
            path.relative_to(containers)
            for path in root.rglob("*")
            if path.is_file()
            and "__pycache__" not in path.relative_to(root).parts
            and path.suffix not in (".pyc", ".pyo")
        ),
        key=lambda rel: rel.as_posix(),
    )


def context_hash(containers: Path) -> str:
    """Hash everything that goes into the image build.

    Args:
        containers: The ``containers/`` directory.

    Returns:
        16 hex characters of a sha256 over the Dockerfile, every file of the runner
        package (see :func:`runner_files`) and the pinned wheel requirements. A missing
        Dockerfile or runner package hashes as a distinct marker.
    """
    digest = hashlib.sha256()
    for rel in (Path("Dockerfile"), *(runner_files(containers) or [RUNNER_PATH])):
        path = containers / rel
        data = path.read_bytes() if path.is_file() else b"<missing>"
        digest.update(f"{rel.as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    digest.update("\n".join(WHEEL_REQUIREMENTS).encode())
    return digest.hexdigest()[:16]


def image_status(
    client: docker.DockerClient, image: str, containers: Path | None = None
) -> ImageStatus:
    """Compare the local image's context-hash label with the current context.

    Args:
        client: Docker client.
        image: Image reference, e.g. ``coderx-sandbox:latest``.
        containers: ``containers/`` directory; defaults to :func:`containers_dir`.
        toolchains: Language toolchains to add (``node``, ``go``: see
            :mod:`coderx_mcp.toolchains`); the image keeps the stock context hash.
        wheels_dir: Wheels of the image's Python tools to use instead of downloading them
            (must hold every requirement; see ``Settings.image_wheels``).

    Returns:
        The image status; ``up_to_date`` is false when missing or stale.
    """
    expected = context_hash(containers or containers_dir())
    try:
        found = (client.images.get(image).labels or {}).get(HASH_LABEL)
        exists = True
    except docker.errors.ImageNotFound:
        found, exists = None, False
    up_to_date = exists and found == expected
    return ImageStatus(
        exists=exists, context_hash=found, expected_hash=expected, up_to_date=up_to_date
    )


def missing_image_message(image: str) -> str:
    """One-sentence instruction shown when the sandbox image is missing or stale.

    A custom image (``FROM coderx-sandbox``, chosen with CODERX_IMAGE) is never overwritten
    by the stock one: its fix is rebuilding the stock base, then the custom image.
    """
    if image.split(":", 1)[0] != DEFAULT_IMAGE.split(":", 1)[0]:
        return (
            f"The sandbox image {image!r} is missing or out of date (a custom image: it must "
            f"be built FROM an up-to-date {DEFAULT_IMAGE}): run `coderx-mcp image build`, "
            f"then rebuild {image} with your own `docker build`, and retry."
        )
    return (
        f"The sandbox image {image!r} is missing or out of date: "
        f"run `coderx-mcp image build --image {image}` (needs Docker; works offline) and retry."
    )


# What `image status` asks the image for: its Python and the tools agents reach for.
_TOOL_PROBE = (
    "for c in 'python3 --version' 'pip --version' 'git --version' 'rg --version' "
    "'gcc --version' 'make --version' 'curl --version' 'jq --version' 'pytest --version' "
    "'ruff --version' 'node --version' 'go version'; do set -- $c; printf '%s: ' \"$1\"; "
    "if command -v \"$1\" >/dev/null; then ($c 2>&1 || echo missing) | head -n 1; "
    "else echo missing; fi; done"
)


def image_report(client: docker.DockerClient, image: str) -> list[str]:
    """The image's size and the versions of its Python and tools, one line each.

    Runs one throwaway container (no network, removed at once).

    Raises:
        docker.errors.DockerException: The engine or the image is unavailable.
    """
    size = client.images.get(image).attrs.get("Size", 0)
    out = client.containers.run(image, ["bash", "-c", _TOOL_PROBE], remove=True,
                                network_mode="none", user="1000:1000")
    lines = out.decode("utf-8", "replace").splitlines()
    return [f"size: {size / 1e6:.0f} MB", *lines]


def _python_version_for(base_image: str) -> str:
    match = re.match(r"(?:.*/)?python:(\d+\.\d+)", base_image)
    return match.group(1) if match else OFFLINE_BASE_PYTHON


def _wheels(python_version: str, on_progress: Progress) -> Path:
    """Download (once, then cache) the wheels for the image's Python."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    key = hashlib.sha256("\n".join(WHEEL_REQUIREMENTS).encode()).hexdigest()[:8]
    cache = Path.home() / ".cache" / "coderx" / "wheels" / f"py{python_version}-{arch}-{key}"
    if (cache / ".complete").is_file():
        return cache
    _report(on_progress, f"downloading wheels for Python {python_version} into {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    opts = "download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp"
    cmd = [sys.executable, "-m", "pip", *opts.split(), "--python-version", python_version]
    for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014"):
        cmd += ["--platform", f"{tag}_{arch}"]
    cmd += ["--dest", str(cache)]
    proc = subprocess.run([*cmd, *WHEEL_REQUIREMENTS], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ImageBuildError("pip download of the image's wheels failed: " + " | ".join(tail))
    (cache / "requirements.txt").write_text("\n".join(WHEEL_REQUIREMENTS) + "\n")
    (cache / ".complete").write_text("ok\n")
    return cache


def _try_pull(client: docker.DockerClient, ref: str, on_progress: Progress) -> bool:
    """Pull ``ref`` if a registry answers within PULL_PROBE_SECONDS."""
    repo, tag = parse_repository_tag(ref)
    answered, done, result = threading.Event(), threading.Event(), {"ok": False}

    def worker() -> None:
        try:
            for line in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    return
                answered.set()
            result["ok"] = True
        except docker.errors.DockerException as exc:
            log.info("image.pull_failed", image=ref, error=str(exc))
        finally:
            answered.set()
            done.set()

    threading.Thread(target=worker, name="coderx-pull", daemon=True).start()
    if not answered.wait(PULL_PROBE_SECONDS):
        return False
    if not done.is_set():
        _report(on_progress, f"pulling {ref}")
    done.wait(900)
    return result["ok"]


def default_base_image(client: docker.DockerClient, on_progress: Progress = None) -> str:
    """Choose the base image: python:3.12-slim if available, else the offline base.

    The offline base (Debian bookworm via debootstrap) is created by
    ``containers/make-offline-base.sh`` when missing.

    Raises:
        ImageBuildError: If the offline base cannot be created.
    """
    for ref in (PYTHON_BASE_IMAGE, OFFLINE_BASE_IMAGE):
        try:
            client.images.get(ref)
            return ref
        except docker.errors.ImageNotFound:
            pass
    if _try_pull(client, PYTHON_BASE_IMAGE, on_progress):
        return PYTHON_BASE_IMAGE
    _report(on_progress, f"no registry: creating {OFFLINE_BASE_IMAGE} with debootstrap (~1 min)")
    script = containers_dir() / "make-offline-base.sh"
    proc = subprocess.Popen(
        ["bash", str(script), OFFLINE_BASE_IMAGE],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        _report(on_progress, line)
    if proc.wait() != 0:
        raise ImageBuildError(f"{script.name} failed (exit {proc.returncode}); see the lines above")
    return OFFLINE_BASE_IMAGE


def build_image(
    client: docker.DockerClient,
    image: str = DEFAULT_IMAGE,
    base_image: str | None = None,
    on_progress: Progress = None,
    containers: Path | None = None,
    toolchains: Sequence[str] = (),
    wheels_dir: Path | None = None,
) -> str:
    """Build the sandbox image from a temporary, fully offline build context.

    Args:
        client: Docker client.
        image: Tag to build, e.g. ``coderx-sandbox:latest``.
        base_image: ``FROM`` image; defaults to :func:`default_base_image`.
        on_progress: Called with each build output line.
        containers: ``containers/`` directory; defaults to :func:`containers_dir`.
        toolchains: Language toolchains to add (``node``, ``go``: see
            :mod:`coderx_mcp.toolchains`); the image keeps the stock context hash.
        wheels_dir: Wheels of the image's Python tools to use instead of downloading them
            (must hold every requirement; see ``Settings.image_wheels``).

    Returns:
        The built image id (``sha256:...``).

    Raises:
        ImageBuildError: On a missing runner, a failed wheel download or build.
    """
    src = containers or containers_dir()
    if not (src / RUNNER_PATH / "__main__.py").is_file():
        raise ImageBuildError(
            f"missing {src / RUNNER_PATH / '__main__.py'}: the sandbox runner package is required"
        )
    base = base_image or default_base_image(client, on_progress)
    wheels = wheels_dir or _wheels(_python_version_for(base), on_progress)
    if not wheels.is_dir():
        raise ImageBuildError(f"the image's wheel directory {wheels} does not exist")
    chash = context_hash(src)
    labels = {HASH_LABEL: chash, BASE_LABEL: base}
    with tempfile.TemporaryDirectory(prefix="coderx-build-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text((src / "Dockerfile").read_text()
                                        + toolchain_stage(toolchains))
        for rel in runner_files(src):  # exactly the files the context hash covers
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, ctx / rel)
        shutil.copytree(wheels, ctx / "wheels", ignore=shutil.ignore_patterns(".complete"))
        (ctx / "wheels" / "requirements.txt").write_text("\n".join(WHEEL_REQUIREMENTS) + "\n")
        _report(on_progress, f"building {image} from {base} (context {chash})")
        image_id: str | None = None
        try:
            for chunk in client.api.build(
                path=str(ctx),
                tag=image,
                buildargs={"BASE_IMAGE": base},
                labels=labels,
                decode=True,
                rm=True,
                forcerm=True,
                pull=False,
            ):
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                    raise ImageBuildError(f"docker build of {image} failed: {error}")
                if isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                text = chunk.get("stream") or chunk.get("status")
                if text:
                    _report(on_progress, text)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker build of {image} failed: {exc.explanation}") from exc
    return image_id or client.images.get(image).id
