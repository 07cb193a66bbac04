"""Exactly one commit per (region, build key), however two writers of one region interleave.

The two windows in which a second writer used to commit a region again (issue 15): writer A
commits the region

- after writer B looked for an existing commit and before B opened its session (A's commit
  is then in B's base, so no rebase can see a conflict), and
- after B opened its session and before B commits (B's rebase must conflict, also when the
  region holds nothing but fill values and so no data chunk is written).

Each window is entered deterministically: B runs on a store whose writer lease or commit
guard first lets A write the same region in full. Both on the local store and on the S3
emulator (moto on 127.0.0.1).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr
from _services import S3_KEYS, moto_s3
from pydantic import PrivateAttr

from resources.cloud_stores import S3IcechunkStore
from resources.ledger import REGION_MARKS, committed_regions, iter_region_commits
from resources.local_store import LocalIcechunkStore
from resources.region_write import WriteResult, write_region
from resources.store import IcechunkStore
from resources.template import ensure_template
from risk_model.grid import RegionRegistry
from risk_model.schema import DIMS, VARIABLES, coordinates, empty_region
from risk_model.versions import BuildKey

BUCKET = "one-commit"
KEY = BuildKey("params", "inputs", "test")
REGION = 5  # index into the demo registry


class _Hooks:
    """Callbacks a store runs once: as B opens its session, or just before B commits."""

    on_session: Callable[[], None] | None = None
    on_commit: Callable[[], None] | None = None


class _SessionHook:
    """B's repository: A's write runs as B opens its session, after B's first look at the history."""

    def __init__(self, repo: icechunk.Repository, hooks: _Hooks) -> None:
        self._repo = repo
        self._hooks = hooks

    def writable_session(self, branch: str) -> icechunk.Session:
        hook, self._hooks.on_session = self._hooks.on_session, None
        if hook:
            hook()
        return self._repo.writable_session(branch)

    def __getattr__(self, name: str) -> object:
        return getattr(self._repo, name)


class _WithHooks:
    """Runs B's hooks (see :class:`_Hooks`)."""

    _hooks: _Hooks

    def repository(self, create: bool = False) -> icechunk.Repository:
        repo = super().repository(create)  # type: ignore[misc]
        return _SessionHook(repo, self._hooks)  # type: ignore[return-value]

    @contextmanager
    def commit_guard(self) -> Iterator[None]:
        # before B's commit guard: on the local store A needs the same lock for its own commit
        hook, self._hooks.on_commit = self._hooks.on_commit, None
        if hook:
            hook()
        with super().commit_guard():  # type: ignore[misc]
            yield


class LocalWithHooks(_WithHooks, LocalIcechunkStore):
    _hooks: _Hooks = PrivateAttr(default_factory=_Hooks)


class S3WithHooks(_WithHooks, S3IcechunkStore):
    _hooks: _Hooks = PrivateAttr(default_factory=_Hooks)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def bare_stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[IcechunkStore, LocalWithHooks | S3WithHooks]:
    """A plain store for writer A and a store with hooks for writer B, on one (not yet created) repository."""
    hooked: LocalWithHooks | S3WithHooks
    if request.param == "local":
        plain: IcechunkStore = LocalIcechunkStore(path=str(tmp_path / "repo.icechunk"))
        hooked = LocalWithHooks(path=str(tmp_path / "repo.icechunk"))
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        where = {
            "bucket": BUCKET,
            "prefix": tmp_path.name,
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "allow_http": True,
            "force_path_style": True,
            **S3_KEYS,
        }
        plain = S3IcechunkStore.model_validate(where)
        hooked = S3WithHooks.model_validate(where)
    return plain, hooked


@pytest.fixture
def stores(
    bare_stores: tuple[IcechunkStore, LocalWithHooks | S3WithHooks], demo_registry: RegionRegistry
) -> tuple[IcechunkStore, LocalWithHooks | S3WithHooks]:
    """:func:`bare_stores`, their repository holding the demo template."""
    ensure_template(bare_stores[0], demo_registry.grid, {"code_version": "test"})
    return bare_stores


def _data(registry: RegionRegistry, value: float | None) -> xr.Dataset:
    """The region filled with ``value``, or with fill values only (an all-ocean region) for ``None``."""
    region = registry.ids[REGION]
    r = registry.get(region)
    if value is None:
        return empty_region(registry.grid, r.rows, r.cols)
    return xr.Dataset(
        {v.name: (DIMS, np.full(r.shape, value, dtype=v.dtype)) for v in VARIABLES},
        coords=coordinates(registry.grid, r.rows, r.cols),
    )


