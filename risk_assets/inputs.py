"""The three input rasters: where they are, checking them, versioning them, and reading a region's window.

Inputs are named by a path or URL string. Local paths and ``gs://`` / ``s3://`` URLs all go
through the same :func:`rasterio.open` call; rasterio maps the URL schemes to GDAL's
``/vsigs/`` and ``/vsis3/`` file systems, and credentials come from GDAL's usual
environment variables.

Every array returned here is float64 in the output grid's orientation: row 0 is the
southern edge (latitude ascending), although GeoTIFFs are normally stored north-up.

An input's version (:func:`input_version`) is the SHA-256 of a local file's bytes, the
generation of a Cloud Storage object or the ETag of an S3 object; :func:`inputs_version`
hashes the three into one.
"""

import hashlib
import json
import math
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from pydantic import BaseModel, ConfigDict, Field
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from risk_assets.grid import GridSpec

FloatArray = npt.NDArray[np.float64]
ResamplingName = Literal["nearest", "bilinear", "cubic", "average"]

BURN_PROBABILITY_CRS = "EPSG:5070"
WIND_BANDS = 8
# Pixel grids agree when sizes match to this relative tolerance and origins to this
# fraction of a pixel: JSON and GeoTIFF round-trip coefficients to about 1e-15.
_SIZE_RTOL = 1e-9
_ALIGN_TOL = 1e-6


class InputError(ValueError):
    """An input raster that is missing, unreadable, or does not fit the output grid."""


class InputSet(BaseModel):
    """Locations of the three input rasters (local paths, ``gs://`` or ``s3://`` URLs).

    Parameters
    ----------
    burn_probability
        Annual burn probability, one band, projected EPSG:5070 (about 270 m).
    conditional_risk
        Conditional risk to potential structures (0-100), one band, on the output grid
        (same CRS and pixel grid); its no-data marks the ocean.
    wind_direction
        Fire-weather wind-direction shares, 8 bands (from N, NE, E, SE, S, SW, W, NW),
        any CRS and resolution.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    burn_probability: str = Field(min_length=1)
    conditional_risk: str = Field(min_length=1)
    wind_direction: str = Field(min_length=1)


def expanded_window(grid: GridSpec, rows: slice, cols: slice, halo: int) -> tuple[slice, slice]:
    """Row and column slices of ``rows`` x ``cols`` grown by ``halo`` on every side.

    The result may extend past the grid (negative starts, stops past the shape).
    """
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    return slice(rows.start - halo, rows.stop + halo), slice(cols.start - halo, cols.stop + halo)


def _open(path: str) -> DatasetReader:
    dataset: DatasetReader = rasterio.open(path)
    return dataset


def _grid_crs(grid: GridSpec) -> CRS:
    return CRS.from_user_input(grid.crs)


def on_grid(src: DatasetReader, grid: GridSpec) -> bool:
    """Whether ``src`` shares the grid's CRS and pixel grid (sizes and aligned origin).

    The source may be stored north-up or south-up and may cover any extent.
    """
    if src.crs is None or src.crs != _grid_crs(grid):
        return False
    t: Affine = src.transform
    a, e = grid.transform[0], grid.transform[4]
    if t.b != 0 or t.d != 0:
        return False
    if not (math.isclose(t.a, a, rel_tol=_SIZE_RTOL) and math.isclose(abs(t.e), e, rel_tol=_SIZE_RTOL)):
        return False
    col_shift = (t.c - grid.transform[2]) / a
    row_shift = (t.f - grid.transform[5]) / e
    return abs(col_shift - round(col_shift)) < _ALIGN_TOL and abs(row_shift - round(row_shift)) < _ALIGN_TOL


def _read_on_grid(src: DatasetReader, grid: GridSpec, rows: slice, cols: slice) -> FloatArray:
    """Windowed read of an on-grid source; NaN outside the source and where no-data."""
    ny, nx = rows.stop - rows.start, cols.stop - cols.start
    west, south, east, north = grid.bounds(rows, cols)
    window = from_bounds(west, south, east, north, transform=src.transform)
    # from_bounds returns fractional offsets only through float rounding: the grids are aligned.
    col_off, row_off = round(window.col_off), round(window.row_off)
    out = np.full((src.count, ny, nx), np.nan)
    c0, c1 = max(col_off, 0), min(col_off + nx, src.width)
    r0, r1 = max(row_off, 0), min(row_off + ny, src.height)
    if c0 < c1 and r0 < r1:
        data = src.read(window=Window(c0, r0, c1 - c0, r1 - r0), masked=True, out_dtype="float64")
        out[:, r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = data.filled(np.nan)
    # The window was cut in the source's row order; a north-up source has row 0 at the top.
    return out[:, ::-1, :] if src.transform.e < 0 else out


def _reproject_to_grid(
    src: DatasetReader, grid: GridSpec, rows: slice, cols: slice, resampling: ResamplingName
) -> FloatArray:
    """Warp a source onto the window's pixels; NaN outside the source and where no-data."""
    ny, nx = rows.stop - rows.start, cols.stop - cols.start
    west, _, _, north = grid.bounds(rows, cols)
    a, e = grid.transform[0], grid.transform[4]
    # Warp onto the north-up twin of the window (GDAL's usual orientation), then flip.
    dst_transform = Affine(a, 0.0, west, 0.0, -e, north)
    out = np.full((src.count, ny, nx), np.nan)
    reproject(
        source=rasterio.band(src, list(range(1, src.count + 1))),
        destination=out,
        src_nodata=src.nodata,
        dst_transform=dst_transform,
        dst_crs=_grid_crs(grid),
        dst_nodata=np.nan,
        resampling=Resampling[resampling],
        # The approximate transformer interpolates coordinates along each output line, so a
        # pixel's value would depend on the window it was warped in; exact keeps regions
        # equal to a whole-domain warp.
        tolerance=0.0,
    )
    return out[:, ::-1, :]


