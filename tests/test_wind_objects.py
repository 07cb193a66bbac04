"""The computed wind shares in a bucket, where every pod reads them (``RISK_WIND_SHARES``, issue #12).

On the moto S3 server and on fake-gcs-server: the prepare job computes the shares in this process
and uploads them; a region is then built in another process with a ``RISK_HOME`` of its own (as a
region pod is), which can only have read them from the bucket; a second prepare uploads nothing.
Real Dagster runs, real servers, GDAL's ``/vsis3/`` and ``/vsigs/`` readers.
"""

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import xarray as xr
from _gcs import fake_gcs
from _services import ROOT, S3_KEYS, free_port, moto_s3, s3_store
from dagster import DagsterInstance
from google.cloud import storage

from resources.local_store import LocalIcechunkStore
from resources.objects import gdal_endpoint_options
from resources.store import IcechunkStore
from resources.target import InputsResource, ModelParamsResource, current_target
from resources.wind_shares import stored_shares_version
from risk_assets.definitions import PREPARE_JOB, REGION_JOB, build_definitions
from risk_assets.deployment import DeploymentConfigError, deployment_from_env
from risk_assets.keys import WIND_SHARES_KEY
from risk_assets.settings import Settings
from risk_assets.sources import DATA_VERSION_TAG
from risk_model.compute import compute_region
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet
from risk_model.params import DEFAULT_PARAMS_PATH
from risk_model.schema import VARIABLES
from risk_model.synthetic_wind import generate_hourly_cube

BUCKET = "risk-wind"
WORKER = Path(__file__).with_name("_wind_region_worker.py")


@dataclass
class Bucket:
    """One emulated bucket: the environment a pod gets to reach it, and what it holds."""

    scheme: str
    env: dict[str, str]
    workdir: Path
    endpoint: str = ""
    removed_env: tuple[str, ...] = field(default_factory=tuple)

    def url(self, key: str) -> str:
        return f"{self.scheme}://{BUCKET}/{key}"

    def _s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **_boto_keys())

    def uploads(self, key: str) -> list[str]:
        """Every upload of ``key``, oldest first: S3 version ids (the bucket is versioned), GCS generations."""
        if self.scheme == "s3":
            listed = self._s3().list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
            return [str(v["VersionId"]) for v in sorted(listed, key=lambda v: v["LastModified"])]
        blob = storage.Client().bucket(BUCKET).get_blob(key)
        return [] if blob is None else [str(blob.generation)]

    def etag(self, key: str) -> str:
        if self.scheme == "s3":
            return str(self._s3().head_object(Bucket=BUCKET, Key=key)["ETag"]).strip('"')
        blob = storage.Client().bucket(BUCKET).get_blob(key)
        assert blob is not None
        return str(blob.etag)

    def download(self, key: str, path: Path) -> Path:
        if self.scheme == "s3":
            self._s3().download_file(BUCKET, key, str(path))
        else:
            storage.Client().bucket(BUCKET).blob(key).download_to_filename(str(path))
        return path


def _boto_keys() -> dict[str, str]:
    return {"aws_access_key_id": S3_KEYS["access_key_id"], "aws_secret_access_key": S3_KEYS["secret_access_key"]}


#: Variables that would point a process at another S3 endpoint than the one a test sets.
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_PROFILE")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_boto_keys())
        # Versioned: every PUT makes a version, so "nothing was uploaded again" can be counted.
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield endpoint


