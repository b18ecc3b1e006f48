"""Finding 17: a ReplicaSet template change keeps the pods; a Deployment template change replaces them."""

from __future__ import annotations

import pytest

from .helpers import added_keys, load_manifest, modified_keys, removed_keys, wait_until


def _pod_keys(snapshot, prefix: str) -> set[str]:
    return {k for k in snapshot.etcd.entries if k.startswith(f"/registry/pods/default/{prefix}")}


def _with_version(doc: dict, version: str) -> dict:
    doc["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": version}]
    return doc


@pytest.mark.k8sstate_finding(
    17, "ReplicaSet template change keeps the pods; Deployment template change replaces them"
)
def test_finding_17_replicaset_keeps_deployment_replaces(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Why did updating the ReplicaSet not update the running pods?': "the replicaset
    controller makes sure that the number of pods ... matches; changing the information in the pods is not
    its responsibility. Since there already were 3 pods and their number did not change, the controller did
    nothing. For such cases there is the controller of controllers — deployment"; "ReplicaSet ... does not
    replace pods automatically when the template is updated".

    Checked through etcd: after changing ``f17-rs``'s pod template (env VERSION v1 → v2) and waiting until
    the ReplicaSet controller observed the new generation, the ReplicaSet key is modified and the set of pod
    keys is unchanged (no pod key added or removed; the pods still run v1). After the same change to the
    Deployment ``f17-deploy``, a second ReplicaSet key is added, both old pod keys are removed and two new
    pod keys (named after the new ReplicaSet) are added, running v2.
    """
    rs_doc = load_manifest("17-replicaset.yaml")[0]
    k8s_api.apply(rs_doc)
    k8s_api.wait_ready("rs/f17-rs")
    cluster_state.snapshot("rs-v1")
    before_pods = _pod_keys(cluster_state.snapshots["rs-v1"], "f17-rs-")
    assert len(before_pods) == 3

    updated = k8s_api.apply(_with_version(rs_doc, "v2"))[0]
    generation = updated["metadata"]["generation"]
    k8s_api.wait_for(
        "rs/f17-rs",
        lambda o: (
            (o or {}).get("status", {}).get("observedGeneration") == generation,
            "status not observed",
        ),
        what="observed by the ReplicaSet controller",
    )
    rs_diff = cluster_state.diff(since="rs-v1")
    assert "/registry/replicasets/default/f17-rs" in modified_keys(rs_diff)
    assert not [k for k in added_keys(rs_diff) + removed_keys(rs_diff) if k.startswith("/registry/pods/")]
    assert _pod_keys(cluster_state.after, "f17-rs-") == before_pods
    for pod in k8s_api.list("pod", "app=f17-rs"):
        assert pod["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "v1"}]

    dep_doc = load_manifest("17-deployment.yaml")[0]
    k8s_api.apply(dep_doc)
    k8s_api.wait_ready("deployment/f17-deploy")
    cluster_state.snapshot("deploy-v1")
    old_pods = _pod_keys(cluster_state.snapshots["deploy-v1"], "f17-deploy-")
    old_rs = {
        k
        for k in cluster_state.snapshots["deploy-v1"].etcd.entries
        if "/replicasets/default/f17-deploy-" in k
    }
    assert len(old_pods) == 2
    assert len(old_rs) == 1

    k8s_api.apply(_with_version(dep_doc, "v2"))

    def rolled_out() -> bool:
        pods = k8s_api.list("pod", "app=f17-deploy")
        return len(pods) == 2 and all(
            p["spec"]["containers"][0]["env"][0]["value"] == "v2"
            and not p["metadata"].get("deletionTimestamp")
            for p in pods
        )

    wait_until("the Deployment to replace both pods", rolled_out)
    k8s_api.wait_ready("deployment/f17-deploy")
    dep_diff = cluster_state.diff(since="deploy-v1")
    new_rs = [k for k in added_keys(dep_diff) if k.startswith("/registry/replicasets/default/f17-deploy-")]
    assert len(new_rs) == 1, added_keys(dep_diff)
    new_hash = new_rs[0].rsplit("-", 1)[1]
    assert sorted(k for k in removed_keys(dep_diff) if k.startswith("/registry/pods/")) == sorted(old_pods)
    new_pods = [k for k in added_keys(dep_diff) if k.startswith("/registry/pods/default/f17-deploy-")]
    assert len(new_pods) == 2, new_pods
    assert all(f"-{new_hash}-" in k for k in new_pods), new_pods
    assert old_rs <= set(cluster_state.after.etcd.entries)  # the old ReplicaSet stays (scaled to 0)
