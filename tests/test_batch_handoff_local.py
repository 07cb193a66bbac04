"""Batch hand-off on local disk: the object layer beside the repository, the commit lease, a committer round.

The racing and killed-process cases run on the S3 emulator (``test_batch_handoff_s3.py``); here the
local store's own pieces: create-only and replace-if-unchanged files, a ``flock`` commit lease that
only one holder gets, and the committer's rule for pending forks of dead writers.
"""

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from _chaos_worker import KEY, region_data

from resources.batch_commit import write_region_fork
from resources.batch_handoff import write_region_batched
from resources.commit_round import commit_pending
from resources.leases import PENDING_PREFIX
from resources.ledger import committed_regions
from resources.local_store import LocalIcechunkStore
from resources.pending_forks import FORK_ID, PendingFork, hand_off, pending_since
from risk_model.grid import RegionRegistry


def test_local_objects_are_create_only_and_replaced_only_if_unchanged(demo_store: LocalIcechunkStore) -> None:
    name = f"{PENDING_PREFIX}a"
    first = demo_store.create_lease_object(name, b"one")
    assert first is not None
    assert demo_store.create_lease_object(name, b"two") is None, "create-only"
    assert demo_store.read_lease_object(name) == (b"one", first)
    assert demo_store.replace_lease_object(name, b"three", "not-the-version") is None
    second = demo_store.replace_lease_object(name, b"three", first)
    assert second is not None and demo_store.read_lease_object(name) == (b"three", second)
    assert demo_store.list_lease_objects() == [name], "temporary files are never listed"
    demo_store.delete_lease_object(name)
    demo_store.delete_lease_object(name)  # absent: no error
    assert demo_store.read_lease_object(name) is None and demo_store.list_lease_objects() == []
    with pytest.raises(ValueError, match="leaves"):
        demo_store.read_lease_object("../outside")


def test_the_local_commit_lease_has_one_holder_at_a_time(demo_store: LocalIcechunkStore) -> None:
    with demo_store.commit_lease() as first:
        assert first
        with demo_store.commit_lease() as second:
            assert not second, "taken already"
    with demo_store.commit_lease() as again:
        assert again, "released at the end"


def _pending(store: LocalIcechunkStore, registry: RegionRegistry, index: int, pid: int, age: timedelta) -> PendingFork:
    region = registry.get(registry.ids[index])
    fork_id = f"fork{index}"
    data = region_data(registry, region.id)
    fork = write_region_fork(store, registry.grid, region, data, key=KEY, run_id="w", extra_metadata={FORK_ID: fork_id})
    assert fork is not None
    then = datetime.now(UTC) - age
    return PendingFork(fork, "main", fork_id, None, socket.gethostname(), pid, then, then)


def test_a_round_commits_live_forks_and_drops_stale_ones_of_dead_writers(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    store = demo_store.model_copy(update={"writer_lease_ttl_s": 60.0})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(dead.stdout)
    old = timedelta(minutes=5)
    live = hand_off(store, _pending(store, demo_registry, 0, os.getpid(), old))  # old, but its writer runs
    young = hand_off(store, _pending(store, demo_registry, 1, dead_pid, timedelta(0)))  # writer gone, young
    stale = hand_off(store, _pending(store, demo_registry, 2, dead_pid, old))  # writer gone, older than the TTL
    assert len(pending_since(store)) == 3, "maintenance sees every pending fork"

    done = commit_pending(store)
    assert sorted(done.committed) == sorted(demo_registry.ids[:2])
    assert done.dropped == [demo_registry.ids[2]]
    assert len(done.snapshots) == 1, "one commit for the batch"
    assert sorted(committed_regions(store.repository(), "main")) == sorted(demo_registry.ids[:2])
    assert store.list_lease_objects() == [], f"{live}, {young} committed and {stale} dropped: all deleted"


def test_a_fork_handed_over_under_its_old_module_name_is_still_committed(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    # Pending objects handed over before PendingFork moved out of resources.batch_handoff name that
    # module in their pickle (the two names have the same length, so the pickle stays well formed).
    pending = _pending(demo_store, demo_registry, 0, os.getpid(), timedelta(0))
    old = pending.encode().replace(b"resources.pending_forks", b"resources.batch_handoff")
    assert b"resources.batch_handoff" in old and b"resources.pending_forks" not in old
    demo_store.create_lease_object(pending.name, old)

    done = commit_pending(demo_store)
    assert (done.committed, done.unreadable) == ([demo_registry.ids[0]], [])
    assert demo_store.list_lease_objects() == []


def test_a_local_writer_through_the_batch_path_writes_then_skips(
    demo_store: LocalIcechunkStore, demo_registry: RegionRegistry
) -> None:
    store = demo_store.model_copy(update={"commit_protocol": "batch"})
    region = demo_registry.get(demo_registry.ids[3])
    first = write_region_batched(
        store, demo_registry.grid, region, region_data(demo_registry, region.id), key=KEY, run_id="a"
    )
    assert first.status == "written" and first.commit is not None and first.commit.run_id == "a"
    again = write_region_batched(
        store, demo_registry.grid, region, region_data(demo_registry, region.id), key=KEY, run_id="b"
    )
    assert (again.status, again.snapshot_id) == ("skipped", first.snapshot_id)
    assert store.list_lease_objects() == []
