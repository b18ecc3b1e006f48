"""Finding 7: a Deployment with two replicas adds deployment, replicaset and two pod keys — no rule."""

from __future__ import annotations

import re

import pytest

from pytest_k8sstate.assertions import assert_new_keys, assert_no_netfilter_change

from .helpers import added_keys, manifest, split_events, without_noise


@pytest.mark.k8sstate_finding(
    7, "a 2-replica Deployment adds deployment, replicaset and 2 pod keys; no netfilter rule"
)
def test_finding_07_deployment_keys(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), step 'Deployment': "a Deployment with two replicas of one Pod was created ...
    etcd keys — keys of the deployment, the replicaSet and two pods appeared; iptables — no new rules
    appeared".
    Seed 001, section 'Controller-manager': "Controller-manager generates the descriptions of replicasets
    and pods from the deployment object".

    Checked: the new etcd keys (besides events) are exactly ``/registry/deployments/default/f07-web``,
    one ``/registry/replicasets/default/f07-web-<hash>`` and two
    ``/registry/pods/default/f07-web-<hash>-<id>`` whose hash is the ReplicaSet's; no iptables/nftables
    change on any node.

    Real cluster vs article: as in finding 2, the article's per-pod traffic rules came from the CNI and
    are absent here; kube-proxy does not react to Pods without a Service.
    """
    k8s_api.apply(manifest("07-deployment.yaml"))
    k8s_api.wait_ready("deployment/f07-web")
    diff = cluster_state.diff()

    assert_new_keys(
        diff,
        [
            "/registry/deployments/default/f07-web",
            "/registry/replicasets/default/f07-web-*",
            "/registry/pods/default/f07-web-*",
        ],
        exact=True,
    )
    _events, keys = split_events(without_noise(added_keys(diff)))
    rs = [k for k in keys if k.startswith("/registry/replicasets/")]
    assert len(rs) == 1, keys
    rs_name = rs[0].rsplit("/", 1)[1]
    pods = [k for k in keys if k.startswith("/registry/pods/")]
    assert len(pods) == 2, keys
    assert all(
        re.fullmatch(rf"/registry/pods/default/{re.escape(rs_name)}-[a-z0-9]{{5}}", p) for p in pods
    ), pods
    assert sorted(keys) == sorted(["/registry/deployments/default/f07-web", *rs, *pods])
    assert_no_netfilter_change(diff)
