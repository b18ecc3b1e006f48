"""Finding 20: the scheduler binds a pod by writing spec.nodeName — the pod key is modified, not re-added."""

from __future__ import annotations

import pytest

from .helpers import added_keys, manifest, modified_keys, removed_keys, split_events, wait_until

POD_KEY = "/registry/pods/default/f20-pod"


@pytest.mark.k8sstate_finding(20, "the scheduler writes spec.nodeName: the pod key is modified, not re-added")
def test_finding_20_binding_modifies_the_pod_key(k8s_cluster, cluster_state, k8s_api):
    """Seed 001, section 'Scheduler': "The NodeName field is as a rule filled in after the scheduler has
    chosen a suitable node according to the rules. After that Kube-API-server writes this to Etcd."
    Seed 002, section 'Kube-Scheduler': "In the end binding happens — the Pod is bound to a node (and the
    changed Pod object is saved in etcd)".

    Checked: the pod is created with a scheduling gate, so the state "created, not yet scheduled" can be
    captured (its key exists, ``spec.nodeName`` is empty); removing the gate lets the real kube-scheduler
    bind it. From the first to the second snapshot the pod key is *modified* — same create revision, same
    uid, higher mod revision — never removed or re-added; no other object (e.g. a Binding) is stored; the
    scheduler's ``Scheduled`` event is added; ``spec.nodeName`` names a worker.

    Real cluster vs article: scheduling gates (GA in 1.30) postdate the seeds; they only hold the pod back
    so the pre-binding state can be captured deterministically.
    """
    k8s_api.apply(manifest("20-gated-pod.yaml"))
    pod = k8s_api.get("pod/f20-pod")
    assert not pod["spec"].get("nodeName")
    gated = cluster_state.snapshot("gated")
    assert POD_KEY in gated.etcd.entries

    k8s_api.patch("pod/f20-pod", [{"op": "remove", "path": "/spec/schedulingGates"}], patch_type="json")
    bound = k8s_api.wait_for(
        "pod/f20-pod", lambda o: (bool((o or {}).get("spec", {}).get("nodeName")), "not bound"), what="bound"
    )
    assert bound is not None
    node = bound["spec"]["nodeName"]
    assert node in {n.name for n in k8s_cluster.workers}
    # the scheduler records its Scheduled event asynchronously (an event broadcaster, batched): wait until
    # it is stored, else a snapshot right after the binding can come first
    wait_until(
        "the scheduler's Scheduled event of f20-pod",
        lambda: k8s_api.list(
            "events", namespace="default", field_selector="involvedObject.name=f20-pod,reason=Scheduled"
        ),
    )
    diff = cluster_state.diff(since="gated")
    after = cluster_state.after

    assert POD_KEY in modified_keys(diff)
    assert POD_KEY not in added_keys(diff)
    assert POD_KEY not in removed_keys(diff)
    before_entry, after_entry = gated.etcd.entries[POD_KEY], after.etcd.entries[POD_KEY]
    assert after_entry.create_revision == before_entry.create_revision
    assert after_entry.mod_revision > before_entry.mod_revision
    assert after_entry.decoded.uid == before_entry.decoded.uid == bound["metadata"]["uid"]

    events, others = split_events(k for k in added_keys(diff) if not k.startswith("/registry/leases/"))
    assert [k for k in others if "f20" in k or "binding" in k] == [], others
    assert any(k.startswith("/registry/events/default/f20-pod.") for k in events), events
