"""Report of real traffic vs the trace, and the conntrack switch.

* Every test that called :func:`~pytest_k8sstate.traffic.assert_traffic_matches_trace` (passed or failed)
  gets a report section ``k8sstate traffic`` with each comparison's traced vs observed table (backend |
  traced share | observed count | expected | p …), shown by pytest for failures and with ``-rP`` for
  passes, and the same text as ``traffic.txt`` in the test's artifact directory (JUnit property
  ``k8sstate_file_traffic.txt``). The comparisons come from :mod:`pytest_k8sstate.util.evidence`.
* ``--k8sstate-conntrack`` (or ``K8SSTATE_CONNTRACK=1``) captures every node's conntrack table in every
  snapshot; ``@pytest.mark.k8sstate_conntrack`` does it for one test's snapshots (see
  :mod:`pytest_k8sstate.node.conntrack`; the switch is the environment variable, set for the session or
  around the test).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator
from typing import Any

import pytest

from pytest_k8sstate.plugin.state import artifact_dir_for
from pytest_k8sstate.util import evidence
from pytest_k8sstate.util.files import atomic_write_bytes

__all__ = [
    "CONNTRACK_ENV",
    "TRAFFIC_FILE",
    "TRAFFIC_SECTION",
    "pytest_addoption",
    "pytest_configure",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
]

CONNTRACK_ENV = "K8SSTATE_CONNTRACK"  # read by pytest_k8sstate.node.conntrack.enabled
TRAFFIC_SECTION = "k8sstate traffic"
TRAFFIC_FILE = "traffic.txt"
_PREVIOUS_KEY = pytest.StashKey[tuple[str | None]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("k8sstate", "Kubernetes cluster state (pytest-k8sstate)")
    group.addoption(
        "--k8sstate-conntrack",
        dest="k8sstate_conntrack",
        action="store_true",
        default=False,
        help="also capture every node's conntrack table (conntrack -L, IPv4 and IPv6) in every snapshot "
        f"(env {CONNTRACK_ENV}=1; one test: @pytest.mark.k8sstate_conntrack)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "k8sstate_conntrack: capture every node's conntrack table in this test's snapshots "
        "(assert_conntrack_dnat); the whole session: --k8sstate-conntrack",
    )
    if config.getoption("k8sstate_conntrack", False):
        os.environ[CONNTRACK_ENV] = "1"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    """Before the fixtures (the ``before`` snapshot): forget stale evidence; the marker's conntrack switch."""
    evidence.drain("traffic")
    if item.get_closest_marker("k8sstate_conntrack") is not None:
        item.stash[_PREVIOUS_KEY] = (os.environ.get(CONNTRACK_ENV),)
        os.environ[CONNTRACK_ENV] = "1"
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    try:
        return (yield)
    finally:
        previous = item.stash.get(_PREVIOUS_KEY, None)
        if previous is not None:
            del item.stash[_PREVIOUS_KEY]
            if previous[0] is None:
                os.environ.pop(CONNTRACK_ENV, None)
            else:
                os.environ[CONNTRACK_ENV] = previous[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when != "call":
        return report
    records = evidence.drain("traffic")
    if not records:
        return report
    text = "\n\n".join(r.text for r in records) + "\n"
    report.sections.append((TRAFFIC_SECTION, text))
    path = _write(item, text)
    if path is not None:
        prop = ("k8sstate_file_traffic.txt", str(path))
        item.user_properties.append(prop)
        report.user_properties.append(prop)
    return report


def _write(item: pytest.Item, text: str) -> Any:
    """``traffic.txt`` in the test's artifact directory (None when the plugin is not configured)."""
    from pytest_k8sstate.plugin.hooks import SETTINGS_KEY

    settings = item.config.stash.get(SETTINGS_KEY, None)
    if settings is None:
        return None
    path = artifact_dir_for(settings.artifacts, item.nodeid) / TRAFFIC_FILE
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode())
        return path
    return None
