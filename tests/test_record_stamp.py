"""The record stamp: valid for one commit-log tip while Dagster's SQLite index is untouched, void after any write."""

from pathlib import Path

from dagster import AssetKey, AssetMaterialization, DagsterInstance

from risk_assets.record_stamp import index_state, stamp_matches, write_stamp

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