def _s3_env(endpoint: str) -> dict[str, str]:
    """What a pod reaching the bucket is given: credentials and boto3's endpoint variable (GDAL's is derived)."""
    return {
        "AWS_ACCESS_KEY_ID": S3_KEYS["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


@pytest.fixture
def s3_bucket(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    env = _s3_env(moto_endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in S3_ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return Bucket("s3", env, tmp_path, endpoint=moto_endpoint, removed_env=S3_ENDPOINT_VARIABLES)


@pytest.fixture(scope="module")
def gcs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_gcs(BUCKET, tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server.url


@pytest.fixture
def gcs_bucket(gcs_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    # google-cloud-storage reads STORAGE_EMULATOR_HOST (set by fake_gcs); GDAL's CPL_GS_ENDPOINT is derived.
    monkeypatch.delenv("CPL_GS_ENDPOINT", raising=False)
    return Bucket("gs", {"STORAGE_EMULATOR_HOST": gcs_url}, tmp_path, removed_env=("CPL_GS_ENDPOINT",))


class Deployment:
    """A deployment with an hourly wind dataset whose shares go to a bucket object."""

    def __init__(self, bucket: Bucket, store: IcechunkStore, store_config: dict[str, Any], inputs: InputSet) -> None:
        self.bucket = bucket
        self.key = f"derived/{uuid.uuid4().hex}/wind_shares_4km.tif"
        self.url = bucket.url(self.key)
        self.store = store
        self.store_config = store_config
        tmp = bucket.workdir
        self.cube = tmp / "inputs" / "hourly.nc"
        self.params = tmp / "params.yaml"
        self.params.write_text(DEFAULT_PARAMS_PATH.read_text())
        self.inputs = InputSet(
            burn_probability=inputs.burn_probability,
            conditional_risk=inputs.conditional_risk,
            wind_hourly=str(self.cube),
        )
        self.home = tmp / "prepare-home"
        self.settings = Settings(home=self.home, grid="demo", params_path=self.params)
        self.defs = build_definitions(self.settings, store=store, inputs=self.inputs, wind_shares=self.url)

    def prepare(self, instance: DagsterInstance) -> Any:
        return self.defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance, raise_on_error=False)

    def region_in_another_process(self, region: str) -> dict[str, Any]:
        """Build ``region`` in a new process configured like a region pod, with a RISK_HOME of its own."""
        home = self.bucket.workdir / "region-pod-home"
        home.mkdir()
        env = {name: value for name, value in os.environ.items() if name not in self.bucket.removed_env}
        env.update(self.bucket.env)
        env.update(
            RISK_HOME=str(home),
            RISK_GRID="demo",
            RISK_PARAMS=str(self.params),
            RISK_STORE=json.dumps(self.store_config),
            RISK_INPUTS=self.inputs.model_dump_json(),
            RISK_WIND_SHARES=self.url,
            PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        )
        done = subprocess.run(
            [sys.executable, str(WORKER), region], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr[-4000:]
        outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        assert not list(home.rglob("*.tif")), "the region pod wrote no shares of its own"
        return outcome


def _deployment(bucket: Bucket, demo_inputs: InputSet, demo_registry: RegionRegistry) -> Deployment:
    if bucket.scheme == "s3":
        store = s3_store(bucket.endpoint, BUCKET, f"raster-{uuid.uuid4().hex}.icechunk")
        config = {"kind": "s3", **store.model_dump(exclude_unset=True)}
    else:
        # Icechunk cannot write to fake-gcs-server (tests/test_gcs_emulator.py): the raster is local
        # here, the shares are in the emulated bucket.
        store = LocalIcechunkStore(path=str(bucket.workdir / "raster.icechunk"))
        config = {"kind": "local", "path": store.path}
    deployment = Deployment(bucket, store, config, demo_inputs)
    generate_hourly_cube(demo_registry.grid, deployment.cube, seed=0, hours=240)
    return deployment


def _shares_materializations(instance: DagsterInstance) -> list[dict[str, Any]]:
    records = instance.fetch_materializations(WIND_SHARES_KEY, limit=100, ascending=True).records
    return [
        {"version": str(m.tags[DATA_VERSION_TAG]), **{k: v.value for k, v in m.metadata.items()}}
        for m in (r.asset_materialization for r in records)
        if m is not None and m.tags
    ]


def _failure(result: Any) -> str:
    return " ".join(str(e.event_specific_data) for e in result.all_events if e.event_type_value == "STEP_FAILURE")


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_region_pod_reads_the_shares_another_pod_uploaded(
    scheme: str, request: pytest.FixtureRequest, demo_inputs: InputSet, demo_registry: RegionRegistry
) -> None:
    bucket: Bucket = request.getfixturevalue(f"{'s3' if scheme == 's3' else 'gcs'}_bucket")
    deployment = _deployment(bucket, demo_inputs, demo_registry)
    with DagsterInstance.ephemeral() as instance:
        first = deployment.prepare(instance)
        assert first.success, _failure(first)
        [shares] = _shares_materializations(instance)
        assert shares["status"] == "computed" and shares["path"] == deployment.url
        uploads = bucket.uploads(deployment.key)
        assert len(uploads) == 1
        etag = bucket.etag(deployment.key)
        # The tag GDAL reads from the object is the asset's data version.
        assert stored_shares_version(deployment.url) == shares["version"]
        assert not list(deployment.home.rglob("*.tif")), "the shares went to the bucket, not to a local file"

        again = deployment.prepare(instance)
        assert again.success, _failure(again)
        assert len(_shares_materializations(instance)) == 1, "current shares are not materialized again"
        assert bucket.uploads(deployment.key) == uploads, "nor uploaded again"
        assert bucket.etag(deployment.key) == etag

    region = demo_registry.ids[len(demo_registry.ids) // 2]
    outcome = deployment.region_in_another_process(region)
    assert outcome["success"], outcome["failures"]

    # What it committed is the region computed here from the bucket's shares.
    local_shares = bucket.download(deployment.key, bucket.workdir / "downloaded.tif")
    resources = deployment.defs.resources or {}
    params, inputs = resources["params"], resources["inputs"]
    assert isinstance(params, ModelParamsResource) and isinstance(inputs, InputsResource)
    target = current_target(params, inputs, demo_registry.ids)
    assert outcome["metadata"]["branch"] == target.version.branch
    spec = demo_registry.get(region)
    expected = compute_region(
        demo_registry.grid,
        spec,
        deployment.inputs.with_wind_shares(str(local_shares)),
        target.region_params(region),
    )
    session = deployment.store.repository().readonly_session(branch=target.version.branch)
    stored = xr.open_zarr(session.store, consolidated=False).isel(latitude=spec.rows, longitude=spec.cols)
    assert float(np.nanmax(expected["risk"].values)) > 0, "a region with risk: the wind shaped it"
    for variable in VARIABLES:
        np.testing.assert_array_equal(stored[variable.name].values, expected[variable.name].values)


@pytest.mark.slow
def test_an_unreachable_or_missing_bucket_fails_clearly(
    s3_bucket: Bucket, demo_inputs: InputSet, demo_registry: RegionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _deployment(s3_bucket, demo_inputs, demo_registry)
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)  # the store keeps its own endpoint: only the shares are cut off
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one connection attempt, not botocore's retries
    with DagsterInstance.ephemeral() as instance:
        result = deployment.prepare(instance)
        assert not result.success
        message = _failure(result)
        assert f"wind shares {deployment.url} cannot be checked" in message
        # an endpoint that does not answer is a store to check and retry, not bad input
        assert "the endpoint did not answer; check it (AWS_ENDPOINT_URL)" in message and closed in message
        # A region run (the template is committed) says the same, rather than "materialize wind_shares first".
        region = deployment.defs.resolve_job_def(REGION_JOB).execute_in_process(
            instance=instance, partition_key=demo_registry.ids[0], raise_on_error=False
        )
        assert not region.success
        assert f"wind shares {deployment.url} cannot be checked" in _failure(region)

        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
        url = "s3://no-such-bucket-here/wind_shares.tif"
        defs = build_definitions(deployment.settings, store=deployment.store, inputs=deployment.inputs, wind_shares=url)
        result = defs.resolve_job_def(PREPARE_JOB).execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        message = _failure(result)
        assert f"wind shares {url} cannot be written" in message and "NoSuchBucket" in message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("s3://risk-wind", "not a valid object URL"),
        ("gs://risk-wind/", "not a valid object URL"),
        ("s3://Risk_Wind/shares.tif", "not a valid object URL"),
        ("s3://risk-wind/derived/", "does not name a GeoTIFF"),
        ("gs://risk-wind/derived/shares.zarr", "does not name a GeoTIFF"),
        ("https://example.com/shares.tif", "neither an s3:// or gs:// object nor a local path"),
        ("/vsis3/risk-wind/shares.tif", "GDAL's name of a file"),
        ("var/derived/shares.tif", "relative path"),
    ],
)
def test_a_bad_wind_shares_location_is_refused_by_name(value: str, reason: str) -> None:
    with pytest.raises(
        DeploymentConfigError, match=rf"RISK_WIND_SHARES '{re.escape(value)}'.*{reason}.*write (s3|gs)://"
    ):
        deployment_from_env({"RISK_WIND_SHARES": value})


def test_wind_shares_locations_that_are_accepted(tmp_path: Path) -> None:
    assert deployment_from_env({}).wind_shares is None, "unset: the local default under RISK_HOME"
    for value in ("s3://risk-wind/derived/conus/wind.tif", "gs://wildfire_risk/wind.TIFF", str(tmp_path / "w.tif")):
        assert deployment_from_env({"RISK_WIND_SHARES": value}).wind_shares == value
    # The definitions take it; unset, the local default is unchanged.
    settings = Settings(home=tmp_path, grid="demo")
    inputs = (build_definitions(settings, wind_shares="gs://risk-wind/w.tif").resources or {})["inputs"]
    assert isinstance(inputs, InputsResource) and inputs.shares_path() == "gs://risk-wind/w.tif"
    default = (build_definitions(settings).resources or {})["inputs"]
    assert isinstance(default, InputsResource) and default.shares_path() == str(settings.wind_shares_path)


def test_gdal_gets_the_endpoints_the_cloud_clients_use(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*S3_ENDPOINT_VARIABLES, "AWS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST", "CPL_GS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert gdal_endpoint_options() == {}, "nothing set: the real services"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    assert gdal_endpoint_options() == {
        "AWS_S3_ENDPOINT": "127.0.0.1:9000",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "CPL_GS_ENDPOINT": "http://127.0.0.1:4443/",
        "GS_NO_SIGN_REQUEST": "YES",
    }
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.internal")  # the S3-specific one wins
    assert gdal_endpoint_options()["AWS_S3_ENDPOINT"] == "minio.internal"
    assert gdal_endpoint_options()["AWS_HTTPS"] == "YES"
    # GDAL's own variables, once set, are left alone.
    monkeypatch.setenv("AWS_S3_ENDPOINT", "s3.example.org")
    monkeypatch.setenv("CPL_GS_ENDPOINT", "http://other/")
    assert gdal_endpoint_options() == {}


def test_the_build_decision_still_loads_no_raster_library() -> None:
    """The inputs resource validates the shares location without rasterio or xarray: the `risk build`
    decision imports it before anything heavy (risk_assets.resource_wiring)."""
    probe = (
        "import sys, risk_assets.resource_wiring, risk_assets.deployment; "
        "print(sorted(m for m in ('rasterio', 'xarray', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