def read_window(
    path: str,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    halo: int = 0,
    resampling: ResamplingName = "bilinear",
) -> FloatArray:
    """Read a source over a window of the output grid, grown by a halo.

    A source already on the output grid (same CRS and pixel grid) is read with a rasterio
    window; any other source is warped with :func:`rasterio.warp.reproject` onto the
    window's pixels (exact transformer, so values do not depend on the window).

    Parameters
    ----------
    path
        Local path or ``gs://`` / ``s3://`` URL of the source raster.
    grid
        The output grid.
    rows, cols
        The window of the grid (a region's ``rows`` and ``cols``).
    halo
        Pixels to add on every side. The grown window may extend past the grid: there it
        holds whatever the source holds, or NaN outside the source.
    resampling
        Resampling used when the source has to be warped.

    Returns
    -------
    numpy.ndarray
        float64, ``(ny, nx)`` for a one-band source and ``(bands, ny, nx)`` otherwise, with
        row 0 at the south; NaN where the source is no-data or absent.

    Raises
    ------
    InputError
        If the source cannot be opened.
    """
    rows, cols = expanded_window(grid, rows, cols, halo)
    try:
        with _open(path) as src:
            if on_grid(src, grid):
                out = _read_on_grid(src, grid, rows, cols)
            else:
                out = _reproject_to_grid(src, grid, rows, cols, resampling)
    except RasterioIOError as exc:
        raise InputError(f"cannot read input raster {path}: {exc}") from exc
    # Negative strides from the flip would make every later operation slower.
    out = np.ascontiguousarray(out)
    return out[0] if out.shape[0] == 1 else out


def read_wind_shares(
    path: str,
    grid: GridSpec,
    rows: slice,
    cols: slice,
    halo: int = 0,
    resampling: ResamplingName = "bilinear",
) -> FloatArray:
    """Read the 8 wind-direction shares and renormalise them to sum to 1 per pixel.

    Resampling a coarse share raster mixes neighbouring pixels whose shares each sum to 1,
    so the sum stays close to 1 but not exactly; dividing by it restores the distribution.
    Pixels whose shares are missing or sum to 0 are NaN.

    Parameters
    ----------
    path, grid, rows, cols, halo, resampling
        As for :func:`read_window`.

    Returns
    -------
    numpy.ndarray
        ``(8, ny, nx)`` float64.

    Raises
    ------
    InputError
        If the source cannot be opened or does not have 8 bands.
    """
    shares = read_window(path, grid, rows, cols, halo, resampling)
    if shares.ndim != 3 or shares.shape[0] != WIND_BANDS:
        raise InputError(
            f"wind-direction input {path} has {1 if shares.ndim == 2 else shares.shape[0]} band(s), "
            f"expected {WIND_BANDS} (shares from N, NE, E, SE, S, SW, W, NW)"
        )
    total = shares.sum(axis=0)
    valid = np.isfinite(total) & (total > 0)
    # In place: a production window's 8 float64 bands are ~1.8 GB.
    shares /= np.where(valid, total, 1.0)
    shares[:, ~valid] = np.nan
    return shares


