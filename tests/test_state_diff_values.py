"""Diffs with values: ``spec.replicas: 2 → 3`` for modified etcd objects, kube-proxy's rule changes
summarised per Service port, and the remaining rule changes paired."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from diff_fixtures import K_BIG, K_DEPLOY, snapshots

from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.state import StateDiff
from pytest_k8sstate.state.kubeproxy import iptables_services
from pytest_k8sstate.state.nodediff import NodeDiff, diff_nodes
from pytest_k8sstate.state.render import node_summary_lines
from pytest_k8sstate.state.values import ABSENT, MAX_VALUE_JSON, FieldChange, field_changes, format_change
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset

NFT_137 = Path(__file__).parent / "data" / "kube-proxy-1.37-nftables.nft"


def test_field_changes_carry_old_and_new_values() -> None:
    before = {
        "metadata": {"labels": {"app": "web", "tier": "x"}, "managedFields": [{"time": "1"}]},
        "spec": {"replicas": 2, "paused": False, "ports": [{"port": 80}]},
    }
    after = {
        "metadata": {"labels": {"app": "web", "team": "a"}, "managedFields": [{"time": "2"}, {"time": "3"}]},
        "spec": {"replicas": 3, "paused": True, "ports": [{"port": 81}], "selector": {"app": "web"}},
    }
    got = {c.path: c for c in field_changes(before, after)}
    assert list(got) == sorted(got)
    assert (got["spec.replicas"].before, got["spec.replicas"].after) == (2, 3)
    assert (got["spec.paused"].before, got["spec.paused"].after) == (False, True)
    assert got["metadata.labels.tier"].after is ABSENT
    assert got["metadata.labels.team"].before is ABSENT
    assert got["spec.selector"].after == {"app": "web"}
    assert got["metadata.managedFields"].count == 2  # collapsed, no values
    lines = [format_change(c) for c in got.values()]
    assert "spec.replicas: 2 → 3" in lines
    assert "spec.paused: false → true" in lines
    assert "spec.ports[0].port: 80 → 81" in lines
    assert 'metadata.labels.tier: "x" → (none)' in lines
    assert 'metadata.labels.team: (none) → "a"' in lines
    assert 'spec.selector: (none) → {"app": "web"}' in lines
    assert "metadata.managedFields: changed (2 changes)" in lines
    assert field_changes(before, before) == []


def test_big_values_are_bounded_and_show_what_differs() -> None:
    text = "\n".join(f"key{i}=value{i}" for i in range(5000))
    changed = text.replace("key2500=value2500", "key2500=NEW")
    (c,) = field_changes({"data": {"f": text}}, {"data": {"f": changed}})
    assert c.truncated
    line = format_change(c)
    assert len(line) < 250
    assert "value2500" in line
    assert "NEW" in line
    assert "(line 2501)" in line
    big = {"items": list(range(10_000))}
    (c2,) = field_changes({"spec": {"x": 1}}, {"spec": {"x": big}})
    assert c2.truncated
    assert isinstance(c2.after, str)
    assert len(c2.after) < MAX_VALUE_JSON
    assert len(format_change(c2)) < 250
    assert FieldChange.from_json(c2.to_json()) == c2


def test_modified_keys_in_the_summary_show_values_and_round_trip() -> None:
    before, after = snapshots()
    d = before.diff(after)
    dep = next(c for c in d.etcd.modified if c.key == K_DEPLOY)
    assert dep.changed_fields == ["metadata.generation", "spec.replicas"]  # the old API still holds
    rep = dep.change_of("spec.replicas")
    assert rep is not None
    assert (rep.before, rep.after) == (2, 3)
    text = d.summary()
    assert "      spec.replicas: 2 → 3" in text.splitlines()
    big = next(line for line in text.splitlines() if line.strip().startswith("data.config:"))
    assert "value CHANGED" in big
    assert len(big) < 200
    again = StateDiff.from_json(d.to_json())
    assert again.summary() == text
    assert (
        next(c for c in again.etcd.modified if c.key == K_BIG).values
        == next(c for c in d.etcd.modified if c.key == K_BIG).values
    )


def test_scaled_service_is_one_line_per_service_not_unpaired_rules() -> None:
    before, after = snapshots()
    nd = before.diff(after).nodes["kind-worker"]
    assert nd.rules_removed
    assert nd.chains_removed
    (sc,) = nd.services
    assert sc.service == "default/web:http"
    assert sc.backend == "iptables"
    assert sc.endpoints_removed == ["10.244.1.4:8080"]
    assert sc.endpoints_added == []
    assert sc.vips_before == sc.vips_after == ["10.96.0.20:80/tcp", "nodePort 30080/tcp"]
    assert sc.changes == len(nd.rules_added) + len(nd.rules_removed) + len(nd.chains_removed)
    assert node_summary_lines(nd) == [
        f"service default/web:http: endpoints 3 → 2, removed 10.244.1.4:8080 (iptables, {sc.changes} changes)"
    ]
    raw = node_summary_lines(nd, raw=True)
    assert raw[0] == node_summary_lines(nd)[0]
    assert any(line.startswith("- rule nat -A KUBE-SEP-") for line in raw)
    assert NodeDiff.from_json(nd.to_json()) == nd


def test_service_added_removed_and_unnamed_port() -> None:
    rules = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAA - [0:0]
:KUBE-SEP-B1 - [0:0]
-A KUBE-SERVICES -d fd00:10:96::5/128 -p tcp -m comment --comment "ns/v6 cluster IP" -m tcp --dport 443 \
-j KUBE-SVC-AAA
-A KUBE-SVC-AAA -m comment --comment "ns/v6 -> [fd00:10:244::7]:8443" -j KUBE-SEP-B1
-A KUBE-SEP-B1 -p tcp -m comment --comment ns/v6 -m tcp -j DNAT --to-destination [fd00:10:244::7]:8443
COMMIT
"""
    empty = "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"
    with_svc = NodeState("n", iptables=parse_iptables_save(rules))
    without = NodeState("n", iptables=parse_iptables_save(empty))
    (added,) = diff_nodes(without, with_svc).services
    assert added.service == "ns/v6"
    assert added.change == "added"
    assert added.text() == (
        "ns/v6: added [fd00:10:96::5]:443/tcp; endpoints 0 → 1, added [fd00:10:244::7]:8443"
        " (iptables, 5 changes)"
    )
    (removed,) = diff_nodes(with_svc, without).services
    assert removed.change == "removed"
    assert removed.endpoints_removed == ["[fd00:10:244::7]:8443"]
    assert iptables_services({("nat", "KUBE-SEP-B1"): ["-j DNAT --to-destination 1.2.3.4:80"]}) == {}


