"""Production wiring: which store and executor a deployment uses, and what a region step asks of Kubernetes.

Everything here is chosen by configuration, never by the name of an environment:

- ``RISK_STORE``: a JSON object ``{"kind": "local" | "s3" | "gcs", ...fields}``; the kind picks the
  :class:`~resources.store.IcechunkStore` subclass and the other fields are its configuration.
  Unset: the local repository under the project folder.
- ``RISK_EXECUTOR``: ``in_process`` (default: a run's steps in the run's own process, which the
  run launcher or ``risk build`` already gives each run) or ``k8s`` (one Kubernetes Job per step).
- ``RISK_INPUTS``: a JSON :class:`~risk_model.input_set.InputSet` (``gs://`` URLs in production).
  Unset: the synthetic inputs under the project folder.
- ``RISK_WIND_SHARES``: where the ``wind_shares`` asset writes the shares it computes from an
  hourly wind dataset (``RISK_INPUTS``' ``wind_hourly``) and every region run reads them:
  ``s3://<bucket>/<key>.tif`` or ``gs://<bucket>/<key>.tif`` when steps run in pods of their own, or
  an absolute local path. Unset: ``var/derived/<grid>/wind_shares_4km.tif`` under the project
  folder, which only processes on the same machine can read.
- ``RISK_REGIONS_PER_RUN``: at most this many regions in one run of a backfill (the raster's
  ``BackfillPolicy``) or of ``risk build``. Unset: one under the k8s executor (one pod per region,
  what "backfill missing" in the UI then launches), :data:`LOCAL_REGIONS_PER_RUN` otherwise.

:func:`deployment_from_env` is the one function that reads these, and it is called when the
definitions are built, never at import.

Region steps on Kubernetes
--------------------------
:func:`region_step_k8s_config` is the ``dagster-k8s/config`` tag of the ``risk_raster`` asset: the
step pod asks for the memory and CPU its region needs (:func:`region_resources`) and goes to GKE
spot nodes. It uses ``merge_behavior: SHALLOW`` because dagster-k8s deep-merges the run launcher's
``run_k8s_config`` into step pods: with the default DEEP merge, the run pods' on-demand node
selector and the step's spot selector would both end up in the step pod, which no node satisfies.
SHALLOW replaces each top-level key the step sets (``node_selector``, ``tolerations``,
``resources``) and keeps the rest (service account, security context) from the run launcher.

A preempted spot node kills the step pod; the step's Kubernetes Job then reports failed, the run
worker's step health check notices it and applies the asset's retry policy
(:data:`risk_assets.assets.REGION_RETRY_POLICY`), which launches a new step Job. The Kubernetes Job
itself keeps dagster-k8s's ``backoff_limit: 0``: a pod restarted by Kubernetes behind Dagster's back would be
refused by Dagster's step verification. Failures that would fail again (bad inputs, bad
parameters, a misaligned write) are raised as ``Failure(allow_retries=False)`` and bypass the
retry policy; commit conflicts have their own ``RetryRequested`` budget in the IO manager.
"""

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resources.cloud_stores import GCSIcechunkStore, S3IcechunkStore
from resources.local_store import LocalIcechunkStore
from resources.store import IcechunkStore
from resources.wind_shares import check_shares_location
from risk_model.errors import BadInputError
from risk_model.grid import GridSpec
from risk_model.input_set import InputError, InputSet

if TYPE_CHECKING:
    # Dagster is imported where the definitions are built, not here: `risk build` reads the
    # deployment to decide a rerun with nothing to do, without importing Dagster (about a second).
    from dagster import ExecutorDefinition

#: Tag key read by dagster-k8s (``dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY``); spelled out here
#: so that the asset module does not import the Kubernetes client. A test checks they are equal.
K8S_CONFIG_TAG = "dagster-k8s/config"

#: GKE labels spot nodes with this key (value ``"true"``); our spot node pool is also tainted with
#: it (``NoSchedule``) so that only pods tolerating it, the region steps, land there.
SPOT_NODE_LABEL = "cloud.google.com/gke-spot"