def _write(store: IcechunkStore, registry: RegionRegistry, ds: xr.Dataset, run_id: str) -> WriteResult:
    region = registry.get(registry.ids[REGION])
    return write_region(store, registry.grid, region, ds, key=KEY, run_id=run_id)


def _commits_of_region(store: IcechunkStore, registry: RegionRegistry) -> list[str]:
    region = registry.ids[REGION]
    repo = store.repository()
    return [r.snapshot_id for r in iter_region_commits(repo, store.branch, use_ledger=False) if r.region == region]


@pytest.mark.parametrize("window", ["before B's session", "inside B's session"])
@pytest.mark.parametrize("value", [0.25, None], ids=["data", "fill-values-only"])
def test_a_region_written_twice_at_once_is_committed_once(
    stores: tuple[IcechunkStore, LocalWithHooks | S3WithHooks],
    demo_registry: RegionRegistry,
    window: str,
    value: float | None,
) -> None:
    plain, hooked = stores
    ds = _data(demo_registry, value)
    a_results: list[WriteResult] = []

    def writer_a() -> None:
        a_results.append(_write(plain, demo_registry, ds, run_id="A"))

    if window == "before B's session":
        hooked._hooks.on_session = writer_a
    else:
        hooked._hooks.on_commit = writer_a
    b = _write(hooked, demo_registry, ds, run_id="B")

    assert [r.status for r in a_results] == ["written"], "writer A ran inside B's window"
    a = a_results[0]
    # B sees A's commit as the region's commit and adds none of its own
    assert b.status == "skipped"
    assert b.snapshot_id == a.snapshot_id
    assert _commits_of_region(plain, demo_registry) == [a.snapshot_id]
    record = committed_regions(plain.repository(), plain.branch)[demo_registry.ids[REGION]]
    assert record.run_id == "A" and record.key == KEY


def test_writers_of_different_regions_rebase_over_each_others_marks(
    stores: tuple[IcechunkStore, LocalWithHooks | S3WithHooks], demo_registry: RegionRegistry
) -> None:
    """Each region has its own mark: a commit of another region inside B's session rebases cleanly."""
    plain, hooked = stores
    other = demo_registry.get(demo_registry.ids[REGION + 1])
    a_results: list[WriteResult] = []

    def writer_a() -> None:
        ds = empty_region(demo_registry.grid, other.rows, other.cols)
        a_results.append(write_region(plain, demo_registry.grid, other, ds, key=KEY, run_id="A"))

    hooked._hooks.on_commit = writer_a
    b = _write(hooked, demo_registry, _data(demo_registry, None), run_id="B")

    assert [r.status for r in a_results] == ["written"] and b.status == "written"
    repo = plain.repository()
    assert [info.id for info in repo.ancestry(branch=plain.branch)][:2] == [b.snapshot_id, a_results[0].snapshot_id]
    marks = zarr.open_group(repo.readonly_session(branch=plain.branch).store, path=REGION_MARKS, mode="r")
    assert sorted(name for name, _ in marks.arrays()) == sorted([other.id, demo_registry.ids[REGION]])
    # the mark is its attributes (no chunk): the key, the run, and when it was marked
    attrs = dict(marks[other.id].attrs)
    assert int(attrs.pop("marked_at_ns")) > 0
    assert attrs == {**KEY._asdict(), "run_id": "A"}


def test_two_builds_committing_the_template_at_once_share_one(
    bare_stores: tuple[IcechunkStore, LocalWithHooks | S3WithHooks], demo_registry: RegionRegistry
) -> None:
    """The loser of the template race uses the winner's template instead of failing on the conflict."""
    plain, hooked = bare_stores
    a_results: list[tuple[str, bool]] = []
    hooked._hooks.on_commit = lambda: a_results.append(ensure_template(plain, demo_registry.grid, {"by": "A"}))
    b_snapshot, b_committed = ensure_template(hooked, demo_registry.grid, {"by": "B"})

    assert a_results == [(b_snapshot, True)], "A committed the template inside B's commit window"
    assert not b_committed
    templates = [i for i in plain.repository().ancestry(branch=plain.branch) if (i.metadata or {}).get("kind")]
    assert [i.id for i in templates] == [b_snapshot]
    # and the branch is usable: a region goes in on top of the shared template
    assert _write(plain, demo_registry, _data(demo_registry, 0.5), run_id="A").status == "written"
