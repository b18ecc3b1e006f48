"""Finding 19: a DaemonSet skips the tainted control-plane node unless it tolerates the taint."""

from __future__ import annotations

import pytest

from .helpers import added_keys, manifest


@pytest.mark.k8sstate_finding(
    19, "DaemonSet skips the tainted control plane; with the toleration it runs there too"
)
def test_finding_19_daemonset_and_control_plane_taint(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'DaemonSet | task with **': "since a taint that restricts pod placement is set on
    the master nodes: ``Taints: node-role.kubernetes.io/control-plane:NoSchedule`` — the pod that we still
    want to place on such a node must get the corresponding toleration, then the pod can be placed"::

        tolerations:
        - key: node-role.kubernetes.io/control-plane
          effect: NoSchedule

    Section 'DaemonSet': "A DaemonSet ensures that all (or some) Nodes run a copy of a Pod".

    Checked: the control-plane node carries exactly that taint; ``f19-ds`` (no toleration) gets one pod per
    worker and none on the control-plane node — in etcd: the DaemonSet key, a ControllerRevision key and one
    pod key per worker; ``f19-ds-tol`` (with the toleration) gets one pod on every node, the control-plane
    node included.
    """
    cp = k8s_cluster.control_plane.name
    workers = sorted(n.name for n in k8s_cluster.workers)
    taints = k8s_api.get(f"node/{cp}")["spec"].get("taints") or []
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in [
        {"key": t["key"], "effect": t["effect"]} for t in taints
    ]

    k8s_api.apply(manifest("19-daemonset.yaml"))
    ds = k8s_api.wait_ready("ds/f19-ds")
    assert ds["status"]["desiredNumberScheduled"] == len(workers)
    pods = k8s_api.list("pod", "app=f19-ds")
    assert sorted(p["spec"]["nodeName"] for p in pods) == workers
    keys = added_keys(cluster_state.diff())
    assert "/registry/daemonsets/default/f19-ds" in keys
    assert [k for k in keys if k.startswith("/registry/controllerrevisions/default/f19-ds-")], keys
    assert len([k for k in keys if k.startswith("/registry/pods/default/f19-ds-")]) == len(workers)

    k8s_api.apply(manifest("19-daemonset-tolerating.yaml"))
    ds = k8s_api.wait_ready("ds/f19-ds-tol")
    assert ds["status"]["desiredNumberScheduled"] == len(workers) + 1
    pods = k8s_api.list("pod", "app=f19-ds-tol")
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted([cp, *workers])
