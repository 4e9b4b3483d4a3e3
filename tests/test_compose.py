"""The compose deployment, offline: the server image built from the sandbox's offline base
and local wheels, brought up with docker-compose (pytest-docker), driven over HTTP with a
token, torn down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from fastmcp import Client
from tests.conftest import IMAGE, facts, free_port

from coderx_mcp.image import image_status

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "compose-token-0123456789abcdefghij"
PORT = free_port()
# The sandbox image compose builds (service sandbox-image): a tag of its own, so the build
# really runs (from Docker's layer cache when the tested image has the same inputs).
SANDBOX = IMAGE.rsplit(":", 1)[0] + ":compose-test"


@pytest.fixture(scope="session")
def compose_env() -> Iterator[Path]:
    """The variables docker-compose.yml reads (set for the compose commands), the host
    directories it mounts, and the wheels the server image is built from."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    # The server's wheel is rebuilt each run: the image must hold the code under test.
    subprocess.run(["bash", str(ROOT / "deploy" / "make-wheels.sh")], check=True)
    base = Path(tempfile.mkdtemp(prefix="coderx-compose-", dir="/tmp"))
    base.chmod(0o711)
    (base / "ws").mkdir()
    (base / "data").mkdir()
    saved = dict(os.environ)
    os.environ.update({
        "CODERX_HTTP_TOKENS": json.dumps({"alice": TOKEN}), "CODERX_IMAGE": SANDBOX,
        "CODERX_WORKSPACES": str(base / "ws"), "CODERX_DATA": str(base / "data"),
        "CODERX_PORT": str(PORT), "CODERX_SERVER_TAG": "test"})
    try:
        yield base
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["docker", "rmi", SANDBOX], capture_output=True, check=False)


@pytest.fixture(scope="session")
def docker_compose_file(compose_env: Path) -> str:
    return str(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up --build -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v -t 30"]


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=3) as r:
            return bool(json.load(r)["status"] == "ok")
    except OSError:
        return False


async def test_compose_server_answers_a_token_holder(docker_services: object) -> None:
    docker_services.wait_until_responsive(check=_healthy, timeout=180, pause=1)  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{PORT}/mcp"
    async with Client(url, auth=TOKEN) as c:
        r = await c.call_tool("run_command", {"command": "echo from-compose; id -u"})
        assert facts(r) is not None
        assert facts(r)["stdout"] == "from-compose\n1000\n"
    # The sandbox ran in the image compose built, and that image is up to date.
    assert image_status(docker.from_env(), SANDBOX).up_to_date
    with pytest.raises(Exception):  # noqa: B017 - no token: 401
        async with Client(url) as anonymous:
            await anonymous.list_tools()