#: Peak resident memory per output pixel of one region step, in bytes. Measured on 2026-12-02 by
#: ``benchmarks/bench_region_memory.py`` (docs/benchmarks.md, "One production region"): a 6000 x 4500
#: production region (27 Mpx, computed over its 6130 x 4630 window) peaked at 1,360-1,375 MiB of
#: RSS, interpreter and imports included, i.e. 54 bytes per pixel at most (float32 working arrays, the
#: wind shares one band at a time, the spread's strip temporaries). It was 226 (a 6.1 GB peak) with float64
#: arrays and all 8 share bands held. The benchmark stops before the write: the headroom and the
#: base below cover writing the region (a contiguous copy of one variable's chunk, ~100 MiB).
PEAK_BYTES_PER_PIXEL = 54
#: Margin on the measured peak: inputs differ between regions and a memory overrun is an OOM kill.
MEMORY_HEADROOM = 1.25
#: Python, Dagster, xarray and Icechunk loaded before any pixel: the floor for tiny regions.
BASE_MEMORY_BYTES = 512 * 2**20
#: CPU time per pixel: the same region took ~64 s of CPU, essentially on one core.
CPU_SECONDS_PER_PIXEL = 64.0 / (6000 * 4500)
#: The model runs on one core; requesting more would only leave cores idle on the node.
MAX_CPU_MILLIS = 1000
MIN_CPU_MILLIS = 250
#: Pixels for which a step gets a whole core: a region that computes for a minute or more.
FULL_CORE_PIXELS = 6000 * 4500


#: Regions per run when steps run in their run's process: a local run costs ~1 s of bookkeeping
#: (its SQLite event log, its events) against ~0.2 s of work for a demo region, so a group of
#: regions shares one run. Measured in docs/benchmarks.md ("Orchestration overhead").
LOCAL_REGIONS_PER_RUN = 16


class DeploymentConfigError(BadInputError, ValueError):
    """A deployment setting (``RISK_STORE``, ``RISK_EXECUTOR``, ``RISK_INPUTS``...) that cannot be used."""


@dataclass(frozen=True)
class RegionResources:
    """What one region step asks of its node.

    Attributes
    ----------
    memory_bytes
        Memory request, also the limit: memory is not compressible, and a step that exceeds a
        request-only reservation could take down its neighbours on the node.
    cpu_millis
        CPU request in millicores; no CPU limit, so an idle node's spare cycles are not throttled.
    """

    memory_bytes: int
    cpu_millis: int

    def as_k8s(self) -> dict[str, dict[str, str]]:
        """The container ``resources`` block (Kubernetes quantities)."""
        memory = f"{math.ceil(self.memory_bytes / 2**20)}Mi"
        return {"requests": {"cpu": f"{self.cpu_millis}m", "memory": memory}, "limits": {"memory": memory}}


def region_resources(chunks: tuple[int, int]) -> RegionResources:
    """Memory and CPU requests of a step that computes one chunk-sized region.

    Parameters
    ----------
    chunks
        The grid's chunk shape ``(rows, cols)``: every region is at most one chunk.

    Returns
    -------
    RegionResources
        ``memory = pixels x PEAK_BYTES_PER_PIXEL x MEMORY_HEADROOM + BASE_MEMORY_BYTES`` and a CPU
        request proportional to the pixels, between 250 and 1000 millicores.
    """
    pixels = chunks[0] * chunks[1]
    memory = math.ceil(pixels * PEAK_BYTES_PER_PIXEL * MEMORY_HEADROOM) + BASE_MEMORY_BYTES
    cpu = math.ceil(MAX_CPU_MILLIS * pixels / FULL_CORE_PIXELS)
    return RegionResources(memory_bytes=memory, cpu_millis=min(MAX_CPU_MILLIS, max(MIN_CPU_MILLIS, cpu)))


