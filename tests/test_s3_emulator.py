"""The S3 emulator the production-path tests use keeps the promise real object stores make.

Icechunk's concurrent commits are only as safe as the store's conditional writes: of many
writers that PUT the same object with the same ``If-Match`` ETag, exactly one may win. Stock
moto does not guarantee that (see ``_moto_atomic.py``); the server :func:`moto_s3` starts must.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from _services import S3_KEYS, moto_s3
from botocore.client import BaseClient
from botocore.exceptions import ClientError

BUCKET = "emulator-check"


@pytest.fixture(scope="module")
def s3() -> Iterator[BaseClient]:
    # A switch interval of a microsecond makes stock moto lose this race within a few rounds.
    with moto_s3(BUCKET, switch_interval=1e-6) as endpoint:
        yield boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEYS["access_key_id"],
            aws_secret_access_key=S3_KEYS["secret_access_key"],
            region_name="us-east-1",
        )


def _race(s3: BaseClient, key: str, writers: int, **condition: str) -> list[bool]:
    def put(i: int) -> bool:
        try:
            s3.put_object(Bucket=BUCKET, Key=key, Body=f"writer {i}".encode(), **condition)
        except ClientError as err:
            assert err.response["Error"]["Code"] == "PreconditionFailed", err
            return False
        return True

    with ThreadPoolExecutor(max_workers=writers) as pool:
        return list(pool.map(put, range(writers)))


@pytest.mark.parametrize("round_", range(50))
def test_exactly_one_of_racing_if_match_writers_wins(s3: BaseClient, round_: int) -> None:
    key = f"repo-info-{round_}"
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=b"v0")["ETag"]
    won = _race(s3, key, 16, IfMatch=etag)
    assert sum(won) == 1, f"{sum(won)} of 16 conditional writers succeeded on the same ETag"
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    assert body == f"writer {won.index(True)}"


def test_exactly_one_of_racing_create_only_writers_wins(s3: BaseClient) -> None:
    won = _race(s3, "new-object", 16, IfNoneMatch="*")
    assert sum(won) == 1
