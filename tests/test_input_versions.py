"""Versions of the input datasets: local checksums (with the optional cache) and bucket objects."""

import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from _services import S3_KEYS, moto_s3
from google.api_core import exceptions as api_exceptions
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import storage

from resources.input_versions import input_version, input_versions
from resources.objects import ObjectUnreachableError, ObjectURL, put_file
from risk_model.checksums import HASH_BLOCK_BYTES, inputs_version
from risk_model.errors import BadInputError, StoreUnavailableError
from risk_model.input_set import InputError, InputSet

ROLES = ("burn_probability", "conditional_risk", "wind_direction")
BUCKET = "risk-inputs"


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def flip_last_byte(path: Path, *, keep_mtime: bool = False) -> None:
    """Change one byte in place: same size, and with ``keep_mtime`` the same mtime too."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def copied_inputs(small_inputs: InputSet, tmp_path: Path) -> InputSet:
    """The synthetic GeoTIFFs of the small grid, copied so a test may edit them."""
    copies = {}
    for role in ROLES:
        source = Path(getattr(small_inputs, role))
        copies[role] = str(shutil.copy(source, tmp_path / source.name))
    return InputSet(**copies)


# --- Local files -------------------------------------------------------------------------------


def test_a_local_version_is_the_sha256_of_the_bytes(small_inputs: InputSet) -> None:
    path = Path(small_inputs.burn_probability)
    version = input_version(str(path))
    assert version == sha256_of(path)
    assert input_version(str(path)) == version  # stable across calls
    assert input_version(f"file://{path}") == version


def test_one_changed_byte_changes_the_version(tmp_path: Path) -> None:
    path = tmp_path / "layer.tif"
    path.write_bytes(bytes(range(256)) * 10)
    before = input_version(str(path))
    flip_last_byte(path, keep_mtime=True)  # same size and mtime: only the content tells
    after = input_version(str(path))
    assert after != before
    assert after == sha256_of(path)


def test_files_larger_than_a_block_are_hashed_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(HASH_BLOCK_BYTES + 3))  # crosses a block boundary
    version = input_version(str(path))
    assert version == sha256_of(path)
    flip_last_byte(path)  # the last byte is in the second block
    assert input_version(str(path)) != version


def test_a_missing_file_names_the_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tif"
    with pytest.raises(InputError, match=r"burn_probability input .*nope\.tif does not exist: .*risk inputs"):
        input_version(str(missing), name="burn_probability")
    with pytest.raises(InputError, match=r"input .*nope\.tif does not exist"):
        input_version(str(missing))


def test_an_empty_directory_is_not_an_input(tmp_path: Path) -> None:
    # A folder is versioned by its files (a Zarr hourly dataset); an empty one is no dataset.
    with pytest.raises(InputError, match="is an empty folder"):
        input_version(str(tmp_path))


@pytest.mark.parametrize("url", ["https://example.com/a.tif", "/vsicurl/https://example.com/a.tif", "gs://bucket-only"])
def test_unsupported_urls_are_rejected(url: str) -> None:
    with pytest.raises(InputError, match=r"cannot version|not a valid object URL"):
        input_version(url)


def test_input_versions_names_every_input(small_inputs: InputSet) -> None:
    versions = input_versions(small_inputs)
    assert list(versions) == list(ROLES)
    assert versions == {role: sha256_of(Path(getattr(small_inputs, role))) for role in ROLES}


def test_input_versions_names_the_missing_input(small_inputs: InputSet, tmp_path: Path) -> None:
    broken = small_inputs.model_copy(update={"wind_direction": str(tmp_path / "gone.tif")})
    with pytest.raises(InputError, match=r"wind_direction input .*gone\.tif does not exist"):
        input_versions(broken)


@pytest.mark.parametrize("changed", ROLES)
def test_inputs_version_changes_when_any_input_changes(copied_inputs: InputSet, changed: str) -> None:
    before = input_versions(copied_inputs)
    flip_last_byte(Path(getattr(copied_inputs, changed)), keep_mtime=True)
    after = input_versions(copied_inputs)
    assert {role for role in ROLES if before[role] != after[role]} == {changed}
    assert inputs_version(after) != inputs_version(before)


def test_inputs_version_ignores_order_only() -> None:
    versions = {"burn_probability": "sha256:aa", "conditional_risk": "sha256:bb", "wind_direction": "sha256:cc"}
    reordered = dict(reversed(list(versions.items())))
    assert inputs_version(reordered) == inputs_version(versions)
    assert len(inputs_version(versions)) == 12
    assert all(c in "0123456789abcdef" for c in inputs_version(versions))
    assert inputs_version({**versions, "wind_direction": "sha256:cd"}) != inputs_version(versions)


# --- The checksum cache ------------------------------------------------------------------------


def test_the_cache_is_used_and_invalidated_by_a_same_size_edit(tmp_path: Path) -> None:
    path, cache = tmp_path / "layer.tif", tmp_path / "cache" / "input-hashes.json"
    path.write_bytes(b"abc" * 1000)
    time.sleep(2.1)  # a file changed within the last 2 s is never cached
    real = input_version(str(path), cache=cache)
    assert real == sha256_of(path)
    entries = json.loads(cache.read_text())["entries"]
    assert list(entries) == [str(path.resolve())]

    # The cached checksum is what is returned while the file's stat is unchanged...
    entries[str(path.resolve())]["sha256"] = "0" * 64
    cache.write_text(json.dumps({"format": 1, "entries": entries}))
    assert input_version(str(path), cache=cache) == "sha256:" + "0" * 64
    # ...and a same-size edit with the old mtime restored still invalidates it (ctime moved).
    flip_last_byte(path, keep_mtime=True)
    assert input_version(str(path), cache=cache) == sha256_of(path) != real


def test_a_just_written_file_is_hashed_but_not_cached(tmp_path: Path) -> None:
    path, cache = tmp_path / "layer.tif", tmp_path / "hashes.json"
    path.write_bytes(b"fresh")
    assert input_version(str(path), cache=cache) == sha256_of(path)
    assert not cache.exists()


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"format": 99, "entries": {}}'])
def test_a_broken_cache_is_ignored(tmp_path: Path, content: str) -> None:
    path, cache = tmp_path / "layer.tif", tmp_path / "hashes.json"
    path.write_bytes(b"data")
    cache.write_text(content)
    assert input_version(str(path), cache=cache) == sha256_of(path)


# --- Bucket objects ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials and endpoint of the moto server, as a deployment would set them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEYS["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_KEYS["secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


def put(endpoint: str, key: str, body: bytes) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["access_key_id"],
        aws_secret_access_key=S3_KEYS["secret_access_key"],
    )
    client.put_object(Bucket=BUCKET, Key=key, Body=body)


def test_an_s3_version_is_the_etag(s3_env: str) -> None:
    put(s3_env, "inputs/bp.tif", b"first")
    version = input_version(f"s3://{BUCKET}/inputs/bp.tif")
    assert version == "s3-etag:" + hashlib.md5(b"first").hexdigest()  # single-part upload: the MD5
    assert input_version(f"/vsis3/{BUCKET}/inputs/bp.tif") == version
    put(s3_env, "inputs/bp.tif", b"first")
    assert input_version(f"s3://{BUCKET}/inputs/bp.tif") == version  # same bytes, same version
    put(s3_env, "inputs/bp.tif", b"second")
    assert input_version(f"s3://{BUCKET}/inputs/bp.tif") != version


def test_gdal_endpoint_variables_are_honoured(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    put(s3_env, "inputs/gdal.tif", b"gdal")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_S3_ENDPOINT", s3_env.removeprefix("http://"))
    monkeypatch.setenv("AWS_HTTPS", "NO")
    assert input_version(f"s3://{BUCKET}/inputs/gdal.tif") == "s3-etag:" + hashlib.md5(b"gdal").hexdigest()


def test_a_missing_s3_object_names_the_input(s3_env: str) -> None:
    with pytest.raises(InputError, match=rf"wind_direction input s3://{BUCKET}/nope\.tif does not exist"):
        input_version(f"s3://{BUCKET}/nope.tif", name="wind_direction")
    with pytest.raises(InputError, match="does not exist: check the bucket and key"):
        input_version("s3://no-such-bucket/a.tif")


class _BusyS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request "503 SlowDown", as S3 does when a prefix is hot."""

    def _busy(self) -> None:
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # http.server's names
        self._busy()

    def do_PUT(self) -> None:
        self._busy()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def busy_s3(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one request, not botocore's retries
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_s3_endpoint_is_a_store_to_retry_not_bad_input(
    s3_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(
        ObjectUnreachableError, match=rf"input s3://{BUCKET}/a\.tif cannot be checked.*did not answer"
    ) as raised:
        input_version(f"s3://{BUCKET}/a.tif")
    assert isinstance(raised.value, StoreUnavailableError) and not isinstance(raised.value, BadInputError)
    assert closed in str(raised.value) and "AWS_ENDPOINT_URL" in str(raised.value)
    local = tmp_path / "shares.tif"
    local.write_bytes(b"shares")
    with pytest.raises(ObjectUnreachableError, match="cannot be written"):
        put_file(local, ObjectURL("s3", BUCKET, "shares.tif"), "wind shares")


def test_a_busy_s3_endpoint_is_a_store_to_retry(busy_s3: str, tmp_path: Path) -> None:
    with pytest.raises(ObjectUnreachableError, match=r"cannot be checked now .*retry later"):
        input_version(f"s3://{BUCKET}/a.tif")
    local = tmp_path / "shares.tif"
    local.write_bytes(b"shares")
    with pytest.raises(ObjectUnreachableError, match=r"cannot be written now .*SlowDown.*retry later"):
        put_file(local, ObjectURL("s3", BUCKET, "shares.tif"), "wind shares")


def test_missing_aws_credentials_are_bad_input(s3_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(InputError, match="set the AWS credentials"):
        input_version(f"s3://{BUCKET}/a.tif")


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (api_exceptions.ServiceUnavailable("busy"), True),
        (api_exceptions.TooManyRequests("slow down"), True),
        (api_exceptions.InternalServerError("oops"), True),
        (api_exceptions.NotFound("no such bucket"), False),
        (api_exceptions.Forbidden("denied"), False),
    ],
)
def test_gcs_error_answers_are_sorted_into_busy_and_wrong(
    monkeypatch: pytest.MonkeyPatch, error: Exception, unreachable: bool
) -> None:
    class AnsweringBucket:
        def get_blob(self, key: str) -> None:
            raise error

    class Client:
        def bucket(self, name: str) -> AnsweringBucket:
            return AnsweringBucket()

    monkeypatch.setattr(storage, "Client", Client)
    with pytest.raises(ObjectUnreachableError if unreachable else InputError, match="cannot be checked"):
        input_version("gs://risk-bucket/a.tif")


class FakeBucket:
    """Stands in for ``storage.Bucket`` (no server); ``tests/test_gcs_emulator.py`` uses fake-gcs-server."""

    def __init__(self, objects: dict[str, int]) -> None:
        self.objects = objects

    def get_blob(self, key: str) -> SimpleNamespace | None:
        return SimpleNamespace(generation=self.objects[key]) if key in self.objects else None


def test_a_gcs_version_is_the_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = {"inputs/cr.tif": 1712345678901234}

    class FakeClient:
        def bucket(self, name: str) -> FakeBucket:
            assert name == "risk-bucket"
            return FakeBucket(objects)

    monkeypatch.setattr(storage, "Client", FakeClient)
    assert input_version("gs://risk-bucket/inputs/cr.tif") == "gcs-generation:1712345678901234"
    assert input_version("/vsigs/risk-bucket/inputs/cr.tif") == "gcs-generation:1712345678901234"
    objects["inputs/cr.tif"] += 1  # overwritten
    assert input_version("gs://risk-bucket/inputs/cr.tif") == "gcs-generation:1712345678901235"
    with pytest.raises(InputError, match=r"conditional_risk input gs://risk-bucket/nope\.tif does not exist"):
        input_version("gs://risk-bucket/nope.tif", name="conditional_risk")


def test_gcs_without_credentials_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_credentials() -> None:
        raise DefaultCredentialsError("Your default credentials were not found.")  # type: ignore[no-untyped-call]

    monkeypatch.setattr(storage, "Client", no_credentials)
    with pytest.raises(InputError, match=r"no Google Cloud credentials.*GOOGLE_APPLICATION_CREDENTIALS"):
        input_version("gs://risk-bucket/a.tif")
