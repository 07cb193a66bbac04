"""The wind shares as files: the GeoTIFF written from the hourly dataset, its version tag, and
opening and checking the hourly dataset (:mod:`risk_model.wind` computes the shares)."""

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from rasterio.warp import transform_bounds

from risk_model.grid import GridSpec
from risk_model.input_set import InputError
from risk_model.inputs import WIND_BANDS
from risk_model.wind import DIRECTIONS, VERSION_TAG, FloatArray, HourlyDatasetError, check_variables, dataset_crs_wkt


def _regular_step(values: FloatArray, name: str, label: str) -> float:
    if values.size < 2:
        raise HourlyDatasetError(f"{label}: {name} has {values.size} value(s); the grid needs at least 2 per axis")
    steps = np.diff(values)
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0) or steps[0] == 0:
        raise HourlyDatasetError(f"{label}: {name} is not regularly spaced: the shares need a regular projected grid")
    return float(steps[0])


def shares_transform(x: FloatArray, y: FloatArray, label: str = "the wind shares") -> tuple[Affine, bool]:
    """North-up transform of cell centres ``x``, ``y``, and whether rows must be flipped to get there."""
    dx, dy = _regular_step(x, "x", label), _regular_step(y, "y", label)
    top = float(y.max()) + abs(dy) / 2.0
    return Affine(dx, 0.0, float(x[0]) - dx / 2.0, 0.0, -abs(dy), top), dy > 0


def write_shares_geotiff(shares: xr.DataArray, path: Path, *, version: str, tags: Mapping[str, str]) -> str:
    """Write the shares as an 8-band float32 GeoTIFF on their own grid and CRS, north-up.

    Written under a temporary name and renamed into place, so a reader never sees half a file;
    NaN is the no-data value. The file's :data:`VERSION_TAG` tag holds ``version``.

    Parameters
    ----------
    shares
        The output of :func:`fire_weather_wind_shares`.
    path
        The GeoTIFF to write (its folder is created).
    version
        The shares' version (:func:`shares_version`).
    tags
        More GeoTIFF tags (provenance).

    Returns
    -------
    str
        The path written.
    """
    transform, flip = shares_transform(shares["x"].values, shares["y"].values)
    data = shares.transpose("direction", "y", "x").values.astype(np.float32)
    if flip:
        data = data[:, ::-1, :]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": WIND_BANDS,
        "dtype": "float32",
        "crs": CRS.from_wkt(str(shares.attrs["crs_wkt"])),
        "transform": transform,
        "nodata": float("nan"),
        "compress": "deflate",
    }
    with rasterio.open(partial, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**{VERSION_TAG: version}, **tags)
        for band, name in enumerate(DIRECTIONS, start=1):
            dst.set_band_description(band, f"share of fire-weather hours with wind from {name}")
    os.replace(partial, path)
    return str(path)


def _is_url(path: str) -> bool:
    return "://" in path or path.startswith("/vsi")


def read_shares_version(path: str) -> str | None:
    """The version tag of a shares GeoTIFF; None if it does not exist or has none.

    ``path`` is a local path, or a URL GDAL reads (``s3://``, ``gs://``, ``/vsis3/``...): with
    the endpoint and credentials of the GDAL configuration in effect (``rasterio.Env``).

    Raises
    ------
    InputError
        If a URL cannot be read for another reason than its absence (endpoint unreachable,
        access denied): the message holds GDAL's reason.
    """
    if not _is_url(path):
        if not Path(path).is_file():
            return None
        try:
            with rasterio.open(path) as src:
                tags: dict[str, str] = src.tags()
        except RasterioIOError:
            return None
        return tags.get(VERSION_TAG)
    try:
        with rasterio.open(path) as src:
            tags = src.tags()
    except RasterioIOError as exc:
        if "does not exist in the file system" in str(exc):
            return None
        raise InputError(
            f"wind shares {path} cannot be read ({exc}): check the bucket, the credentials and "
            "GDAL's endpoint variables (AWS_S3_ENDPOINT, CPL_GS_ENDPOINT)"
        ) from exc
    return tags.get(VERSION_TAG)


def require_shares_version(path: str, found: str | None, expected: str) -> None:
    """Refuse shares that were not computed from the configured dataset and percentile.

    Parameters
    ----------
    path
        Where the shares are (for the message).
    found
        Their version tag (:func:`read_shares_version`); None if there are none.
    expected
        The version the configured dataset and percentile give.

    Raises
    ------
    InputError
        If ``found`` is not ``expected``: its message says to materialize ``wind_shares`` first.
    """
    if found != expected:
        held = f"holds {found}" if found else "does not exist or has no version tag"
        raise InputError(
            f"wind shares {path} {held}, but the hourly dataset and percentile configured now give {expected}: "
            "materialize the wind_shares asset first (`risk build` does; or run the prepare_raster job)"
        )


def check_shares_current(path: str, expected: str) -> None:
    """:func:`require_shares_version` of the shares at ``path``, read with :func:`read_shares_version`.

    Raises
    ------
    InputError
        If the shares are missing, hold another version, or cannot be read.
    """
    require_shares_version(path, read_shares_version(path), expected)


def open_hourly(path: str) -> xr.Dataset:
    """Open an hourly dataset lazily: a NetCDF file, or a Zarr store (a folder or ``*.zarr``).

    Raises
    ------
    HourlyDatasetError
        If it cannot be opened.
    """
    is_zarr = path.rstrip("/").endswith(".zarr") or Path(path).is_dir()
    try:
        if is_zarr:
            return xr.open_dataset(path, engine="zarr", chunks=None)
        return xr.open_dataset(path, chunks=None)
    except (OSError, ValueError, KeyError) as exc:
        raise HourlyDatasetError(
            f"hourly wind dataset {path} cannot be opened ({exc}): point wind_hourly at a NetCDF file or a Zarr store"
        ) from exc


def check_hourly_dataset(path: str, grid: GridSpec) -> None:
    """Check that an hourly dataset has the variables, a CRS and a regular grid covering ``grid``.

    Reads metadata and coordinates only.

    Raises
    ------
    HourlyDatasetError
        Naming the dataset, what is wrong and what to do.
    """
    label = f"wind_hourly input {path}"
    with open_hourly(path) as ds:
        check_variables(ds, label)
        wkt = dataset_crs_wkt(ds, label)
        x, y = ds["x"].values.astype(np.float64), ds["y"].values.astype(np.float64)
        transform, _ = shares_transform(x, y, label)
    try:
        crs = CRS.from_wkt(wkt)
    except CRSError as exc:
        raise HourlyDatasetError(f"{label}: its CRS WKT cannot be read ({exc}): fix the crs_wkt attribute") from exc
    west, south, east, north = transform_bounds(
        grid.crs, crs, *grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1])), densify_pts=21
    )
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * x.size, top + transform.e * y.size
    if west < left or east > right or south < bottom or north > top:
        raise HourlyDatasetError(
            f"{label} (x {left:.0f} to {right:.0f}, y {bottom:.0f} to {top:.0f} m) does not cover grid "
            f"{grid.name!r} (x {west:.0f} to {east:.0f}, y {south:.0f} to {north:.0f} m in its CRS): "
            "use a dataset covering the whole grid"
        )