def _covers(src: DatasetReader, grid: GridSpec) -> bool:
    """Whether the source's extent holds the whole grid (to half a source pixel)."""
    rows, cols = slice(0, grid.shape[0]), slice(0, grid.shape[1])
    bounds = transform_bounds(_grid_crs(grid), src.crs, *grid.bounds(rows, cols), densify_pts=21)
    left, bottom, right, top = src.bounds
    if bottom > top:  # a south-up source reports its bounds upside down
        bottom, top = top, bottom
    tol_x, tol_y = abs(src.transform.a) / 2, abs(src.transform.e) / 2
    return bool(
        bounds[0] >= left - tol_x
        and bounds[2] <= right + tol_x
        and bounds[1] >= bottom - tol_y
        and bounds[3] <= top + tol_y
    )


def validate_inputs(inputs: InputSet, grid: GridSpec) -> None:
    """Check that the inputs exist and fit the output grid, before any region is computed.

    Parameters
    ----------
    inputs
        The input locations.
    grid
        The output grid.

    Raises
    ------
    InputError
        Naming the file, what is wrong and what to do: a file that cannot be opened, a wrong
        band count, burn probability not in EPSG:5070, conditional risk not on the output
        grid's CRS and pixel grid, a wind raster without a CRS, or an extent that does not
        cover the grid.
    """
    checks: tuple[tuple[str, str, int], ...] = (
        ("burn_probability", inputs.burn_probability, 1),
        ("conditional_risk", inputs.conditional_risk, 1),
        ("wind_direction", inputs.wind_direction, WIND_BANDS),
    )
    for role, path, bands in checks:
        try:
            src = _open(path)
        except RasterioIOError as exc:
            raise InputError(
                f"{role} input {path} cannot be opened ({exc}): check that the file exists "
                f"(for a bucket URL, also the credentials)"
            ) from exc
        with src:
            if src.count != bands:
                raise InputError(
                    f"{role} input {path} has {src.count} band(s), expected {bands}: point {role} at the right raster"
                )
            if src.crs is None:
                raise InputError(f"{role} input {path} has no CRS: assign one (e.g. gdal_edit.py -a_srs)")
            if role == "burn_probability":
                try:
                    expected = CRS.from_user_input(BURN_PROBABILITY_CRS)
                except CRSError as exc:  # only if PROJ's database is broken
                    raise InputError(f"cannot build {BURN_PROBABILITY_CRS}: {exc}") from exc
                if src.crs != expected:
                    raise InputError(
                        f"burn_probability input {path} is in {src.crs.to_string()}, expected the "
                        f"projected {BURN_PROBABILITY_CRS}: reproject it or use the 270 m EPSG:5070 product"
                    )
            if role == "conditional_risk" and not on_grid(src, grid):
                raise InputError(
                    f"conditional_risk input {path} ({src.crs.to_string()}, pixel "
                    f"{src.transform.a:.9g} x {abs(src.transform.e):.9g}) is not on the output grid "
                    f"{grid.name!r} ({grid.crs}, pixel {grid.transform[0]:.9g} x {grid.transform[4]:.9g}, "
                    f"origin {grid.transform[2]}, {grid.transform[5]}): warp it onto that grid first"
                )
            if not _covers(src, grid):
                raise InputError(
                    f"{role} input {path} (bounds {tuple(round(v, 6) for v in src.bounds)} in "
                    f"{src.crs.to_string()}) does not cover grid {grid.name!r} (bounds "
                    f"{grid.bounds(slice(0, grid.shape[0]), slice(0, grid.shape[1]))} in {grid.crs}): "
                    f"use a raster that covers the whole grid"
                )


# --- Input dataset versions ----------------------------------------------------------------------

