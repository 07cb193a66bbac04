"""Version of the model code: bump it when a change alters what a region computes.

It is the ``code_version`` of the raster asset and is recorded in every region commit; a
region committed under another code version is built again.
"""

from typing import Final

from risk_model.digest import digest

# 2: the reference model (gap fill on the source, NaN rules, the reference's blur) and
#    kernels per latitude band.
# 3: float32 working arrays and wind shares read one band at a time (issue 12, memory): values
#    move by float32 rounding (<= 1e-5 relative, ~1e-7 measured), so stored float32 pixels change
#    in their last bits and a score can move at a bin edge; a wind pixel with no-data in some
#    bands only is now missing wind (GDAL's multi-band warp used to copy the no-data value in).
# 4: the spread convolves each strip with one FFT (fftconvolve, not overlap-add), only over the
#    columns a burning pixel reaches (issue 12, CPU): other FFT sizes, so float64 sums move by
#    rounding (~1e-15) and a stored float32 pixel can change in its last bit; a band's own no-data
#    value masks it in every warped read (band 1's value was applied to all bands of a source that
#    declares one per band).
MODEL_CODE_VERSION = "4"

#: Bump when a change alters the wind shares computed from the same dataset and percentile
#: (:mod:`risk_model.wind`).
WIND_CODE_VERSION: Final = "1"


def shares_version(hourly_version: str, percentile: float) -> str:
    """The version of the shares computed from a dataset version with a percentile.

    It names the shares without computing them: the risk raster's build key holds it, so a new
    hourly dataset, another percentile or a change of this module's science
    (:data:`WIND_CODE_VERSION`) is a new build key.

    Parameters
    ----------
    hourly_version
        The hourly dataset's version (checksum or object generation).
    percentile
        The FFWI percentile that selects the fire-weather hours.

    Returns
    -------
    str
        ``wind-shares:<12 hex digits>``.
    """
    return "wind-shares:" + digest({"hourly": hourly_version, "percentile": percentile, "code": WIND_CODE_VERSION})


def git_revision() -> str:
    """The git commit of the running code, for release lineage.

    ``RISK_GIT_REVISION`` wins (container images are built without ``.git``: the Dockerfile
    passes it as a build argument); otherwise ``git rev-parse HEAD`` in the package's checkout;
    ``"unknown"`` when neither is available.
    """
    import os
    import subprocess
    from pathlib import Path

    if os.environ.get("RISK_GIT_REVISION"):
        return os.environ["RISK_GIT_REVISION"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"
