"""One kept etcd connection per target (etcd/capture.py): reused, replaced when broken, can be turned off."""

from __future__ import annotations

import pytest

from pytest_k8sstate.etcd import capture
from pytest_k8sstate.etcd.capture import close_shared_clients, collect_etcd
from pytest_k8sstate.etcd.server import EtcdServer

try:
    from etcd_fixtures import etcd_server
except ImportError:  # tests/ is a package
    from tests.etcd_fixtures import etcd_server  # noqa: F401 - fixture


@pytest.fixture(autouse=True)
def _no_kept_connections() -> None:
    close_shared_clients()


def test_snapshots_of_one_target_share_one_connection(etcd_server: EtcdServer) -> None:
    first = collect_etcd(etcd_server.target)
    assert len(capture._shared) == 1
    client = next(iter(capture._shared.values()))
    second = collect_etcd(etcd_server.target)
    assert next(iter(capture._shared.values())) is client
    assert second.revision >= first.revision


def test_a_broken_kept_connection_is_replaced(etcd_server: EtcdServer) -> None:
    collect_etcd(etcd_server.target)
    broken = next(iter(capture._shared.values()))
    broken.close()  # what a dead channel looks like to the next call
    state = collect_etcd(etcd_server.target)
    assert state.revision > 0
    assert next(iter(capture._shared.values())) is not broken


def test_keeping_connections_can_be_turned_off(
    etcd_server: EtcdServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(capture.SHARED_ENV, "0")
    collect_etcd(etcd_server.target)
    assert not capture._shared
