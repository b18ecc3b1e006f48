"""Finding 27: DNS answers seen from a pod — a Service's A record by short and full name (ndots:5 search
expansion), a headless Service → its pods' IPs, ExternalName → CNAME; then real traffic by short name."""

from __future__ import annotations

import json

import pytest

from pytest_k8sstate.traffic import assert_traffic_matches_trace, probe
from pytest_k8sstate.traffic.dns import nslookup, parse_resolv_conf

from .helpers import wait_proxy_endpoints
from .workloads import agnhost_docs, agnhost_on_nodes, kubectl, pod_exec

ZONE = "default.svc.cluster.local"
N = 200  # 2 traced-equal backends: 100 expected each (see pytest_k8sstate.traffic.stats)


@pytest.mark.k8sstate_finding(
    27,
    "DNS from a pod: A record by short/full name (ndots:5 search), headless → pod IPs, ExternalName → CNAME",
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_27_dns_answers(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Node local DNS cache': "service FQDN: service.namespace.svc.<cluster domain>";
    'Resolv.conf and ndots problem': "by default the option options ndots:5 is added to resolv.conf ...
    DNS queries with fewer than 5 dots (or not an FQDN) are handled like this: append a domain from the
    search list and try to resolve; if that fails, take the next domain" (``vk.com`` →
    ``vk.com.default.svc.cluster.local``, ``vk.com.svc.cluster.local``, ``vk.com.cluster.local``, then
    outside); "adding a dot at the end makes any name an FQDN: it bypasses the search directive";
    'Musl (Alpine) vs libc': resolvers differ in how they use search. 'Headless service': "works only as
    a DNS record: you ask for its address and get the list of endpoints". 'Service ExternalName': "the
    cluster DNS Service returns a CNAME record with the value my.database.example.com". (Findings 12, 13
    and 22 checked the keys, the rules and the file; this is their DNS half.)

    Checked from a client pod (agnhost image, busybox ``nslookup`` against CoreDNS on kind):

    * the pod's resolv.conf: ``nameserver`` = kube-dns's ClusterIP, search list starting with the three
      cluster domains, ``options ndots:5``;
    * ``f27-web.default.svc.cluster.local`` → exactly the Service's ClusterIP (one A record), answered by
      kube-dns; the short name ``f27-web`` → the same ClusterIP under the full name built from the first
      search domain, and busybox shows the expansion: ``f27-web.svc.cluster.local`` and
      ``f27-web.cluster.local`` NXDOMAIN (the seed's list of tried names);
    * headless ``f27-headless`` → exactly the IPs of the Service's ready pods (no ClusterIP);
    * ExternalName ``f27-db`` → a CNAME to ``my.database.example.com`` (and no A record of its own);
    * ndots is the resolver's business (the seed's "musl vs libc"): busybox 1.35's own resolver asks a
      dotted name (``f27-web.default``) only as is — no answer; Go's resolver (agnhost ``/dial`` in the
      client pod) applies ``ndots:5``, so ``f27-web`` and ``f27-web.default`` (fewer than 5 dots) are tried
      under the search list first and resolve: all 10 HTTP requests of each are answered by the Service's
      pods; with a trailing dot (the seed: "adding a dot at the end makes any name an FQDN and bypasses the
      search directive") ``f27-web.`` is not resolved (``/dial`` answers 400);
    * the Service behind the name, from the client pod: 200 connections split over both pods as traced on
      the client's node (chi-square at 1e-4), each pod saw the client pod's own IP (no masquerade).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(agnhost_docs("27-dns.yaml", tag))
    pod_ips = k8s_api.wait_endpoints("svc/f27-web", count=2, timeout=180)
    k8s_api.wait_endpoints("svc/f27-headless", count=2, timeout=60)
    k8s_api.wait_ready("pod/f27-client", timeout=180)
    cluster_ip = k8s_api.cluster_ip("f27-web")
    dns_ip = k8s_api.cluster_ip("kube-dns", namespace="kube-system")
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in k8s_api.list("pod", {"app": "f27-web"})}
    assert sorted(pods.values()) == sorted(pod_ips), (pods, pod_ips)
    client = pod_exec(k8s_cluster, "f27-client")

    servers, search, options = parse_resolv_conf(client.run(["/bin/busybox", "cat", "/etc/resolv.conf"]).text)
    assert servers == [dns_ip], servers
    assert search[:3] == [ZONE, "svc.cluster.local", "cluster.local"], search
    assert options.get("ndots") == "5", options

    full = nslookup(client, f"f27-web.{ZONE}")
    assert (full.server or "").split(":")[0].split("#")[0] == dns_ip, full.text
    assert full.addresses == {f"f27-web.{ZONE}": [cluster_ip]}, full.text
    assert not full.not_found, full.text

    # busybox's resolver: a dotless name is asked under every search domain (the seed's list), the first
    # answers with the full name; the other two are NXDOMAIN
    short = nslookup(client, "f27-web")
    print(f"\n[f27] nslookup f27-web from f27-client:\n{short.text.strip()}")
    assert short.addresses == {f"f27-web.{ZONE}": [cluster_ip]}, short.text
    assert set(short.not_found) == {f"f27-web.{d}" for d in search[1:]}, short.text
    # ... but a dotted name is asked only as is: busybox 1.35 ignores ndots (the seed's "musl vs libc":
    # the resolver, not resolv.conf alone, decides)
    dotted = nslookup(client, "f27-web.default")
    assert not dotted.addresses, dotted.text

    headless = nslookup(client, "f27-headless")
    assert list(headless.addresses) == [f"f27-headless.{ZONE}"], headless.text
    assert sorted(headless.all_addresses()) == sorted(pod_ips), headless.text
    assert cluster_ip not in headless.all_addresses()

    cname = nslookup(client, f"f27-db.{ZONE}", type="cname")
    assert cname.cnames == {f"f27-db.{ZONE}": "my.database.example.com"}, cname.text
    assert not cname.addresses, cname.text

    # Go's resolver (agnhost /dial resolves the host, then makes 10 HTTP requests to it) applies ndots:5:
    # names with fewer than 5 dots are tried under the search list first, so both resolve to the Service
    for host in ("f27-web", "f27-web.default"):
        dial = f"http://127.0.0.1:8080/dial?request=hostname&protocol=http&host={host}&port=80&tries=10"
        out = json.loads(client.run(["/bin/busybox", "wget", "-q", "-O-", dial], timeout=60).text)
        assert not out.get("errors"), (host, out)
        assert len(out["responses"]) == 10, (host, out)
        assert set(out["responses"]) <= set(pods), (host, out, pods)
    # a trailing dot makes the name absolute: no search list, so the bare "f27-web." does not resolve
    dial = "http://127.0.0.1:8080/dial?request=hostname&protocol=http&host=f27-web.&port=80&tries=1"
    res = client.run(["/bin/busybox", "wget", "-q", "-O-", dial], timeout=90, check=False)
    assert res.returncode != 0, res.text
    assert "400" in res.text + res.stderr.decode(errors="replace"), (res.text, res.stderr)

    # the Service behind the name, from the pod: split as traced on the pod's node, no masquerade
    wait_proxy_endpoints(k8s_cluster, "default/f27-web", 2)
    snap = cluster_state.snapshot("dns")
    client_pod = k8s_api.get("pod/f27-client")
    observed = probe(
        k8s_cluster, "default/f27-web:80", source="pod/default/f27-client", count=N, kubectl=kubectl()
    )
    split = assert_traffic_matches_trace(snap, observed, node=client_pod["spec"]["nodeName"])
    assert observed.clients_by_backend() == {p: {client_pod["status"]["podIP"]} for p in pods}
    print(f"[f27] from pod f27-client: {observed.rate:.1f} connections/s; " + "; ".join(split.table()))
