"""What does reading the computed wind shares from a bucket cost a region? Measure both in one run.

The shares of the synthetic demo hourly cube are computed once and written as the ``wind_shares``
asset writes them: to a local GeoTIFF (the baseline, the local default) and to an object on moto's
S3 server on 127.0.0.1 (``RISK_WIND_SHARES=s3://...``, uploaded with
:func:`resources.wind_shares.publish_shares`). For a few demo regions, the whole
:func:`risk_model.compute.compute_region` is timed reading the shares locally, and from the object
under the region step's GDAL configuration (:func:`resources.wind_shares.shares_read_env`: the
endpoint, and no cached copy of the shares between two opens); the results must be identical
(checked). Also timed: the upload, and the version check a run makes first
(:func:`resources.wind_shares.stored_shares_version`: a HEAD, then GDAL reads the tag).

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_wind_objects.py [--repeats N]
"""

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the moto helper lives with the tests

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import xarray as xr  # noqa: E402
from _services import S3_KEYS, moto_s3  # noqa: E402

from resources.objects import gdal_endpoint_options  # noqa: E402
from resources.wind_shares import publish_shares, shares_read_env, stored_shares_version  # noqa: E402
from risk_model.compute import compute_region, window_halo  # noqa: E402
from risk_model.grid import Region, load_registry  # noqa: E402
from risk_model.input_set import InputSet  # noqa: E402
from risk_model.params import ModelParams  # noqa: E402
from risk_model.synthetic import generate_inputs  # noqa: E402
from risk_model.synthetic_wind import generate_hourly_cube  # noqa: E402
from risk_model.wind import fire_weather_wind_shares  # noqa: E402
from risk_model.wind_files import open_hourly  # noqa: E402
from risk_model.wind_inputs import WindShareBands  # noqa: E402

BUCKET = "bench-wind"
REGIONS = ("y1_x2", "y3_x5", "y6_x9")


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls, in seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    registry = load_registry("demo")
    params = ModelParams()
    with tempfile.TemporaryDirectory() as tmp, moto_s3(BUCKET) as endpoint:
        os.environ.update(
            AWS_ACCESS_KEY_ID=S3_KEYS["access_key_id"],
            AWS_SECRET_ACCESS_KEY=S3_KEYS["secret_access_key"],
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=endpoint,
        )
        rasters = generate_inputs(registry.grid, Path(tmp) / "inputs", seed=0)
        cube = Path(tmp) / "hourly.nc"
        generate_hourly_cube(registry.grid, cube, seed=0, hours=240)
        with open_hourly(str(cube)) as ds:
            shares = fire_weather_wind_shares(ds)
        local = str(Path(tmp) / "wind_shares_4km.tif")
        url = f"s3://{BUCKET}/derived/demo/wind_shares_4km.tif"
        tags = {"BENCH": "1"}
        publish_shares(shares, local, version="bench", tags={})
        upload = best_of(lambda: publish_shares(shares, url, version="bench", tags=tags), args.repeats)
        version = best_of(lambda: stored_shares_version(url), args.repeats)
        print(f"shares: {Path(local).stat().st_size / 1024:.0f} KiB GeoTIFF; moto on 127.0.0.1")
        print(f"upload (write + PUT): {upload * 1000:.0f} ms; version check (HEAD + GDAL tag): {version * 1000:.0f} ms")
        print()
        print(
            "| region | 8 share bands, local (baseline) | from s3://, fresh | ratio | from s3://, GDAL cache kept |"
            " ratio | compute_region local / from s3:// |"
        )
        print("|---|---|---|---|---|---|---|")
        from_file = InputSet(
            burn_probability=rasters.burn_probability, conditional_risk=rasters.conditional_risk, wind_direction=local
        )
        from_bucket = from_file.with_wind_shares(url)
        for region_id in REGIONS:
            region = registry.get(region_id)

            halo = window_halo(registry.grid, region.rows, params)

            def bands(path: str, spec: Region = region, halo: int = halo) -> list[object]:
                shares = WindShareBands(path, registry.grid, spec.rows, spec.cols, halo, params.wind_resampling)
                return [shares[i] for i in range(len(shares))]

            def fresh() -> list[object]:
                with shares_read_env(url):  # as the region step does
                    return bands(url)

            def cached() -> list[object]:
                with rasterio.Env(**gdal_endpoint_options()):  # the endpoint only: GDAL may reuse what it read
                    return bands(url)

            def locally(spec: Region = region) -> xr.Dataset:
                return compute_region(registry.grid, spec, from_file, params)

            def in_bucket(spec: Region = region) -> xr.Dataset:
                with shares_read_env(url):
                    return compute_region(registry.grid, spec, from_bucket, params)

            expected, got = locally(), in_bucket()
            for name in expected.data_vars:
                np.testing.assert_array_equal(got[name].values, expected[name].values)
            base, bucket, kept = (best_of(fn, args.repeats) for fn in (lambda: bands(local), fresh, cached))
            whole_local, whole_bucket = best_of(locally, args.repeats), best_of(in_bucket, args.repeats)
            print(
                f"| {region_id} | {base * 1000:.1f} ms | {bucket * 1000:.1f} ms | {bucket / base:.1f} | "
                f"{kept * 1000:.1f} ms | {kept / base:.1f} | {whole_local * 1000:.0f} / {whole_bucket * 1000:.0f} ms |"
            )


if __name__ == "__main__":
    main()