def test_other_rule_changes_are_paired_word_by_word() -> None:
    def node(src: str, extra: str = "") -> NodeState:
        text = f"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -s {src} -j ACCEPT\n{extra}COMMIT\n"
        return NodeState("n", iptables=parse_iptables_save(text))

    nd = diff_nodes(node("10.0.0.0/8"), node("10.1.0.0/16", "-A FORWARD -i cni0 -j DROP\n"))
    assert node_summary_lines(nd) == [
        "~ rule filter -A FORWARD -s {10.0.0.0/8 → 10.1.0.0/16} -j ACCEPT",
        "+ rule filter -A FORWARD -i cni0 -j DROP",
    ]


@pytest.fixture(scope="module")
def load_nft() -> object:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")

    def load(text: str) -> NftRuleset:
        with netns.temporary("dv") as ns:
            ns.run(["nft", "-f", "-"], input=text.encode(), timeout=60)
            return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text)

    return load


def test_nft_kube_proxy_137_endpoint_removed_from_the_numgen_map(load_nft: object) -> None:
    load = load_nft  # type: ignore[assignment]
    dump = NFT_137.read_text()
    old = "mod 3 map { 0 : 10.244.1.2 . 8080, 1 : 10.244.1.3 . 8080, 2 : 10.244.1.4 . 8080 }"
    assert old in dump
    scaled = dump.replace(old, "mod 2 map { 0 : 10.244.1.2 . 8080, 1 : 10.244.1.3 . 8080 }")
    nd = diff_nodes(NodeState("n", nft=load(dump)), NodeState("n", nft=load(scaled)))  # type: ignore[operator]
    assert node_summary_lines(nd) == [
        "service default/web:http: endpoints 3 → 2, removed 10.244.1.4:8080 (ip kube-proxy, 2 changes)"
    ]
    assert nd.services[0].vips_after == ["10.108.197.216:80/tcp", "nodePort 30695/tcp"]


def test_nft_endpoint_chains_and_maps_summarised(load_nft: object) -> None:
    load = load_nft  # type: ignore[assignment]
    before = load(render_ruleset(generate_services(2, 3)))  # type: ignore[operator]
    after = load(render_ruleset(generate_services(3, 3)))  # type: ignore[operator]
    nd = diff_nodes(NodeState("n", nft=before), NodeState("n", nft=after))
    (sc,) = nd.services
    assert sc.change == "added"
    assert sc.service == "ns2/svc2:p80"
    assert len(sc.endpoints_after) == 3
    assert "nodePort 30002/tcp" in sc.vips_after
    assert node_summary_lines(nd) == [f"service {sc.text()}"]  # map elements and chains all folded in


