"""In a real headless browser: a region's quicklook PNG renders on its partition page in the Dagster UI.

One region is materialized in-process into the project's instance; a real `dagster dev`
serves it, and Debian's chromium (driven by Playwright) opens the partition, opens the
``quicklook`` markdown and checks the image decoded: a data URI the UI's markdown
sanitiser dropped, or a PNG the browser could not decode, would fail here.
"""

import time
from pathlib import Path

import pytest
from _dagster_dev import CHROMIUM, dagster_dev, make_project, markdown_image_in_the_ui
from dagster import DagsterInstance, materialize

from risk_assets.assets import build_assets
from risk_assets.definitions import build_resources
from risk_model.grid import RegionRegistry
from risk_model.input_set import InputSet, local_input_set

REGION = "y0_x1"  # on the coast: the picture holds land and transparent ocean


@pytest.mark.slow
def test_quicklook_renders_on_the_partition_page(
    tmp_path: Path, demo_registry: RegionRegistry, demo_inputs: InputSet
) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is required: `make browser` installs it"
    started = time.monotonic()
    project = make_project(tmp_path, demo_inputs)
    with DagsterInstance.from_config(str(project.home)) as instance:
        assets = build_assets(demo_registry)
        # The rasters with ready-made shares, as the project's RISK_INPUTS names them.
        resources = build_resources(project.settings, inputs=local_input_set(project.settings.inputs_dir))
        assert materialize(
            assets, selection=["model_params", "raster_template"], resources=resources, instance=instance
        ).success
        built = materialize(
            assets, selection=["risk_raster"], partition_key=REGION, resources=resources, instance=instance
        )
        assert built.success
        [event] = built.get_asset_materialization_events()
        markdown = event.materialization.metadata["quicklook"].value
    assert isinstance(markdown, str)
    data_uri = markdown.split("](", 1)[1].split(")", 1)[0]
    assert data_uri.startswith("data:image/png;base64,")

    with dagster_dev(project):
        src, size = markdown_image_in_the_ui(
            project.url,
            f"/assets/risk_raster?view=partitions&partition={REGION}",
            "quicklook",
            tmp_path / "quicklook-dialog.png",
        )

    assert src == data_uri, "the UI shows the very PNG the materialization recorded"
    assert size == [256, 256], "the browser decoded the 256 x 256 px demo region's PNG"
    print(f"quicklook UI test: {time.monotonic() - started:.1f} s")
