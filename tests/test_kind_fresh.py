"""``fresh=True`` on kind (providers/kind/reset.py): after a Deployment, a NodePort Service and a namespace,
a reset brings etcd *and* the nodes back — no pod sandbox, veth, route or rule of the test is left — checked
by a snapshot diff against the pristine state that shows nothing but the documented noise.

Runs where the cluster has a container runtime (``--k8sstate-provider kind``); how fast is
``bench/bench_kind_fresh.py``'s business, not this test's.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [
    pytest.mark.k8sstate_needs("container-runtime"),
    pytest.mark.k8sstate(namespace="default"),  # the reset removes any namespace a fixture made
]

NOISE_MODIFIED = (
    "/registry/minions/",  # the kubelets' node status, rewritten after etcd went back
    "/registry/leases/",
    "/registry/masterleases/",
    "/registry/peerserverleases/",
    "/registry/events/",
    "/registry/ranges/",  # the repair controllers re-check the allocation bitmaps
)
"""Keys a reset may leave modified (heartbeats, repair controllers; any object's status is refreshed by its
kubelet or controller, see ``_status_refresh``); none may stay added or removed."""

APP = "fr-web"
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": APP},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": APP}},
        "template": {
            "metadata": {"labels": {"app": APP}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10.1"}]},
        },
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": APP},
    "spec": {"type": "NodePort", "selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 8080}]},
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fr-extra"}}


def _status_refresh(change: Any) -> bool:
    """An object whose kubelet or controller rewrote its status after the restore (only ``status`` and the
    bookkeeping of who wrote it changed, or the same content rewritten) — documented noise, like a node's
    status: a reset restores what the test wrote, the components then recompute what they report."""
    fields = change.changed_fields
    return fields is not None and all(f.startswith("status") or f == "metadata.managedFields" for f in fields)


def _node_changes(diff: Any) -> dict[str, str]:
    return {name: nd for name, nd in diff.nodes.items() if nd}


def test_reset_on_kind_removes_the_tests_pods_from_etcd_and_the_nodes(
    k8s_cluster: Any, k8s_clusters: Any, k8s_api: Any
) -> None:
    k8s_clusters.reset(k8s_cluster)  # whatever earlier tests of the session left
    pristine = k8s_cluster.snapshot("pristine")

    k8s_api.apply(NAMESPACE)
    k8s_api.apply(DEPLOYMENT)
    k8s_api.apply(SERVICE)
    k8s_api.wait_ready(f"deployment/{APP}", timeout=180)
    k8s_api.wait_endpoints(f"svc/{APP}", count=2, timeout=120)
    changed = k8s_cluster.snapshot("changed")
    grown = pristine.diff(changed)
    added = {c.key for c in grown.etcd_added()}
    assert "/registry/namespaces/fr-extra" in added
    assert f"/registry/deployments/default/{APP}" in added
    assert any(nd.links_added for nd in grown.nodes.values()), grown.summary()  # the pods' veths
    assert any(nd.netfilter_changed for nd in grown.nodes.values()), grown.summary()  # the Service

    started = time.monotonic()
    k8s_clusters.reset(k8s_cluster)
    took = time.monotonic() - started
    back = k8s_cluster.snapshot("back")
    diff = pristine.diff(back)
    print(f"\n[fresh on kind] reset in {took:.2f}s")

    events = ("/registry/events/", "/registry/events.k8s.io/")  # written by the deletes themselves
    added = [c.key for c in diff.etcd_added(include_ignored=True) if not c.key.startswith(events)]
    assert added == [], diff.summary(full=True)
    removed = [c.key for c in diff.etcd_removed(include_ignored=True) if not c.key.startswith(events)]
    assert removed == [], diff.summary(full=True)
    modified = [
        c.key
        for c in diff.etcd_modified(include_ignored=True)
        if not c.key.startswith(NOISE_MODIFIED) and not _status_refresh(c)
    ]
    assert modified == [], f"{modified}\n{diff.summary(full=True)}"
    assert _node_changes(diff) == {}, diff.summary(full=True)
    assert k8s_api.list("pods", f"app={APP}") == []
