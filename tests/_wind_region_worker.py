"""Materialize one region of the deployment its environment describes, in this process.

``python tests/_wind_region_worker.py REGION``: loads ``risk_assets.definitions.defs`` from the
``RISK_*`` variables (as a region pod does), runs the region job for REGION on an ephemeral
instance of its own and prints ``{"success", "failures", "metadata"}`` as JSON on its last line.
"""

import json
import sys

from dagster import DagsterInstance

from risk_assets.definitions import REGION_JOB, defs


def main(region: str) -> None:
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(REGION_JOB).execute_in_process(
            instance=instance, partition_key=region, raise_on_error=False
        )
        failures = [str(e.event_specific_data) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        metadata: dict[str, str] = {}
        if result.success:
            [materialization] = result.asset_materializations_for_node("risk_raster")
            metadata = {key: str(value.value) for key, value in materialization.metadata.items()}
    print(json.dumps({"success": result.success, "failures": failures, "metadata": metadata}))


if __name__ == "__main__":
    main(sys.argv[1])
