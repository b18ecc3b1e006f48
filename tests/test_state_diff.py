"""StateDiff without captures: the default view, the ignore patterns, JSON and summary text."""

from __future__ import annotations

import json

from pytest_k8sstate.state import DEFAULT_IGNORE, KeyChange, NodeDiff, StateDiff


def test_state_diff_view_hides_heartbeats_but_keeps_them_in_full_json() -> None:
    d = StateDiff()
    d.etcd.added = [KeyChange("/registry/services/specs/default/web", "Service", "default", "web")]
    d.etcd.modified = [
        KeyChange(
            "/registry/leases/kube-node-lease/n1", "Lease", "kube-node-lease", "n1", ["spec.renewTime"]
        ),
        KeyChange("/registry/minions/n1", "Node", None, "n1", ["status.conditions[0].lastHeartbeatTime"]),
    ]
    d.etcd.removed = [KeyChange("/registry/minions/n2", "Node", None, "n2")]
    assert d.ignore == DEFAULT_IGNORE
    full = d.to_json()
    assert full["etcd"]["modified"] == ["/registry/leases/kube-node-lease/n1", "/registry/minions/n1"]
    assert full["etcd"]["removed"] == ["/registry/minions/n2"]  # removal of a node stays visible
    view = d.to_json(full=False)
    assert view["etcd"]["modified"] == []
    assert view["etcd"]["hidden"] == {"added": 0, "removed": 0, "modified": 2}
    assert [c.key for c in d.etcd_modified()] == []
    assert len(d.etcd_modified(include_ignored=True)) == 2
    assert d.view(ignore=(), ignore_modified=()).etcd.modified == d.etcd.modified
    assert StateDiff.from_json(json.loads(json.dumps(full))) == d
    text = d.summary()
    assert "2 modified hidden by ignore patterns" in text
    assert "+ /registry/services/specs/default/web  [Service]" in text
    assert "spec.renewTime" in d.summary(full=True)
    assert NodeDiff.from_json(NodeDiff(chains_added=[("nat", "X")]).to_json()) == NodeDiff(
        chains_added=[("nat", "X")]
    )