def test_secret_values_are_never_in_a_diff() -> None:
    from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState
    from pytest_k8sstate.state import Snapshot

    key = "/registry/secrets/default/db"

    def state(password: str, rev: int) -> EtcdState:
        obj = {"kind": "Secret", "metadata": {"name": "db", "namespace": "default"}, "data": {"pw": password}}
        value = json.dumps(obj).encode()
        return EtcdState(rev, "/registry", {key: EtcdEntry(key, rev, rev, 1, len(value), value=value)})

    before = Snapshot("b", 1.0, etcd=state("czNjcmV0MQ==", 5))
    after = Snapshot("a", 2.0, etcd=state("czNjcmV0Mg==", 6))
    # the entries keep the value only with include_secrets; decode them as such a capture would
    for snap in (before, after):
        assert snap.etcd is not None
        e = snap.etcd.entries[key]
        assert e.decoded.fields is not None, "JSON values decode; capture drops them unless include_secrets"
    d = before.diff(after)
    (mod,) = d.etcd.modified
    assert mod.changed_fields == ["data.pw"]
    assert mod.values == [FieldChange("data.pw", "(redacted)", "(redacted)", truncated=True)]
    text = d.summary() + json.dumps(d.to_json())
    assert "czNjcmV0" not in text
    assert "data.pw: (redacted) → (redacted)" in text


def _lb_rules(endpoints: list[str]) -> str:
    """A LoadBalancer Service with externalTrafficPolicy Local, written the way kube-proxy ≥ 1.28 does
    (our own text: KUBE-EXT/FW/SVL chains whose comments do not start with the Service's name)."""
    lines = [
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
        ":KUBE-EXT-LB - [0:0]",
        ":KUBE-FW-LB - [0:0]",
        ":KUBE-SVC-LB - [0:0]",
        ":KUBE-SVL-LB - [0:0]",
        *(f":KUBE-SEP-E{i} - [0:0]" for i in range(len(endpoints))),
        '-A KUBE-SERVICES -m comment --comment "shop/lb:web cluster IP" -m tcp -p tcp -d 172.30.1.5 '
        "--dport 80 -j KUBE-SVC-LB",
        '-A KUBE-SERVICES -m comment --comment "shop/lb:web loadbalancer IP" -m tcp -p tcp -d 198.51.100.7 '
        "--dport 80 -j KUBE-FW-LB",
        "-A KUBE-NODEPORTS -m comment --comment shop/lb:web -m tcp -p tcp --dport 31080 -j KUBE-EXT-LB",
        '-A KUBE-FW-LB -m comment --comment "shop/lb:web loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-LB',
        '-A KUBE-FW-LB -m comment --comment "other traffic to hop/lb:web will be dropped by '
        'KUBE-PROXY-FIREWALL"',
        '-A KUBE-EXT-LB -m comment --comment "pod traffic for shop/lb:web external destinations" '
        "-s 10.0.0.0/8 -j KUBE-SVC-LB",
        '-A KUBE-EXT-LB -m comment --comment "masquerade LOCAL traffic for shop/lb:web external '
        'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        "-A KUBE-EXT-LB -j KUBE-SVL-LB",
    ]
    for i, ep in enumerate(endpoints):
        lines.append(f'-A KUBE-SVC-LB -m comment --comment "shop/lb:web -> {ep}" -j KUBE-SEP-E{i}')
        lines.append(f'-A KUBE-SVL-LB -m comment --comment "shop/lb:web -> {ep}" -j KUBE-SEP-E{i}')
        lines.append(
            f"-A KUBE-SEP-E{i} -m comment --comment shop/lb:web -m tcp -p tcp -j DNAT --to-destination {ep}"
        )
    if not endpoints:
        lines.append(
            '-A KUBE-SVL-LB -m comment --comment "shop/lb:web has no local endpoints" -j KUBE-MARK-DROP'
        )
    return "\n".join([*lines, "COMMIT", ""])


def test_load_balancer_with_local_policy_is_one_service_and_its_ext_chain_is_folded_in() -> None:
    before = NodeState("n", iptables=parse_iptables_save(_lb_rules(["10.180.0.1:80", "10.180.0.2:80"])))
    after = NodeState("n", iptables=parse_iptables_save(_lb_rules([])))
    nd = diff_nodes(before, after)
    (sc,) = nd.services  # no "hop/lb:web" from the comment that is not a Service's name
    assert sc.service == "shop/lb:web"
    assert sc.vips_after == ["172.30.1.5:80/tcp", "198.51.100.7:80/tcp", "nodePort 31080/tcp"]
    assert sc.endpoints_removed == ["10.180.0.1:80", "10.180.0.2:80"]
    assert set(sc.chains) >= {"KUBE-SVC-LB", "KUBE-SVL-LB", "KUBE-EXT-LB", "KUBE-FW-LB", "KUBE-SEP-E0"}
    assert node_summary_lines(nd) == [f"service {sc.text()}"]
    assert sc.text().startswith(
        "shop/lb:web: endpoints 2 → 0, removed 10.180.0.1:80, 10.180.0.2:80 (iptables"
    )
