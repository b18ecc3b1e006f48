"""Per-test CNI footprints and cluster timings as JUnit properties, for ``k8sstate findings cni-table``.

* ``k8sstate_footprint``: for a ``k8sstate_finding`` test that used ``cluster_state`` on a cluster with a
  CNI (a ``cni-*`` capability — kind), or on any cluster with ``--k8sstate-footprint``: the JSON of
  :func:`pytest_k8sstate.state.footprint.footprint` of the test's last ``diff()`` (from ``before`` or its
  ``since=`` snapshot to the ``after`` it took) under ``nodes`` and, when the test diffed more than once,
  every diff's in order under ``steps``; with the finding's number and title and the cluster's provider,
  CNI and proxy mode. A test that never called ``diff()`` gets ``before`` → its last snapshot. Also
  ``footprint.json`` in the test's artifact directory.
* ``k8sstate_cluster``: for the same tests, the cluster's name, provider, CNI, proxy mode, node count and
  ``create_seconds`` — how long the ``k8s_cluster`` fixture took to hand it over the first time (create →
  ready; with ``--k8sstate-reuse-cluster NAME`` it may be the attach time: ``reuse_requested: true``).

Nothing here changes a test's outcome: a footprint that cannot be computed is recorded as ``{"error": …}``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_k8sstate.plugin.findings import FINDING_PROPERTY
from pytest_k8sstate.plugin.state import artifact_dir_for
from pytest_k8sstate.util.files import atomic_write_json

if TYPE_CHECKING:
    from pytest_k8sstate.providers.base import Cluster

__all__ = [
    "CLUSTER_PROPERTY",
    "FOOTPRINT_PROPERTY",
    "cluster_cni",
    "pytest_addoption",
    "pytest_fixture_setup",
    "pytest_runtest_makereport",
]

FOOTPRINT_PROPERTY = "k8sstate_footprint"
CLUSTER_PROPERTY = "k8sstate_cluster"
_TIMES_KEY = pytest.StashKey[dict[str, tuple[float, bool]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("k8sstate", "Kubernetes cluster state (pytest-k8sstate)")
    group.addoption(
        "--k8sstate-footprint",
        dest="k8sstate_footprint",
        action="store_true",
        default=False,
        help="record every finding test's normalised node footprint (JUnit property k8sstate_footprint) "
        "also on clusters without a CNI; with a CNI (kind) it is always recorded",
    )


def cluster_cni(cluster: Cluster) -> str | None:
    """The CNI a cluster runs (its ``cni-NAME`` capability), None without one."""
    names = sorted(c.removeprefix("cni-") for c in cluster.capabilities if c.startswith("cni-"))
    return names[0] if names else None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """Time the first set-up of each cluster (the session fixture ``k8s_cluster``: create → ready)."""
    if fixturedef.argname != "k8s_cluster":
        return (yield)
    started = time.monotonic()
    cluster = yield
    times = request.config.stash.setdefault(_TIMES_KEY, {})
    name = getattr(cluster, "name", None)
    if isinstance(name, str) and name not in times:
        from pytest_k8sstate.plugin.hooks import SETTINGS_KEY

        settings = request.config.stash.get(SETTINGS_KEY, None)
        reuse = settings is not None and settings.reuse_cluster is not None and name == settings.reuse_cluster
        times[name] = (round(time.monotonic() - started, 1), reuse)
    return cluster


def _wanted(item: pytest.Item, cluster: Cluster) -> bool:
    return cluster_cni(cluster) is not None or bool(item.config.getoption("k8sstate_footprint", False))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when != "call" or report.skipped:
        return report
    finding: Any = next((v for k, v in item.user_properties if k == FINDING_PROPERTY), None)
    funcargs = getattr(item, "funcargs", {})
    state = funcargs.get("cluster_state")
    cluster = getattr(state, "cluster", None)
    if finding is None or state is None or cluster is None or not _wanted(item, cluster):
        return report
    cni = cluster_cni(cluster)
    number, title = (str(finding[0]), str(finding[1])) if len(finding) == 2 else ("?", str(finding))
    created, reused = item.config.stash.get(_TIMES_KEY, {}).get(cluster.name, (None, False))
    about = {
        "name": cluster.name,
        "provider": cluster.provider,
        "cni": cni,
        "proxy_mode": cluster.proxy_mode,
        "nodes": len(cluster.nodes),
        "create_seconds": created,
        "reuse_requested": reused,
    }
    record: dict[str, Any] = {
        "finding": number,
        "title": title,
        "nodeid": item.nodeid,
        "outcome": report.outcome,
        "provider": cluster.provider,
        "cni": cni,
        "proxy_mode": cluster.proxy_mode,
    }
    try:
        record.update(_footprint(state))
    except Exception as exc:  # never let the record change the test's outcome
        record["error"] = f"{type(exc).__name__}: {exc}"
    props = [
        (FOOTPRINT_PROPERTY, json.dumps(record, sort_keys=True)),
        (CLUSTER_PROPERTY, json.dumps(about, sort_keys=True)),
    ]
    path = _write(item, record)
    if path is not None:
        props.append(("k8sstate_file_footprint.json", path))
    for prop in props:
        item.user_properties.append(prop)
        report.user_properties.append(prop)
    return report


def _footprint(state: Any) -> dict[str, Any]:
    from pytest_k8sstate.state.footprint import footprint

    steps = list(getattr(state, "steps", None) or [])
    if not steps and state.after is not None:
        steps = [(state.before, state.after)]
    if not steps:
        return {"nodes": {}, "note": "the test took no snapshot after its before"}
    prints = [footprint(a.diff(b, ignore=state.ignore), b).to_json() for a, b in steps]
    out: dict[str, Any] = {"nodes": prints[-1]["nodes"]}
    if len(prints) > 1:
        out["steps"] = [p["nodes"] for p in prints]
    return out


def _write(item: pytest.Item, record: dict[str, Any]) -> str | None:
    from pytest_k8sstate.plugin.hooks import SETTINGS_KEY

    settings = item.config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return None
    path = artifact_dir_for(settings.artifacts, item.nodeid) / "footprint.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
        return str(path)
    return None