def spot_tolerations() -> list[dict[str, str]]:
    """Tolerations that let a pod onto the tainted GKE spot node pool."""
    return [{"key": SPOT_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]


def region_step_k8s_config(grid: GridSpec) -> dict[str, Any]:
    """The ``dagster-k8s/config`` op tag of the region asset on ``grid``.

    Keys are dagster-k8s's (snake_case Kubernetes fields). ``merge_behavior: SHALLOW`` makes these
    keys replace, not join, the run launcher's: see the module docstring.
    """
    return {
        "merge_behavior": "SHALLOW",
        "container_config": {"resources": region_resources(grid.chunks).as_k8s()},
        "pod_spec_config": {
            "node_selector": {SPOT_NODE_LABEL: "true"},
            "tolerations": spot_tolerations(),
            # GKE gives spot pods 30 s between the preemption notice and the kill; leave the
            # kubelet a margin so the pod ends with a recorded exit rather than a hard kill.
            "termination_grace_period_seconds": 25,
        },
    }


StoreKind = Literal["local", "s3", "gcs"]
STORE_CLASSES: dict[str, type[IcechunkStore]] = {
    "local": LocalIcechunkStore,
    "s3": S3IcechunkStore,
    "gcs": GCSIcechunkStore,
}


def store_from_config(config: Mapping[str, Any]) -> IcechunkStore:
    """The store resource described by ``config``: ``kind`` picks the class, the rest configures it.

    Raises
    ------
    DeploymentConfigError
        If the kind is unknown or the fields do not fit its class.
    """
    fields = dict(config)
    kind = fields.pop("kind", None)
    cls = STORE_CLASSES.get(str(kind))
    if cls is None:
        raise DeploymentConfigError(f"store kind {kind!r} is not one of {sorted(STORE_CLASSES)}")
    # Dagster resources accept unknown fields silently; a misspelled field must not fall back
    # to a default (e.g. a missing endpoint would send writes to AWS).
    unknown = sorted(set(fields) - set(cls.model_fields))
    if unknown:
        raise DeploymentConfigError(f"store of kind {kind!r} has no field(s) {', '.join(unknown)}")
    try:
        return cls(**fields)
    except ValidationError as err:
        raise DeploymentConfigError(f"store of kind {kind!r}: {err}") from err


class Deployment(BaseModel):
    """The configurable parts of one deployment; ``None`` means the local default."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    store: IcechunkStore | None = None
    executor: Literal["in_process", "k8s"] = "in_process"
    inputs: InputSet | None = None
    #: Where the shares computed from an hourly wind dataset are; ``None``: under the project folder.
    wind_shares: str | None = None
    #: ``None``: the executor's default (see :attr:`regions_per_run_or_default`).
    regions_per_run: int | None = Field(default=None, ge=1)

    @property
    def regions_per_run_or_default(self) -> int:
        """Regions per run: as configured, else one per run (one pod each) under k8s, a group locally."""
        if self.regions_per_run is not None:
            return self.regions_per_run
        return 1 if self.executor == "k8s" else LOCAL_REGIONS_PER_RUN

    def executor_def(self) -> "ExecutorDefinition":
        """The Dagster executor: one Kubernetes Job per step on k8s; locally the run's own process.

        Locally every run already has a process of its own (the daemon's run launcher starts one
        per run; ``risk build`` runs each in a worker of its pool). A second process per step, as
        the multiprocess executor starts, cost about 9 s of start-up per region and isolated
        nothing more: a mini build took 224 s with it and 42 s without.
        """
        if self.executor == "k8s":
            # Imported here: the Kubernetes client is only needed where steps become Jobs.
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
        from dagster import in_process_executor

        return in_process_executor


def _json_object(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DeploymentConfigError(f"{name} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise DeploymentConfigError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def deployment_from_env(environ: Mapping[str, str] | None = None) -> Deployment:
    """The deployment described by ``RISK_STORE``, ``RISK_EXECUTOR``, ``RISK_INPUTS``, ``RISK_WIND_SHARES``
    and ``RISK_REGIONS_PER_RUN``.

    Parameters
    ----------
    environ
        The environment to read; ``os.environ`` by default.

    Raises
    ------
    DeploymentConfigError
        If a variable is set but unusable; the message names it.
    """
    env = os.environ if environ is None else environ
    store = store_from_config(_json_object("RISK_STORE", env["RISK_STORE"])) if env.get("RISK_STORE") else None
    executor = env.get("RISK_EXECUTOR", "in_process")
    if executor not in ("in_process", "k8s"):
        raise DeploymentConfigError(f"RISK_EXECUTOR must be 'in_process' or 'k8s', got {executor!r}")
    per_run: int | None = None
    if env.get("RISK_REGIONS_PER_RUN"):
        try:
            per_run = int(env["RISK_REGIONS_PER_RUN"])
        except ValueError as err:
            raise DeploymentConfigError(
                f"RISK_REGIONS_PER_RUN must be a whole number of regions, got {env['RISK_REGIONS_PER_RUN']!r}"
            ) from err
        if per_run < 1:
            raise DeploymentConfigError(f"RISK_REGIONS_PER_RUN must be at least 1, got {per_run}")
    inputs = None
    if env.get("RISK_INPUTS"):
        try:
            inputs = InputSet.model_validate(_json_object("RISK_INPUTS", env["RISK_INPUTS"]))
        except ValidationError as err:
            raise DeploymentConfigError(f"RISK_INPUTS: {err}") from err
    wind_shares = None
    if env.get("RISK_WIND_SHARES"):
        try:
            wind_shares = check_shares_location(env["RISK_WIND_SHARES"], "RISK_WIND_SHARES")
        except InputError as err:
            raise DeploymentConfigError(str(err)) from err
    return Deployment(store=store, executor=executor, inputs=inputs, wind_shares=wind_shares, regions_per_run=per_run)
