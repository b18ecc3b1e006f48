"""etcd diffs: changed field paths, the diff logic on constructed states, and a real etcd server."""

from __future__ import annotations

import json
from pathlib import Path

from etcd_fixtures import (
    etcd_server,  # noqa: F401 - the shared real-etcd fixture
    k8s_value,
    pod,
    service,
)

from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState, collect_etcd
from pytest_k8sstate.etcd.client import EtcdClient
from pytest_k8sstate.etcd.server import EtcdServer
from pytest_k8sstate.state import Snapshot, changed_field_paths


def test_changed_field_paths_dotted_and_managed_fields_collapsed() -> None:
    before = {
        "metadata": {"labels": {"app": "a"}, "managedFields": [{"time": "1"}], "annotations": {"a.b/c": "x"}},
        "spec": {"ports": [{"port": 80}], "x": 1},
    }
    after = {
        "metadata": {
            "labels": {"app": "b", "new": "1"},
            "managedFields": [{"time": "2"}],
            "annotations": {"a.b/c": "y"},
        },
        "spec": {"ports": [{"port": 81}]},
        "status": {},
    }
    assert changed_field_paths(before, after) == [
        'metadata.annotations["a.b/c"]',
        "metadata.labels.app",
        "metadata.labels.new",
        "metadata.managedFields",
        "spec.ports[0].port",
        "spec.x",
        "status",
    ]
    assert changed_field_paths(before, before) == []


def _entry(key: str, value: bytes, rev: int) -> EtcdEntry:
    return EtcdEntry(key, rev, rev, 1, len(value), value=value)


def _json(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode()


def _lease(renew: str) -> bytes:
    return _json({"kind": "Lease", "metadata": {"name": "node-1"}, "spec": {"renewTime": renew}})


def _cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> bytes:
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {}}
    return _json({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def test_etcd_diff_logic_on_constructed_states() -> None:
    """Diff logic only: EtcdState objects built from real JSON / encrypted values (no server needed)."""
    k_keep = "/registry/configmaps/default/keep"
    k_mod = "/registry/configmaps/default/mod"
    k_gone = "/registry/configmaps/default/gone"
    k_new = "/registry/configmaps/default/new"
    k_enc = "/registry/secrets/default/s"
    k_rewrite = "/registry/configmaps/default/rewrite"
    before = EtcdState(
        10,
        "/registry",
        {
            k_keep: _entry(k_keep, _cm("keep", {"a": "1"}), 2),
            k_mod: _entry(k_mod, _cm("mod", {"a": "1"}, {"app": "x"}), 3),
            k_gone: _entry(k_gone, _cm("gone", {}), 4),
            k_enc: _entry(k_enc, b"k8s:enc:aescbc:v1:key1:\x00\x01\x02", 5),
            k_rewrite: _entry(k_rewrite, _cm("rewrite", {}), 6),
        },
    )
    after = EtcdState(
        20,
        "/registry",
        {
            k_keep: _entry(k_keep, _cm("keep", {"a": "1"}), 2),
            k_mod: _entry(k_mod, _cm("mod", {"a": "2"}, {"app": "y"}), 15),
            k_new: _entry(k_new, _cm("new", {}), 16),
            k_enc: _entry(k_enc, b"k8s:enc:aescbc:v1:key1:\x00\x09\x09", 17),
            k_rewrite: _entry(k_rewrite, _cm("rewrite", {}), 18),
        },
    )
    d = Snapshot("b", 1.0, etcd=before).diff(Snapshot("a", 2.0, etcd=after))
    assert (d.before_revision, d.after_revision) == (10, 20)
    assert [c.key for c in d.etcd.added] == [k_new]
    assert d.etcd.added[0].identity == "ConfigMap default/new"
    assert [c.key for c in d.etcd.removed] == [k_gone]
    mods = {c.key: c for c in d.etcd.modified}
    assert set(mods) == {k_mod, k_enc, k_rewrite}
    assert mods[k_mod].changed_fields == ["data.a", "metadata.labels.app"]
    assert mods[k_enc].changed_fields is None  # encrypted: cannot tell which fields
    assert mods[k_rewrite].changed_fields == []  # same content, new mod_revision
    text = d.summary()
    assert "~ /registry/configmaps/default/mod  [ConfigMap]  data.a, metadata.labels.app" in text
    assert "(value not decoded)" in text
    assert "(rewritten, same content)" in text
    # etcd captured on one side only: not compared, said so
    d2 = Snapshot("b", 1.0).diff(Snapshot("a", 2.0, etcd=after))
    assert not d2.etcd
    assert d2.notes == ["etcd not captured in 'b': etcd keys not compared"]


def test_etcd_diff_real_server(etcd_server: EtcdServer, tmp_path: Path) -> None:  # noqa: F811
    """Real etcd (client-cert TLS) with protobuf-encoded Kubernetes values; capture, diff, save/load."""
    svc_key = "/registry/services/specs/default/web"
    pod_key = "/registry/pods/default/web-0"
    lease_key = "/registry/leases/kube-node-lease/node-1"
    with EtcdClient(etcd_server.target) as c:
        c.delete(b"\x00", range_end=b"\x00")
        c.put(pod_key, k8s_value("v1", "Pod", pod("default", "web-0", uid="u-pod")))
        c.put(
            lease_key, _json({"kind": "Lease", "metadata": {"name": "node-1"}, "spec": {"renewTime": "t1"}})
        )
        before = Snapshot("before", 1.0, etcd=collect_etcd(c))
        c.put(svc_key, k8s_value("v1", "Service", service("default", "web", uid="u-svc")))
        c.put(pod_key, k8s_value("v1", "Pod", pod("default", "web-0", uid="u-pod", labels={"app": "web2"})))
        c.put(
            lease_key, _json({"kind": "Lease", "metadata": {"name": "node-1"}, "spec": {"renewTime": "t2"}})
        )
        after = Snapshot("after", 2.0, etcd=collect_etcd(c))
    d = before.diff(after)
    assert [(x.key, x.kind, x.namespace, x.name) for x in d.etcd_added()] == [
        (svc_key, "Service", "default", "web")
    ]
    assert [x.key for x in d.etcd_modified()] == [pod_key]  # the lease is hidden from the view...
    assert {x.key for x in d.etcd_modified(include_ignored=True)} == {pod_key, lease_key}
    assert d.to_json()["etcd"]["modified"] == [lease_key, pod_key]  # ...but kept in the data
    pod_change = d.etcd_modified()[0]
    assert pod_change.changed_fields is not None
    assert "metadata.labels.app" in pod_change.changed_fields
    # save / load keeps everything
    after.save(tmp_path / "after.json")
    assert Snapshot.load(tmp_path / "after.json") == after
    assert "services/specs" in after.summary()
