"""Two extra Docker engines on loopback TCP with mutual TLS, for the fleet tests.

Each engine is a real ``dockerd`` with its own data root, exec root, pid file and unix
socket, listening on ``127.0.0.1:<free port>`` with ``--tlsverify`` against a CA made here
(``cryptography``). The sandbox image is copied into each by the server's own code
(``host_image.ensure_image``: ``docker save | docker load`` streamed). That copy of the
670 MB image takes ~35 s per engine on this machine, so the data roots are kept between
runs under ``~/.cache/coderx/fleet-engines/<worktree>/`` (a lock per engine; a second run
of the same tree at once gets throwaway roots): later runs start both engines in ~3 s and
copy only when the image changed.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.conftest import IMAGE, free_port

from coderx_mcp.config import DockerHostConfig
from coderx_mcp.sandbox.docker import remove_container
from coderx_mcp.sandbox.docker_hosts import make_client
from coderx_mcp.sandbox.host_image import ensure_image
from coderx_mcp.sandbox.instance import LABEL_MANAGED

CACHE = Path.home() / ".cache" / "coderx" / "fleet-engines"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (path / "key.pem").chmod(0o600)
    (path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class CA:
    """A throwaway certificate authority issuing engine and client certificates."""

    def __init__(self, name: str = "coderx test CA") -> None:
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, directory: Path, name: str, server: bool) -> Path:
        """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` (Docker's names) to ``directory``."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.ExtendedKeyUsage([usage]), False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False)
        _write(directory, key, builder.sign(self.key, hashes.SHA256()))
        (directory / "ca.pem").write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return directory


class Engine:
    """One extra dockerd: TLS on loopback TCP plus a private unix socket."""

    def __init__(self, name: str, data_root: Path, run: Path, ca: CA) -> None:
        self.name = name
        self.data_root = data_root
        self.run = run  # short: containerd's sockets live under the exec root
        self.port = free_port()
        self.server_tls = ca.issue(run / "server-tls", "localhost", server=True)
        self.client_tls = ca.issue(run / "client-tls", "coderx-server", server=False)
        self.sock = run / "docker.sock"
        # Beside the data root: a run killed before its teardown left this dockerd running,
        # and the next run stops it before using the root.
        self.pidfile = data_root.with_suffix(".pid")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> DockerHostConfig:
        """How a server reaches this engine."""
        return DockerHostConfig(url=f"tcp://127.0.0.1:{self.port}", tls=self.client_tls,
                                name=self.name)

    def local_client(self) -> docker.DockerClient:
        """A client on the private unix socket (for looking from outside)."""
        return docker.DockerClient(base_url=f"unix://{self.sock}", timeout=60)

    @property
    def bridge(self) -> str:
        """A bridge of this engine's own. Never ``--bridge=none``: a dockerd with the default
        bridge disabled deletes the host's ``docker0``, which the main engine's builds and
        bridge networks need (the daemons share the network namespace)."""
        return f"cxf{zlib.crc32(self.name.encode()) % 100000}"

    def _make_bridge(self) -> None:
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode:
            net = zlib.crc32(self.name.encode()) % 200 + 20
            for cmd in (["ip", "link", "add", self.bridge, "type", "bridge"],
                        ["ip", "addr", "add", f"10.231.{net}.1/24", "dev", self.bridge],
                        ["ip", "link", "set", self.bridge, "up"]):
                subprocess.run(cmd, check=True, capture_output=True)
    def _stop_stale(self) -> None:
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.data_root).encode() not in cmdline:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)

    def start(self) -> None:
        """Start dockerd and wait until it answers on TLS."""
        self._stop_stale()
        tls = self.server_tls
        self._make_bridge()
        log = (self.run / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.run / "x"),
             "--pidfile", str(self.pidfile), "-H", f"unix://{self.sock}",
             "-H", f"tcp://127.0.0.1:{self.port}", "--tlsverify",
             "--tlscacert", str(tls / "ca.pem"), "--tlscert", str(tls / "cert.pem"),
             "--tlskey", str(tls / "key.pem"), f"--bridge={self.bridge}", "--iptables=false",
             "--ip6tables=false", "--shutdown-timeout", "2", "--config-file",
             str(self._empty_config())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                client = make_client(self.config, 10)
                try:
                    client.ping()
                    return
                finally:
                    client.close()
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd {self.name} did not start: see "
                                       f"{self.run / 'dockerd.log'}") from None
                time.sleep(0.2)

    def _empty_config(self) -> Path:
        path = self.run / "daemon.json"
        path.write_text("{}")
        return path

    def stop(self) -> None:
        """SIGTERM dockerd (its containers stop with it) and wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def restart(self) -> None:
        """Stop and start again on the same port and data root (a daemon restart)."""
        self.stop()
        self.start()

    def remove_sandboxes(self) -> None:
        """Remove every sandbox container (what a test left)."""
        client = self.local_client()
        try:
            for c in client.containers.list(all=True, filters={"label": LABEL_MANAGED},
                                            ignore_removed=True):
                remove_container(client, c.id)
        finally:
            client.close()


@contextlib.contextmanager
def _data_root(name: str, stack: contextlib.ExitStack) -> Iterator[Path]:
    """The cached data root of engine ``name`` for this tree, or a throwaway one while
    another run of the tree holds the cache."""
    tree = hashlib.sha256(str(Path(__file__).resolve().parents[2]).encode()).hexdigest()[:12]
    root = CACHE / tree / name
    root.mkdir(parents=True, exist_ok=True)
    lock: IO[bytes] = stack.enter_context((CACHE / tree / f"{name}.lock").open("wb"))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        tmp = Path(tempfile.mkdtemp(prefix=f"coderx-fleet-{name}-"))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    yield root


@pytest.fixture(scope="session")
def fleet_engines() -> Iterator[list[Engine]]:
    """Two extra engines (``a``, ``b``) holding the tested sandbox image."""
    ca = CA()
    with contextlib.ExitStack() as stack:
        run = Path(tempfile.mkdtemp(prefix="cxf-", dir="/tmp"))
        stack.callback(shutil.rmtree, run, True)
        engines = []
        for name in ("a", "b"):
            root = stack.enter_context(_data_root(name, stack))
            (run / name).mkdir()
            engines.append(Engine(name, root, run / name, ca))
        for e in engines:
            stack.callback(e.stop)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Engine.start, engines))
            list(pool.map(_with_image, engines))
        yield engines
        for e in engines:
            e.remove_sandboxes()


def _with_image(engine: Engine) -> None:
    source = docker.from_env(timeout=600)
    target = make_client(engine.config, 600)
    try:
        engine.remove_sandboxes()  # a killed earlier run's
        ensure_image(engine.name, target, IMAGE, source)
    finally:
        source.close()
        target.close()


@pytest.fixture
def fleet_ca() -> CA:
    """A second, unrelated CA (for certificates the engines must refuse)."""
    return CA("some other CA")
