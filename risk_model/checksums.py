"""Versions of local input files: streamed SHA-256 with an optional stat-keyed cache.

An input's version is the SHA-256 of a local file's bytes (here), or the generation of a
Cloud Storage object or the ETag of an S3 object (:mod:`resources.input_versions`);
:func:`inputs_version` hashes all of them into one.
"""

import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from risk_model.digest import digest
from risk_model.input_set import InputError

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


def local_sha256(path: Path, label: str, cache: Path | None) -> str:
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
    return digest(dict(versions))
