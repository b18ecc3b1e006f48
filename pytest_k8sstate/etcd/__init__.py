"""etcd: where it is (target), how we talk to it (client), what we capture (capture), how its values decode
(decode), and a real etcd process for the local provider and the tests (server)."""

from __future__ import annotations

from pytest_k8sstate.etcd.capture import SECRETS_PREFIX, EtcdEntry, EtcdState, collect_etcd
from pytest_k8sstate.etcd.client import EtcdClient
from pytest_k8sstate.etcd.decode import Decoded, decode_value
from pytest_k8sstate.etcd.server import EtcdServer, find_etcd_binary
from pytest_k8sstate.etcd.target import EtcdTarget, prefix_range_end

__all__ = [
    "SECRETS_PREFIX",
    "Decoded",
    "EtcdClient",
    "EtcdEntry",
    "EtcdServer",
    "EtcdState",
    "EtcdTarget",
    "collect_etcd",
    "decode_value",
    "find_etcd_binary",
    "prefix_range_end",
]
