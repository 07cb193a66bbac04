"""Where the wind shares computed from the hourly dataset live: a local GeoTIFF, or an object in a bucket.

On Kubernetes every step runs in a pod of its own, so the shares one pod computes must be where
every region pod can read them: an ``s3://`` or ``gs://`` object. The ``wind_shares`` asset writes
the GeoTIFF to a temporary local file and uploads it whole (:func:`publish_shares`); its version
tag and the region runs' reads go through GDAL (``/vsis3/``, ``/vsigs/``), configured by
:func:`shares_read_env` with the endpoint variables the cloud clients use (:mod:`resources.objects`).
"""

import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from resources.objects import gdal_endpoint_options, object_version, parse_object_url, put_file
from risk_model.input_set import InputError

# rasterio, xarray and the GeoTIFF code load where rasters are read or written, not at import: the
# inputs resource (resources.target) imports this module, and the `risk build` decision imports
# that resource before anything heavy loads (risk_assets.resource_wiring).
if TYPE_CHECKING:
    import rasterio
    import xarray as xr

#: File name endings of a GeoTIFF: the shares location names a file, never a folder or a prefix.
GEOTIFF_SUFFIXES = (".tif", ".tiff")


def check_shares_location(location: str, label: str = "wind shares location") -> str:
    """``location`` if the shares can be written there, else a clear error.

    Accepted: ``s3://<bucket>/<key>.tif``, ``gs://<bucket>/<key>.tif`` (every pod reads them), or
    an absolute local path ending in ``.tif`` (one machine, or a volume every pod mounts).

    Raises
    ------
    InputError
        Naming the value, what is wrong and what to write instead.
    """
    expected = "write s3://<bucket>/<key>.tif, gs://<bucket>/<key>.tif or an absolute local path ending in .tif"
    if location.startswith("/vsi"):
        raise InputError(f"{label} {location!r} is GDAL's name of a file, not a location to configure: {expected}")
    obj = parse_object_url(location, f"{label} {location!r}")
    if obj is not None:
        name = PurePosixPath(obj.key).name
    elif "://" in location:
        raise InputError(f"{label} {location!r} is neither an s3:// or gs:// object nor a local path: {expected}")
    elif not Path(location).is_absolute():
        raise InputError(f"{label} {location!r} is a relative path (relative to each pod's folder): {expected}")
    else:
        name = Path(location).name
    if not name.lower().endswith(GEOTIFF_SUFFIXES):
        raise InputError(f"{label} {location!r} does not name a GeoTIFF file: {expected}")
    return location


def shares_read_env(location: str | None) -> "rasterio.Env":
    """The GDAL configuration under which the shares at ``location`` (and the other inputs) are read.

    The endpoints of :func:`resources.objects.gdal_endpoint_options`; for shares in a bucket, GDAL
    also keeps no cached copy of them between two opens (``CPL_VSIL_CURL_NON_CACHED``): a process
    that read the old object (a long-lived worker, a test running several jobs) must see the new
    one once it is uploaded. Within one open, GDAL still caches what it read.
    """
    import rasterio

    options = gdal_endpoint_options()
    obj = parse_object_url(location, "wind shares location") if location else None
    if obj is not None:
        options["CPL_VSIL_CURL_NON_CACHED"] = obj.gdal_path
    return rasterio.Env(**options)


def stored_shares_version(location: str) -> str | None:
    """The version tag of the shares at ``location``; None if there are none there.

    For an object, its existence is checked with the cloud client first (a missing object is
    None; an unreachable bucket is an error that says so), then its tag is read through GDAL.

    Raises
    ------
    InputError
        If the bucket cannot be reached or read, by the client or by GDAL.
    """
    from risk_model.wind_files import read_shares_version

    obj = parse_object_url(location, f"wind shares {location}")
    if obj is None:
        return read_shares_version(location)
    if object_version(obj, f"wind shares {location}") is None:
        return None
    with shares_read_env(location):
        found = read_shares_version(obj.url)
    if found is None:
        # The client sees the object, GDAL does not: they look at different endpoints.
        raise InputError(
            f"wind shares {location} exist for the cloud client but GDAL cannot find them: set the same endpoint "
            "for both (AWS_ENDPOINT_URL or AWS_S3_ENDPOINT; STORAGE_EMULATOR_HOST or CPL_GS_ENDPOINT)"
        )
    return found


def publish_shares(shares: "xr.DataArray", location: str, *, version: str, tags: dict[str, str]) -> str | None:
    """Write the shares GeoTIFF (:func:`risk_model.wind_files.write_shares_geotiff`) to ``location``.

    A local path is written in place (renamed into place: readers never see half a file). An
    object is written to a temporary local file first, then uploaded whole
    (:func:`resources.objects.put_file`: readers see the old object or the new one).

    Returns
    -------
    str or None
        The uploaded object's version (``s3-etag:...``, ``gcs-generation:...``); None for a local path.

    Raises
    ------
    InputError
        If the object cannot be uploaded.
    """
    from risk_model.wind_files import write_shares_geotiff

    obj = parse_object_url(location, f"wind shares {location}")
    if obj is None:
        write_shares_geotiff(shares, Path(location), version=version, tags=tags)
        return None
    with tempfile.TemporaryDirectory(prefix="wind-shares-") as scratch:
        local = Path(scratch) / PurePosixPath(obj.key).name
        write_shares_geotiff(shares, local, version=version, tags=tags)
        return put_file(local, obj, f"wind shares {location}", content_type="image/tiff")
