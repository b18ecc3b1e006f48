"""Finding 30: a pod turned unready by its readiness probe leaves the Service (EndpointSlice condition,
kube-proxy rules, real traffic) while it keeps running and answering on its own IP; ready again, back."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_k8sstate.traffic import assert_traffic_matches_trace, probe

from .helpers import node_names, wait_proxy_endpoints, wait_until
from .workloads import agnhost_docs, agnhost_on_nodes, kubectl, pod_exec

N = 300  # 2 traced-equal backends: 150 expected each (see pytest_k8sstate.traffic.stats)
N_BACK = 45  # all 3 back: one never met in 45 connections has probability 3·(2/3)^45 ≈ 3e-8


def _conditions(k8s: Any, ip: str) -> dict[str, Any] | None:
    """The EndpointSlice conditions of endpoint ``ip`` of f30-web (None when it is not listed)."""
    for s in k8s.list("endpointslice", {"kubernetes.io/service-name": "f30-web"}):
        for ep in s.get("endpoints") or []:
            if ip in (ep.get("addresses") or []):
                return dict(ep.get("conditions") or {})
    return None


@pytest.mark.finding(
    30, "readiness: an unready pod leaves the Service (slice condition, rules, traffic) but keeps running"
)
@pytest.mark.needs("container-runtime", "kubelet")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_30_unready_endpoint_leaves_service(k8s_cluster, cluster_state, k8s):
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
    k8s.apply(agnhost_docs("30-readiness.yaml", tag))
    pod_ips = k8s.wait_endpoints("svc/f30-web", count=3, timeout=180)
    wait_proxy_endpoints(k8s_cluster, "default/f30-web", 3)
    pods = {p["metadata"]["name"]: p for p in k8s.list("pod", {"app": "f30-web"})}
    victim = sorted(pods)[0]
    victim_ip = pods[victim]["status"]["podIP"]
    others = sorted(n for n in pods if n != victim)

    pod_exec(k8s_cluster, victim).run(["/bin/busybox", "touch", "/tmp/unready"], timeout=30)
    unready = wait_until(
        f"{victim}'s EndpointSlice condition ready=false",
        lambda: (c := _conditions(k8s, victim_ip)) is not None and c.get("ready") is False and c,
        timeout=60,
    )
    assert unready == {"ready": False, "serving": False, "terminating": False}, unready
    assert sorted(k8s.wait_endpoints("svc/f30-web", count=2, timeout=30)) == sorted(
        ip for ip in pod_ips if ip != victim_ip
    )
    pod = k8s.get(f"pod/{victim}")
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
        lambda: (c := _conditions(k8s, victim_ip)) is not None and c.get("ready") is True and c,
        timeout=60,
    )
    assert back == {"ready": True, "serving": True, "terminating": False}, back
    wait_proxy_endpoints(k8s_cluster, "default/f30-web", 3)
    again = probe(k8s_cluster, "default/f30-web:80", source=f"node/{node}", count=N_BACK, kubectl=kc)
    assert sorted(again.counts()) == sorted(pods), again.counts()
