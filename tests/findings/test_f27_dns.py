"""Finding 27: DNS answers seen from a pod — a Service's A record by short and full name (ndots:5 search
expansion), a headless Service → its pods' IPs, ExternalName → CNAME; then real traffic by short name."""

from __future__ import annotations

import json

import pytest

from pytest_k8sstate.traffic.dns import nslookup, parse_resolv_conf

from .workloads import agnhost_docs, agnhost_on_nodes, pod_exec

ZONE = "default.svc.cluster.local"


@pytest.mark.finding(
    27,
    "DNS from a pod: A record by short/full name (ndots:5 search), headless → pod IPs, ExternalName → CNAME",
)
@pytest.mark.needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_27_dns_answers(k8s_cluster, k8s):
    """Seed 002, section 'Resolv.conf and ndots problem': "by default the option options ndots:5 is added to
    resolv.conf" with the search list ``default.svc.cluster.local svc.cluster.local cluster.local``;
    section 'Headless service': a headless Service's name resolves to its pods; section 'Service
    ExternalName': "the cluster DNS Service returns a CNAME record with the value my.database.example.com".
    Seed 001: every Service gets the name ``<svc>.<ns>.svc.cluster.local`` (findings 12, 13 and 22 checked
    only the keys, the rules and the file; this is their DNS half).

    Checked from a client pod (agnhost image, busybox ``nslookup`` against CoreDNS on kind):

    * the pod's resolv.conf: ``nameserver`` = kube-dns's ClusterIP, search list starting with the three
      cluster domains, ``options ndots:5``;
    * ``f27-web.default.svc.cluster.local`` → exactly the Service's ClusterIP (one A record), answered by
      kube-dns; the short name ``f27-web`` and ``f27-web.default`` (fewer dots than 5) → the same ClusterIP
      under the full name built from the search list (the expansion is visible: the answer's name is
      ``f27-web.default.svc.cluster.local``, not what was asked);
    * headless ``f27-headless`` → exactly the IPs of the Service's ready pods (no ClusterIP);
    * ExternalName ``f27-db`` → a CNAME to ``my.database.example.com`` (and no A record of its own);
    * traffic by name: agnhost's ``/dial`` in the client pod resolves the *short* name ``f27-web`` with Go's
      resolver (which reads resolv.conf's search list and ndots itself) and its 10 HTTP requests are all
      answered by the Service's pods.
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s.apply(agnhost_docs("27-dns.yaml", tag))
    pod_ips = k8s.wait_endpoints("svc/f27-web", count=2, timeout=180)
    k8s.wait_endpoints("svc/f27-headless", count=2, timeout=60)
    k8s.wait_ready("pod/f27-client", timeout=180)
    cluster_ip = k8s.cluster_ip("f27-web")
    dns_ip = k8s.cluster_ip("kube-dns", namespace="kube-system")
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in k8s.list("pod", {"app": "f27-web"})}
    assert sorted(pods.values()) == sorted(pod_ips), (pods, pod_ips)
    client = pod_exec(k8s_cluster, "f27-client")

    servers, search, options = parse_resolv_conf(client.run(["/bin/busybox", "cat", "/etc/resolv.conf"]).text)
    assert servers == [dns_ip], servers
    assert search[:3] == [ZONE, "svc.cluster.local", "cluster.local"], search
    assert options.get("ndots") == "5", options

    full = nslookup(client, f"f27-web.{ZONE}")
    assert (full.server or "").split(":")[0].split("#")[0] == dns_ip, full.text
    assert full.addresses == {f"f27-web.{ZONE}": [cluster_ip]}, full.text
    for asked in ("f27-web", "f27-web.default"):
        answer = nslookup(client, asked)
        assert answer.addresses == {f"f27-web.{ZONE}": [cluster_ip]}, (asked, answer.text)
        # whatever busybox reports as not found is the name under the other search domains (or bare)
        others = {f"{asked}.{d}" for d in search} | {asked}
        assert set(answer.not_found) <= others, (asked, answer.not_found)
    print(f"\n[f27] nslookup f27-web from f27-client:\n{answer.text.strip()}")

    headless = nslookup(client, "f27-headless")
    assert list(headless.addresses) == [f"f27-headless.{ZONE}"], headless.text
    assert sorted(headless.all_addresses()) == sorted(pod_ips), headless.text
    assert cluster_ip not in headless.all_addresses()

    cname = nslookup(client, f"f27-db.{ZONE}", type="cname")
    assert cname.cnames == {f"f27-db.{ZONE}": "my.database.example.com"}, cname.text
    assert not cname.addresses, cname.text

    dial = "http://127.0.0.1:8080/dial?request=hostname&protocol=http&host=f27-web&port=80&tries=10"
    out = json.loads(client.run(["/bin/busybox", "wget", "-q", "-O-", dial], timeout=60).text)
    assert not out.get("errors"), out
    assert len(out["responses"]) == 10, out
    assert set(out["responses"]) <= set(pods), (out, pods)
