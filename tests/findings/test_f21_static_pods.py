"""Finding 21: control-plane pods are mirror pods owned by the Node; deleted, they come back."""

from __future__ import annotations

import pytest

from .helpers import wait_until

MIRROR_POD_TIMEOUT = 180.0  # seconds: three kubelet sync periods (see the docstring)
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


@pytest.mark.k8sstate_finding(
    21, "static control-plane pods are mirror pods owned by the Node and come back after deletion"
)
@pytest.mark.k8sstate_needs("kubelet")
def test_finding_21_static_pods_are_mirror_pods(k8s_cluster, k8s_api):
    """Seed 002, Homework 2, 'Why did all pods in kube-system come back after deletion': "most components
    are controlled by minikube itself; ``k -n kube-system describe po kube-apiserver-minikube`` shows
    ``Controlled By: Node/minikube`` and the suffix ``-minikube``: etcd-minikube, kube-apiserver-minikube,
    kube-controller-manager-minikube, kube-scheduler-minikube"; "kube-proxy and coredns ... are controlled by
    standard controllers: ``Controlled By: DaemonSet/kube-proxy``, ``ReplicaSet/coredns-…``".
    Seed 001, section 'Kubelet': "Kubelet can run pods without the API server".

    Checked on the control-plane node: ``<component>-<node>`` pods exist for etcd, kube-apiserver,
    kube-controller-manager and kube-scheduler, each with the ``kubernetes.io/config.mirror`` annotation
    and a controller ownerReference to ``Node/<node>``; the kube-proxy pods are owned by
    ``DaemonSet/kube-proxy``; deleting the kube-scheduler mirror pod through the API makes the kubelet
    create it again (new uid).

    Deadline: the kubelet notices a missing mirror pod when it next syncs the static pod — on a pod
    event or at the latest on its periodic sync (``syncFrequency``, 1 min, plus jitter) — and the
    create then goes through the apiserver. With 60 s a loaded machine (kind nodes on 2 shared cores)
    missed it; 180 s is three sync periods, still far below "never comes back".
    """
    cp = k8s_cluster.control_plane.name
    for component in COMPONENTS:
        pod = k8s_api.get(f"pod/{component}-{cp}", namespace="kube-system")
        meta = pod["metadata"]
        assert "kubernetes.io/config.mirror" in (meta.get("annotations") or {}), component
        owners = meta.get("ownerReferences") or []
        assert [(o["kind"], o["name"], o.get("controller")) for o in owners] == [("Node", cp, True)], owners
    for proxy in k8s_api.list("pod", "k8s-app=kube-proxy", namespace="kube-system"):
        assert [o["kind"] for o in proxy["metadata"]["ownerReferences"]] == ["DaemonSet"]

    name = f"kube-scheduler-{cp}"
    old_uid = k8s_api.get(f"pod/{name}", namespace="kube-system")["metadata"]["uid"]
    k8s_api.delete(f"pod/{name}", namespace="kube-system", wait=False)

    def recreated() -> bool:
        pod = k8s_api.try_get(f"pod/{name}", namespace="kube-system")
        return pod is not None and pod["metadata"]["uid"] != old_uid

    wait_until(f"the kubelet to re-create the mirror pod {name}", recreated, timeout=MIRROR_POD_TIMEOUT)
