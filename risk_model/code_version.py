"""Version of the model code: bump it when a change alters what a region computes.

It is the ``code_version`` of the raster asset and is recorded in every region commit; a
region committed under another code version is built again.
"""

# 2: the reference model (gap fill on the source, NaN rules, the reference's blur) and
#    kernels per latitude band.
MODEL_CODE_VERSION = "2"


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
