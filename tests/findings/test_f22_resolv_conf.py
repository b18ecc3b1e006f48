"""Finding 22: a pod's resolv.conf points at kube-dns with the cluster search list and ndots:5."""

from __future__ import annotations

import json

import pytest

from .helpers import manifest


@pytest.mark.k8sstate_finding(
    22, "a pod's resolv.conf: nameserver 10.96.0.10, <ns>.svc.cluster.local search list, ndots:5"
)
@pytest.mark.k8sstate_needs("container-runtime")
def test_finding_22_pod_resolv_conf(k8s_cluster, k8s_api):
    """Seed 002, section 'Resolv.conf and ndots problem': "by default the option options ndots:5 is added
    to resolv.conf"::

        nameserver 10.96.0.10
        search default.svc.cluster.local svc.cluster.local cluster.local
        options ndots:5

    Seed 000 (article): "by default /etc/hosts and /etc/resolv.conf are mounted into the container".

    Checked: the file the container runtime mounts as the container's ``/etc/resolv.conf`` (read on the
    node through ``crictl inspect``, since the pause image has no shell) has ``nameserver 10.96.0.10``, a
    search list starting with ``default.svc.cluster.local svc.cluster.local cluster.local`` and
    ``options ndots:5``.

    Real cluster vs article: the kubelet appends the node's own search domains after the three cluster
    ones, so only the start of the search list is fixed.
    """
    k8s_api.apply(manifest("22-dns-pod.yaml"))
    pod = k8s_api.wait_ready("pod/f22-dns")
    node = k8s_cluster.node(pod["spec"]["nodeName"]).exec
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    inspected = json.loads(node.run(["crictl", "inspect", "-o", "json", cid], timeout=30).text)
    # resolv.conf is a mount the runtime adds from the sandbox: it is in the OCI spec, not in status.mounts
    mounts = {m["destination"]: m["source"] for m in inspected["info"]["runtimeSpec"]["mounts"]}
    resolv = node.run(["cat", mounts["/etc/resolv.conf"]]).text
    lines = [line.split() for line in resolv.splitlines() if line.strip() and not line.startswith("#")]
    assert ["nameserver", "10.96.0.10"] in lines, resolv
    search = next(line for line in lines if line[0] == "search")
    assert search[1:4] == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"], resolv
    options = [opt for line in lines if line[0] == "options" for opt in line[1:]]
    assert "ndots:5" in options, resolv
