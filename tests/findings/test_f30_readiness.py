"""Finding 30: a pod turned unready by its readiness probe leaves the Service (EndpointSlice condition,
kube-proxy rules, real traffic) while it keeps running and answering on its own IP; ready again, back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_k8sstate.traffic import assert_traffic_matches_trace, probe

from .helpers import node_names, wait_proxy_endpoints, wait_until
from .workloads import agnhost_docs, agnhost_on_nodes, kubectl, pod_exec

N = 300  # 2 traced-equal backends: 150 expected each (see pytest_k8sstate.traffic.stats)
N_BACK = 45  # all 3 back: one never met in 45 connections has probability 3·(2/3)^45 ≈ 3e-8


def _conditions(k8s_api: Any, ip: str) -> dict[str, Any] | None:
    """The EndpointSlice conditions of endpoint ``ip`` of f30-web (None when it is not listed)."""
    for s in k8s_api.list("endpointslice", {"kubernetes.io/service-name": "f30-web"}):
        for ep in s.get("endpoints") or []:
            if ip in (ep.get("addresses") or []):
                return dict(ep.get("conditions") or {})
    return None


@pytest.mark.k8sstate_finding(
    30, "readiness: an unready pod leaves the Service (slice condition, rules, traffic) but keeps running"
)
@pytest.mark.k8sstate_needs("container-runtime", "kubelet")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_30_unready_endpoint_leaves_service(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Readiness and Liveness Probes': "Readiness: is the container fully ready for
    work, can traffic be routed to it. If the pod stops being ready, it is automatically removed from the
    lb list".

    Three agnhost pods behind ``f30-web``; their exec readiness probe fails while ``/tmp/unready`` exists.
    The test creates that file in one pod (``kubectl exec``), i.e. a real kubelet probe turns it unready:

    * the pod's Ready condition is False while its container keeps running (no restart);
    * its EndpointSlice entry stays, with ``ready: false, serving: false, terminating: false``;
    * every node's kube-proxy programs 2 endpoints; 300 connections from a node reach only the 2 others,
      as traced on the captured rules (1/2 each, chi-square at 1e-4; a connection to the unready pod
      would be an outcome the trace never produces);
    * the unready pod still answers on its own IP (it is out of the Service, not dead);
    * file removed: Ready again, the slice says ready, 3 endpoints programmed, all 3 pods answer.
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(agnhost_docs("30-readiness.yaml", tag))
    pod_ips = k8s_api.wait_endpoints("svc/f30-web", count=3, timeout=180)
    wait_proxy_endpoints(k8s_cluster, "default/f30-web", 3)
    pods = {p["metadata"]["name"]: p for p in k8s_api.list("pod", {"app": "f30-web"})}
    victim = sorted(pods)[0]
    victim_ip = pods[victim]["status"]["podIP"]
    others = sorted(n for n in pods if n != victim)

    pod_exec(k8s_cluster, victim).run(["/bin/busybox", "touch", "/tmp/unready"], timeout=30)
    unready = wait_until(
        f"{victim}'s EndpointSlice condition ready=false",
        lambda: (c := _conditions(k8s_api, victim_ip)) is not None and c.get("ready") is False and c,
        timeout=60,
    )
    assert unready == {"ready": False, "serving": False, "terminating": False}, unready
    assert sorted(k8s_api.wait_endpoints("svc/f30-web", count=2, timeout=30)) == sorted(
        ip for ip in pod_ips if ip != victim_ip
    )
    pod = k8s_api.get(f"pod/{victim}")
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    [cs] = pod["status"]["containerStatuses"]
    assert ready["Ready"] == "False", ready
    assert ready["ContainersReady"] == "False", ready
    assert "running" in cs["state"], cs
    assert cs["restartCount"] == 0, cs
    assert cs["ready"] is False, cs
    wait_proxy_endpoints(k8s_cluster, "default/f30-web", 2)
    snap = cluster_state.snapshot("one-unready")

    node = node_names(k8s_cluster)[0]
    kc = kubectl()
    observed = probe(k8s_cluster, "default/f30-web:80", source=f"node/{node}", count=N, kubectl=kc)
    assert sorted(observed.counts()) == others, observed.counts()
    split = assert_traffic_matches_trace(snap, observed, node=node)
    direct = probe(k8s_cluster, f"{victim_ip}:8080", source=f"node/{node}", count=5, kubectl=kc)
    assert direct.counts() == {victim: 5}, direct.connections[:2]
    print(f"\n[f30] {victim} unready; {observed.rate:.1f} connections/s; " + "; ".join(split.table()))

    pod_exec(k8s_cluster, victim).run(["/bin/busybox", "rm", "/tmp/unready"], timeout=30)
    back = wait_until(
        f"{victim}'s EndpointSlice condition ready=true",
        lambda: (c := _conditions(k8s_api, victim_ip)) is not None and c.get("ready") is True and c,
        timeout=60,
    )
    assert back == {"ready": True, "serving": True, "terminating": False}, back
    wait_proxy_endpoints(k8s_cluster, "default/f30-web", 3)
    again = probe(k8s_cluster, "default/f30-web:80", source=f"node/{node}", count=N_BACK, kubectl=kc)
    assert sorted(again.counts()) == sorted(pods), again.counts()


@pytest.mark.k8sstate_finding(
    30, "readiness: a rollout waits while the new pod is unready and moves on once it turns ready"
)
@pytest.mark.k8sstate_needs("container-runtime", "kubelet")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_30_rollout_waits_for_readiness(k8s_cluster, k8s_api):
    """Seed 002, section 'Readiness and Liveness Probes': "until the readinessProbe of the new pod
    succeeds, the Deployment will not try to continue the update".

    ``f30-web`` (3 replicas, default strategy: maxSurge 1, maxUnavailable 0 for 3) gets a new template
    whose readiness probe needs ``/tmp/ready``. Checked: the one surge pod runs but stays unready; for
    the next 10 s (10 probe periods) the old 3 pods all stay, ready and the Service's only endpoints, and
    no second new pod is made; once the test creates ``/tmp/ready`` in the new pod it turns ready, joins
    the endpoints, and the rollout moves on (one old pod removed, the next new pod created).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(agnhost_docs("30-readiness.yaml", tag))
    old_ips = sorted(k8s_api.wait_endpoints("svc/f30-web", count=3, timeout=180))
    old = {p["metadata"]["name"] for p in k8s_api.list("pod", {"app": "f30-web"})}
    probe_cmd = ["/bin/busybox", "test", "-e", "/tmp/ready"]
    k8s_api.patch(
        "deployment/f30-web",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "netexec", "readinessProbe": {"exec": {"command": probe_cmd}}}
                        ]
                    }
                }
            }
        },
    )

    def new_running() -> list[dict[str, Any]]:
        pods = [p for p in k8s_api.list("pod", {"app": "f30-web"}) if p["metadata"]["name"] not in old]
        running = [
            p
            for p in pods
            if any("running" in c.get("state", {}) for c in p["status"].get("containerStatuses") or [])
        ]
        return running

    [new] = wait_until("the surge pod of the rollout to run", new_running, timeout=120)
    time.sleep(10)  # nothing to wait for: the claim is that nothing happens while the new pod is unready
    pods = {p["metadata"]["name"]: p for p in k8s_api.list("pod", {"app": "f30-web"})}
    assert set(pods) == old | {new["metadata"]["name"]}, sorted(pods)
    for name in old:
        assert pods[name]["metadata"].get("deletionTimestamp") is None, name
    [cs] = pods[new["metadata"]["name"]]["status"]["containerStatuses"]
    assert cs["ready"] is False, cs
    assert sorted(k8s_api.ready_endpoints("svc/f30-web")) == old_ips
    status = k8s_api.get("deployment/f30-web")["status"]
    assert status.get("updatedReplicas") == 1, status
    assert status.get("readyReplicas") == 3, status

    pod_exec(k8s_cluster, new["metadata"]["name"]).run(["/bin/busybox", "touch", "/tmp/ready"], timeout=30)
    new_ip = new["status"]["podIP"]
    wait_until(
        f"the new pod {new_ip} to join the endpoints",
        lambda: new_ip in k8s_api.ready_endpoints("svc/f30-web"),
        timeout=60,
    )

    def moved_on() -> bool:
        pods = k8s_api.list("pod", {"app": "f30-web"})
        gone = [p for p in pods if p["metadata"]["name"] in old and p["metadata"].get("deletionTimestamp")]
        still = {p["metadata"]["name"] for p in pods} & old
        fresh = [
            p
            for p in pods
            if p["metadata"]["name"] not in old and p["metadata"]["name"] != new["metadata"]["name"]
        ]
        return bool((gone or len(still) < 3) and fresh)

    wait_until("the rollout to remove an old pod and create the next new one", moved_on, timeout=60)
