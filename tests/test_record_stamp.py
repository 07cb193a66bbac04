"""The record stamp: valid for one commit-log tip while Dagster's SQLite index is untouched, void after any write.

And the refs digest it keeps for a local repository: changed by every commit and ref change, by no read.
"""

from pathlib import Path

import zarr
from dagster import AssetKey, AssetMaterialization, DagsterInstance

from resources.local_store import LocalIcechunkStore
from risk_assets.record_stamp import index_state, stamp_answers, stamp_matches, write_stamp

KEY = AssetKey("risk_raster")


def test_the_stamp_holds_until_the_instance_records_anything(tmp_path: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "var" / "recorded.json"
    home.mkdir()
    assert index_state(home) is None, "no SQLite instance here: never trusted"
    write_stamp(stamp, home, "build-v", "TIP1")
    assert not stamp.exists() and not stamp_matches(stamp, home, "build-v", "TIP1")

    with DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(AssetMaterialization(KEY, partition="y0_x1"))
    assert index_state(home) is not None
    assert not stamp_matches(stamp, home, "build-v", "TIP1"), "no stamp written yet"
    write_stamp(stamp, home, "build-v", "TIP1")
    assert stamp_matches(stamp, home, "build-v", "TIP1")
    assert not stamp_matches(stamp, home, "build-v", "TIP2"), "another tip: new commits since"
    assert not stamp_matches(stamp, home, "build-w", "TIP1"), "another version's branch"

    # Anything Dagster records or wipes afterwards voids it.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.wipe_assets([KEY])
    assert not stamp_matches(stamp, home, "build-v", "TIP1")
    write_stamp(stamp, home, "build-v", "TIP1")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(AssetMaterialization(KEY, partition="y0_x2"))
    assert not stamp_matches(stamp, home, "build-v", "TIP1")


def test_an_unreadable_stamp_is_no_stamp(tmp_path: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "recorded.json"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(AssetMaterialization(KEY, partition="y0_x1"))
    stamp.write_text("{not json")
    assert not stamp_matches(stamp, home, "b", "t")


def test_the_refs_digest_changes_with_every_commit_and_ref_change_and_never_with_a_read(tmp_path: Path) -> None:
    store = LocalIcechunkStore(path=str(tmp_path / "repo.icechunk"))
    assert store.refs_digest() is None, "no repository yet"
    repo = store.repository(create=True)
    seen = [store.refs_digest()]

    def changed() -> bool:
        digest = store.refs_digest()
        fresh = digest is not None and digest not in seen
        seen.append(digest)
        return fresh

    session = repo.writable_session("main")
    zarr.create_group(session.store)
    session.commit("first")
    assert changed(), "a commit"
    first = repo.lookup_branch("main")
    repo.create_branch("build-v", first)
    assert changed(), "a new branch"
    repo.create_tag("release-1", first)
    assert changed(), "a new tag"
    session = repo.writable_session("build-v")
    zarr.open_group(session.store).attrs["x"] = 1
    session.commit("second")
    assert changed(), "a commit on another branch"
    repo.reset_branch("build-v", first)
    assert changed(), "a branch reset (regions lost)"
    before = store.refs_digest()
    list(repo.ancestry(branch="main"))
    zarr.open_group(repo.readonly_session(branch="build-v").store, mode="r")
    LocalIcechunkStore(path=store.path).repository()
    assert store.refs_digest() == before, "reads and opens write nothing"


def test_a_stamp_answers_only_its_version_at_its_refs_with_the_index_untouched(tmp_path: Path) -> None:
    home, stamp = tmp_path / "home", tmp_path / "var" / "recorded.json"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(AssetMaterialization(KEY, partition="y0_x1"))
    assert not stamp_answers(stamp, home, "v1", "REFS"), "no stamp yet"
    write_stamp(stamp, home, "build-v1", "TIP1", version="v1", refs="REFS")
    assert stamp_answers(stamp, home, "v1", "REFS")
    assert stamp_matches(stamp, home, "build-v1", "TIP1"), "the tip check still holds"
    assert not stamp_answers(stamp, home, "v2", "REFS"), "another version (parameters, inputs, code)"
    assert not stamp_answers(stamp, home, "v1", "OTHER"), "another commit log"
    assert not stamp_answers(stamp, home, "v1", None), "an object store: never answered from the stamp"
    write_stamp(stamp, home, "build-v1", "TIP1")  # written without refs (an object store)
    assert not stamp_answers(stamp, home, "v1", None)
    write_stamp(stamp, home, "build-v1", "TIP1", version="v1", refs="REFS")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.wipe_assets([KEY])
    assert not stamp_answers(stamp, home, "v1", "REFS"), "Dagster's records changed since"


def test_object_stores_give_no_refs_digest() -> None:
    from resources.cloud_stores import GCSIcechunkStore, S3IcechunkStore

    assert S3IcechunkStore(bucket="b", prefix="p").refs_digest() is None
    assert GCSIcechunkStore(bucket="b", prefix="p").refs_digest() is None
