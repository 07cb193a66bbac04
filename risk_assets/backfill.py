"""Backfill exactly the regions missing from the commit log, through the Dagster daemon.

The regions to build are the registry minus the regions committed for the current
parameters and code version: the commit log decides, not Dagster's records. They are
launched as one asset backfill with the webserver's GraphQL ``launchPartitionBackfill``
mutation (Dagster has no backfill command and its Python GraphQL client no backfill
method); the backfill daemon then runs them, under the same queue and pool limits as
backfills launched from the UI.
"""

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import icechunk

from resources.ledger import committed_regions
from risk_model.errors import StoreUnavailableError
from risk_model.versions import BuildKey

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on RunConflict { message }
    ... on InvalidSubsetError { message }
  }
}
"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}
"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class BackfillError(StoreUnavailableError):
    """The webserver refused the backfill or could not be reached."""


@dataclass(frozen=True)
class BackfillProgress:
    """Where a backfill stands."""

    status: str
    targeted: int
    in_progress: int
    materialized: int
    failed: int

    @property
    def finished(self) -> bool:
        """Whether the daemon is done with it."""
        return self.status in FINISHED


def missing_from_commit_log(
    desired: Iterable[str], repo: icechunk.Repository, branch: str, keys: Mapping[str, BuildKey]
) -> list[str]:
    """Regions whose newest commit on ``branch`` is not for their build key, in registry order."""
    commits = committed_regions(repo, branch)
    return [region for region in desired if region not in commits or commits[region].key != keys[region]]


def _graphql(url: str, query: str, variables: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload: dict[str, Any] = json.loads(response.read())
    except (urllib.error.URLError, TimeoutError) as err:
        raise BackfillError(
            f"cannot reach the Dagster webserver at {url} ({err}): start it with `make ui` or pass --url"
        ) from err
    if payload.get("errors"):
        raise BackfillError(f"the webserver rejected the request: {payload['errors']}")
    data: dict[str, Any] = payload["data"]
    return data


def launch_backfill(url: str, regions: list[str], asset_path: list[str], title: str) -> str:
    """Launch one asset backfill of ``regions``; return its id."""
    params = {
        "partitionNames": regions,
        "assetSelection": [{"path": asset_path}],
        "title": title,
        "tags": [{"key": "risk/backfill", "value": "missing-from-commit-log"}],
    }
    result = _graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"backfill not launched: {result}")
    backfill_id: str = result["backfillId"]
    return backfill_id


def backfill_progress(url: str, backfill_id: str) -> BackfillProgress:
    """The current state of a backfill."""
    result = _graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise BackfillError(f"backfill {backfill_id}: {result}")
    counts = [c for c in result["assetBackfillData"]["assetBackfillStatuses"] if "numPartitionsTargeted" in c]
    total = {k: sum(c[k] for c in counts) for k in ("numPartitionsTargeted", "numPartitionsInProgress")}
    done = {k: sum(c[k] for c in counts) for k in ("numPartitionsMaterialized", "numPartitionsFailed")}
    return BackfillProgress(
        status=str(result["status"]),
        targeted=total["numPartitionsTargeted"],
        in_progress=total["numPartitionsInProgress"],
        materialized=done["numPartitionsMaterialized"],
        failed=done["numPartitionsFailed"],
    )


def wait_for_backfill(
    url: str, backfill_id: str, timeout_s: float, poll_s: float = 2.0, show_progress: bool = True
) -> BackfillProgress:
    """Poll until the backfill finishes (or ``timeout_s`` passes), showing a progress bar."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout_s
    progress = backfill_progress(url, backfill_id)
    with tqdm(total=progress.targeted, unit="region", desc=f"backfill {backfill_id}", disable=not show_progress) as bar:
        while time.monotonic() < deadline:
            progress = backfill_progress(url, backfill_id)
            bar.total = progress.targeted
            bar.n = progress.materialized + progress.failed
            bar.set_postfix(status=progress.status, running=progress.in_progress, failed=progress.failed)
            bar.refresh()
            if progress.finished:
                break
            time.sleep(poll_s)
    return progress
