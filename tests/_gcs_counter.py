"""A conditional counter raced by spawned processes against fake-gcs-server (``tests/test_gcs_emulator.py``).

Only google-cloud-storage is imported, so the 16 processes start quickly. Each inherits
``STORAGE_EMULATOR_HOST`` from the test.
"""

import time


def increment(bucket: str, key: str, times: int, max_tries: int = 10_000) -> tuple[int, int, float]:
    """Add 1 to the integer in object ``key`` ``times`` times, each a conditional read-modify-write.

    The write names the generation that was read (``ifGenerationMatch``), the way Icechunk moves
    a branch: with a store that enforces it atomically, no increment is ever lost.

    Returns
    -------
    tuple
        ``(increments acknowledged, precondition failures retried, seconds spent incrementing)``.

    Raises
    ------
    RuntimeError
        If one increment needed more than ``max_tries`` attempts.
    """
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud import storage

    blob_bucket = storage.Client().bucket(bucket)
    done = retries = 0
    started = time.perf_counter()
    for _ in range(times):
        for _attempt in range(max_tries):
            blob = blob_bucket.get_blob(key)
            assert blob is not None
            value = int(blob.download_as_bytes(if_generation_match=blob.generation))
            try:
                blob_bucket.blob(key).upload_from_string(str(value + 1), if_generation_match=blob.generation)
            except PreconditionFailed:
                retries += 1
                time.sleep(0.001)
                continue
            done += 1
            break
        else:
            raise RuntimeError(f"increment of {key} did not succeed in {max_tries} tries")
    return done, retries, time.perf_counter() - started