#: Block size of the streamed SHA-256 of a local input.
HASH_BLOCK_BYTES = 8 * 1024 * 1024
# A file whose mtime or ctime is this recent is hashed but not cached: a write in the same
# file-system timestamp tick (2 s on FAT, coarse on some network file systems) could leave
# the stat fingerprint unchanged (git's "racy clean" problem).
_CACHE_MIN_AGE_NS = 2_000_000_000
_CACHE_FORMAT = 1


def _stat_fingerprint(st: os.stat_result) -> list[int]:
    # ctime cannot be set from user space (unlike mtime, see `touch -d`, `cp -p`, `rsync -t`)
    # and inode/device change when a file is replaced by a rename.
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _read_cache(cache: Path) -> dict[str, Any]:
    """The cache's entries; an absent, unreadable or foreign cache file is an empty cache."""
    try:
        payload = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(payload, dict) or payload.get("format") != _CACHE_FORMAT:
        return {}
    entries = payload.get("entries")
    return entries if isinstance(entries, dict) else {}


def _write_cache(cache: Path, entries: dict[str, Any]) -> None:
    """Replace the cache file atomically; failing to write a cache is not an error."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"format": _CACHE_FORMAT, "entries": entries}, handle, indent=1, sort_keys=True)
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


def _local_sha256(path: Path, label: str, cache: Path | None) -> str:
    try:
        before = path.stat()
    except FileNotFoundError:
        raise InputError(
            f"{label} does not exist: point it at an existing raster (for the synthetic inputs, run `risk inputs`)"
        ) from None
    except OSError as exc:
        raise InputError(f"{label} cannot be read ({exc}): check the path and its permissions") from exc
    if not stat.S_ISREG(before.st_mode):
        raise InputError(f"{label} is not a regular file: point it at the raster file itself")
    fingerprint = _stat_fingerprint(before)
    key = str(path.resolve())
    entries = _read_cache(cache) if cache is not None else {}
    hit = entries.get(key)
    if isinstance(hit, dict) and hit.get("stat") == fingerprint and isinstance(hit.get("sha256"), str):
        return f"sha256:{hit['sha256']}"
    started = time.time_ns()
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK_BYTES)
    view = memoryview(buffer)
    try:
        with path.open("rb") as handle:
            while size := handle.readinto(buffer):
                digest.update(view[:size])
        after = path.stat()
    except OSError as exc:
        raise InputError(f"{label} cannot be read ({exc}): check the path and its permissions") from exc
    if _stat_fingerprint(after) != fingerprint:
        raise InputError(f"{label} changed while it was being hashed: wait until it is completely written, then retry")
    hexdigest = digest.hexdigest()
    if cache is not None and started - max(before.st_mtime_ns, before.st_ctime_ns) > _CACHE_MIN_AGE_NS:
        entries[key] = {"stat": fingerprint, "sha256": hexdigest}
        _write_cache(cache, entries)
    return f"sha256:{hexdigest}"


def _bucket_and_key(rest: str, scheme: str, label: str) -> tuple[str, str]:
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise InputError(f"{label} is not a valid object URL: write {scheme}://<bucket>/<key>")
    return bucket, key


def _gcs_generation(bucket: str, key: str, label: str) -> str:
    try:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage
    except ImportError as exc:
        raise InputError(f"{label}: versioning gs:// inputs needs google-cloud-storage: install it ({exc})") from exc
    try:
        blob = storage.Client().bucket(bucket).get_blob(key)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise InputError(
            f"{label} cannot be checked: no Google Cloud credentials ({exc}); set GOOGLE_APPLICATION_CREDENTIALS "
            f"or run `gcloud auth application-default login`"
        ) from exc
    except api_exceptions.GoogleAPIError as exc:
        raise InputError(
            f"{label} cannot be checked ({exc}): check the bucket name and that the credentials may read it"
        ) from exc
    if blob is None:
        raise InputError(f"{label} does not exist: check the URL, or upload the object")
    return f"gcs-generation:{blob.generation}"


def _gdal_s3_endpoint() -> str | None:
    """The endpoint GDAL reads s3:// from, when only GDAL's variables name one.

    boto3 reads ``AWS_ENDPOINT_URL(_S3)`` itself; GDAL (which reads the rasters) uses
    ``AWS_S3_ENDPOINT`` and ``AWS_HTTPS``. Both must look at the same object.
    """
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    host = os.environ.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host
    insecure = os.environ.get("AWS_HTTPS", "YES").upper() in {"NO", "FALSE", "OFF", "0"}
    return f"{'http' if insecure else 'https'}://{host}"


def _s3_etag(bucket: str, key: str, label: str) -> str:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise InputError(f"{label}: versioning s3:// inputs needs boto3: install it ({exc})") from exc
    try:
        # A new session per call: the environment (credentials, endpoint) is read now, not cached.
        client = boto3.session.Session().client("s3", endpoint_url=_gdal_s3_endpoint())
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}:
            raise InputError(f"{label} does not exist: check the bucket and key, or upload the object") from exc
        raise InputError(f"{label} cannot be checked ({exc}): check that the credentials may read the bucket") from exc
    except BotoCoreError as exc:  # no credentials, endpoint unreachable...
        raise InputError(
            f"{label} cannot be checked ({exc}): check the AWS credentials and endpoint (AWS_ENDPOINT_URL)"
        ) from exc
    etag = str(head["ETag"]).strip('"')  # S3 returns it quoted
    return f"s3-etag:{etag}"


def input_version(url: str, *, name: str | None = None, cache: Path | None = None) -> str:
    """The version of one input dataset: changes when its content changes.

    Parameters
    ----------
    url
        A local path (or ``file://`` URL), ``gs://bucket/key`` or ``s3://bucket/key``; GDAL's
        ``/vsigs/bucket/key`` and ``/vsis3/bucket/key`` are accepted too.
    name
        The input's role (``burn_probability``...), for error messages.
    cache
        Optional JSON file caching local files' checksums by path, size, mtime, ctime and
        inode. Without it every call reads the whole file: a multi-GB GeoTIFF takes seconds
        to minutes, on every observation. Files changed in the last 2 seconds are not cached
        (a later write could leave those stat values unchanged); a cache that cannot be read
        or written is ignored.

    Returns
    -------
    str
        ``sha256:<hex>`` of a local file's bytes (read in 8 MiB blocks); ``gcs-generation:<n>``
        of a Cloud Storage object (it changes on every overwrite, even with equal bytes);
        ``s3-etag:<etag>`` of an S3 object (MD5-based; a multipart upload's ETag also depends
        on the part size). Bucket objects are not read, only their metadata.

    Raises
    ------
    InputError
        If the file or object does not exist or cannot be read (the message names the input
        and what to do), if a local file changed while it was hashed, or if the URL scheme
        is not one of the above.
    """
    label = f"{name} input {url}" if name else f"input {url}"
    for prefix, scheme in (("gs://", "gs"), ("/vsigs/", "gs"), ("s3://", "s3"), ("/vsis3/", "s3")):
        if url.startswith(prefix):
            bucket, key = _bucket_and_key(url.removeprefix(prefix), scheme, label)
            return _gcs_generation(bucket, key, label) if scheme == "gs" else _s3_etag(bucket, key, label)
    if url.startswith("file://"):
        return _local_sha256(Path(url.removeprefix("file://")), label, cache)
    if "://" in url or url.startswith("/vsi"):
        raise InputError(
            f"{label}: cannot version this kind of URL: use a local path, gs://bucket/key or s3://bucket/key"
        )
    return _local_sha256(Path(url), label, cache)


def input_versions(inputs: InputSet, *, cache: Path | None = None) -> dict[str, str]:
    """The version of every input dataset, by name.

    Parameters
    ----------
    inputs
        The input locations.
    cache
        Optional checksum cache of local files (see :func:`input_version`).

    Returns
    -------
    dict
        ``burn_probability``, ``conditional_risk`` and ``wind_direction`` to their versions.

    Raises
    ------
    InputError
        If an input does not exist or cannot be read; the message names it.
    """
    return {role: input_version(getattr(inputs, role), name=role, cache=cache) for role in InputSet.model_fields}


def inputs_version(versions: Mapping[str, str]) -> str:
    """One hash of all input versions: it changes when any input's version changes.

    Parameters
    ----------
    versions
        Input name to version, as :func:`input_versions` returns; order does not matter.

    Returns
    -------
    str
        The first 12 hex characters of the SHA-256 of the canonical (key-sorted) JSON.
    """
    canonical = json.dumps(dict(versions), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
