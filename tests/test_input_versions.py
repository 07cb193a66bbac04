"""Versions of the input datasets: local checksums (with the optional cache) and bucket objects."""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from _services import S3_KEYS, moto_s3
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import storage

from resources.input_versions import input_version, input_versions
from risk_model.checksums import HASH_BLOCK_BYTES, inputs_version
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
