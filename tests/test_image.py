"""Tests for the sandbox image builder (real Docker, no mocks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from tests.conftest import IMAGE

from coderx_mcp import image
from coderx_mcp.image import (
    ImageBuildError,
    build_image,
    containers_dir,
    context_hash,
    image_status,
    missing_image_message,
)
from coderx_mcp.toolchains import TOOLCHAINS_LABEL, has_toolchains, parse_with, toolchain_stage


@pytest.fixture
def containers_copy(tmp_path: Path) -> Path:
    """A private copy of containers/ that a test may edit."""
    dest = tmp_path / "containers"
    shutil.copytree(containers_dir(), dest)
    return dest


def test_containers_dir_has_build_inputs() -> None:
    path = containers_dir()
    assert (path / "Dockerfile").is_file()
    assert (path / "make-offline-base.sh").is_file()
    assert (path / "ensure-docker.sh").is_file()


def test_context_hash_is_stable_and_short(containers_copy: Path) -> None:
    first = context_hash(containers_copy)
    assert first == context_hash(containers_copy)
    assert first == context_hash(containers_dir())
    assert len(first) == 16
    int(first, 16)


def test_context_hash_changes_with_runner_and_dockerfile(containers_copy: Path) -> None:
    before = context_hash(containers_copy)
    runner = containers_copy / "runner" / "coderx_runner" / "runner.py"
    runner.parent.mkdir(parents=True, exist_ok=True)
    runner.write_text(runner.read_text() + "\n# changed\n" if runner.exists() else "# new\n")
    after_runner = context_hash(containers_copy)
    assert after_runner != before
    dockerfile = containers_copy / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert context_hash(containers_copy) not in (before, after_runner)


def test_context_hash_ignores_unrelated_files(containers_copy: Path) -> None:
    before = context_hash(containers_copy)
    (containers_copy / "README.md").write_text("docs only\n")
    assert context_hash(containers_copy) == before


def test_context_hash_covers_every_runner_file_but_not_pycache(containers_copy: Path) -> None:
    before = context_hash(containers_copy)
    package = containers_copy / "runner" / "coderx_runner"
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "runner.cpython-311.pyc").write_bytes(b"\0compiled")
    assert context_hash(containers_copy) == before
    assert not any("__pycache__" in p.parts for p in image.runner_files(containers_copy))
    (package / "extra.py").write_text("# a new module\n")
    assert context_hash(containers_copy) != before
    rels = [p.as_posix() for p in image.runner_files(containers_copy)]
    assert rels == sorted(rels)
    assert "runner/coderx_runner/__main__.py" in rels


def test_missing_image_message_names_the_command() -> None:
    message = missing_image_message(IMAGE)
    assert "coderx-mcp image build" in message
    assert IMAGE in message


def test_custom_image_hint_never_overwrites_it() -> None:
    message = missing_image_message("my-sandbox:node")
    assert "FROM an up-to-date coderx-sandbox:latest" in message
    assert "rebuild my-sandbox:node with your own `docker build`" in message
    assert "--image my-sandbox:node" not in message


@pytest.mark.docker
def test_image_report_has_the_tools_agents_reach_for(docker_client: docker.DockerClient) -> None:
    lines = image.image_report(docker_client, IMAGE)
    assert lines[0].startswith("size: ") and lines[0].endswith(" MB")
    found = dict(line.split(": ", 1) for line in lines[1:])
    for tool in ("python3", "pip", "git", "rg", "gcc", "make", "curl", "jq", "pytest", "ruff"):
        assert tool in found and "missing" not in found[tool], lines
    assert found["python3"].startswith("Python 3.")
    assert found["node"] == "missing" and found["go"] == "missing"  # only with --with


def test_python_version_follows_the_base() -> None:
    assert image._python_version_for("python:3.12-slim") == "3.12"
    assert image._python_version_for("docker.io/library/python:3.13") == "3.13"
    assert image._python_version_for(image.OFFLINE_BASE_IMAGE) == "3.11"


@pytest.mark.docker
def test_built_image_is_up_to_date(docker_client: docker.DockerClient) -> None:
    status = image_status(docker_client, IMAGE)
    assert status.exists, missing_image_message(IMAGE)
    assert status.up_to_date, missing_image_message(IMAGE)
    assert status.context_hash == status.expected_hash == context_hash(containers_dir())
    labels = docker_client.images.get(IMAGE).labels
    assert labels["org.opencontainers.image.title"] == "coderx-sandbox"


@pytest.mark.docker
def test_image_status_detects_stale_and_missing(
    docker_client: docker.DockerClient, containers_copy: Path
) -> None:
    runner = containers_copy / "runner" / "coderx_runner" / "runner.py"
    runner.write_text(runner.read_text() + "\n# a newer runner\n")
    stale = image_status(docker_client, IMAGE, containers=containers_copy)
    assert stale.exists
    assert not stale.up_to_date
    missing = image_status(docker_client, "coderx-sandbox:does-not-exist", containers_copy)
    assert not missing.exists
    assert missing.context_hash is None
    assert not missing.up_to_date


@pytest.mark.docker
def test_image_runs_as_uid_1000_with_tools_on_read_only_root(
    docker_client: docker.DockerClient,
) -> None:
    script = (
        "id -u; id -g; echo $HOME; pwd; python3 --version; pytest --version; ruff --version; "
        "rg --version >/dev/null; git --version >/dev/null; "
        "test -f /opt/coderx/coderx_runner/__main__.py && echo RUNNER; "
        "if touch /opt/coderx/x 2>/dev/null; then echo WRITABLE; fi; "
        "if touch /opt/coderx/coderx_runner/x 2>/dev/null; then echo WRITABLE; fi; "
        # The root is read-only here, so judge the modes too: root-owned, no group/other write.
        "find /opt/coderx/coderx_runner \\( ! -user 0 -o -perm /022 \\) -printf 'WRITABLE %p\\n'"
    )
    out = docker_client.containers.run(
        IMAGE,
        ["bash", "-c", script],
        remove=True,
        read_only=True,
        tmpfs={"/tmp": "", "/home/coder": "uid=1000,gid=1000", "/run/coderx": "uid=1000,gid=1000"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network_mode="none",
        init=True,
    ).decode()
    lines = out.splitlines()
    assert lines[:4] == ["1000", "1000", "/home/coder", "/workspace"]
    assert "pytest" in out
    assert "ruff" in out
    assert "RUNNER" in out
    assert "WRITABLE" not in out


@pytest.mark.docker
def test_build_error_line_raises(docker_client: docker.DockerClient, containers_copy: Path) -> None:
    (containers_copy / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nUSER 0\nRUN echo boom >&2 && exit 3\n"
    )
    tag = "coderx-sandbox:test-broken"
    lines: list[str] = []
    with pytest.raises(ImageBuildError, match="docker build of"):
        build_image(
            docker_client,
            tag,
            base_image=IMAGE,
            on_progress=lines.append,
            containers=containers_copy,
        )
    assert any("boom" in line for line in lines)
    assert not image_status(docker_client, tag, containers_copy).exists


def test_build_without_runner_fails_clearly(containers_copy: Path) -> None:
    shutil.rmtree(containers_copy / "runner" / "coderx_runner")
    with pytest.raises(ImageBuildError, match=r"coderx_runner"):
        build_image(None, "unused:tag", base_image="unused", containers=containers_copy)  # type: ignore[arg-type]


def test_with_toolchains_parses_names_and_refuses_unknown_ones() -> None:
    assert parse_with("go, node,node") == ("go", "node")
    assert parse_with(None) == () and toolchain_stage(()) == ""
    with pytest.raises(ValueError, match="unknown toolchain 'rust'; choose from go, node"):
        parse_with("node,rust")
    done = subprocess.run([sys.executable, "-m", "coderx_mcp", "image", "build", "--with",
                           "rust"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "unknown toolchain 'rust'" in done.stderr


def test_with_toolchains_adds_a_root_apt_step_to_the_final_stage() -> None:
    """The stage the build appends to containers/Dockerfile (not built here: it needs the
    Debian mirror and ~400 MB; `image build --with node,go` does that)."""
    dockerfile = (containers_dir() / "Dockerfile").read_text() + toolchain_stage(("go", "node"))
    tail = dockerfile[dockerfile.rindex("\nFROM "):].splitlines()
    users = [ln for ln in tail if ln.startswith("USER ")]
    assert users == ["USER 1000:1000", "USER 0", "USER 1000:1000"]  # ends as the sandbox uid
    run = next(i for i, ln in enumerate(tail) if ln.startswith("RUN set -eu; apt-get update"))
    assert "apt-get install -y --no-install-recommends golang-go nodejs npm" in tail[run + 1]
    assert f"LABEL {TOOLCHAINS_LABEL}=go,node" in tail
    assert has_toolchains({TOOLCHAINS_LABEL: "go,node"}, ("node",))
    assert not has_toolchains({}, ("node",)) and has_toolchains(None, ())
