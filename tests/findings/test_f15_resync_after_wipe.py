"""Finding 15: kube-proxy puts its rules back after they are wiped with ``iptables-restore``."""

from __future__ import annotations

import re

import pytest

from pytest_k8sstate.parse.iptables import parse_iptables_save

from .helpers import iptables_of, manifest, wait_proxy_endpoints, wait_until

EMPTY_TABLES = b"*nat\nCOMMIT\n*filter\nCOMMIT\n*mangle\nCOMMIT\n"
RESYNC_TIMEOUT = 90.0  # kube-proxy checks its canary chain once per --iptables-sync-period (default 30s)


def kube_rules(ruleset) -> set[tuple[str, str, str]]:
    """kube-proxy's rules: those in KUBE-* chains and the jumps into KUBE-* chains."""
    out: set[tuple[str, str, str]] = set()
    for tname, table in ruleset.tables.items():
        for cname, chain in table.chains.items():
            for rule in chain.rules:
                if cname.startswith("KUBE-") or (rule.target or "").startswith("KUBE-"):
                    out.add((tname, cname, rule.spec))
    return out


def others(save: str) -> tuple[bytes, set[str]]:
    """What is not kube-proxy's (nor the kubelet's) in an ``iptables-save`` of the wiped tables: an
    ``iptables-restore --noflush`` input that puts it back (user chains declared, rules appended), and its
    lines. On kind that is Docker's embedded-DNS NAT (``DOCKER_OUTPUT``/``DOCKER_POSTROUTING``): without it
    every new process in the node fails to resolve the control plane's name (a restarted kube-proxy never
    syncs)."""
    out: list[str] = []
    lines: set[str] = set()
    wiped = False
    for ln in save.splitlines():
        if ln.startswith("*"):
            wiped = ln[1:] in ("nat", "filter", "mangle")
            if wiped:
                out.append(ln)
        elif not wiped:
            continue
        elif ln.startswith(":"):
            name, policy = ln[1:].split()[:2]
            if policy == "-" and not name.startswith("KUBE-"):  # a user chain
                out.append(f":{name} - [0:0]")
                lines.add(out[-1])
        elif ln.startswith("-A "):
            if ln.split()[1].startswith("KUBE-") or re.search(r" (-j|--jump|-g|--goto) KUBE-", ln):
                continue
            out.append(ln)
            lines.add(ln)
        elif ln == "COMMIT":
            out.append(ln)
    return ("\n".join(out) + "\n").encode(), lines


def kube_chains(ruleset) -> set[tuple[str, str]]:
    return {(t, c) for t, table in ruleset.tables.items() for c in table.chains if c.startswith("KUBE-")}


@pytest.mark.k8sstate_finding(15, "kube-proxy restores its rules after an iptables-restore of empty tables")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_15_kube_proxy_restores_wiped_rules(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'iptables-restore from a file': "create the file /tmp/iptables.cleanup with
    ``*nat ... COMMIT *filter COMMIT *mangle COMMIT`` ... and all rules are deleted: ``iptables-restore
    /tmp/iptables.cleanup``. After that kube-proxy restores them again, since kube-proxy periodically does a
    full synchronisation of the rules in its chains."

    Checked on one worker: ``iptables-restore`` of empty nat/filter/mangle tables inside the node really
    removes every KUBE-* chain; kube-proxy then re-creates them; the diff from the snapshot before the wipe
    to the one after the resync shows no KUBE-* chain and no kube-proxy rule missing on that node, and the
    other nodes were untouched.

    Real cluster vs article: the article's restore file kept docker's POSTROUTING rule; here the tables are
    emptied completely, and what was not kube-proxy's (on kind: Docker's embedded-DNS NAT) is put back
    afterwards, even when the test fails — the node could not resolve names otherwise. kube-proxy notices
    through its ``KUBE-PROXY-CANARY`` chains, which it checks once per ``--iptables-sync-period``.
    """
    k8s_api.apply(manifest("15-resync.yaml"))
    k8s_api.wait_endpoints("svc/f15-web", count=1)
    wait_proxy_endpoints(k8s_cluster, "default/f15-web", 1)
    node = k8s_cluster.workers[0]
    before_wipe = cluster_state.snapshot("before-wipe")
    expected_rules = kube_rules(iptables_of(before_wipe, node.name))
    expected_chains = kube_chains(iptables_of(before_wipe, node.name))
    assert any(c.startswith("KUBE-SVC-") for _, c in expected_chains)

    keep, kept = others(node.exec.run(["iptables-save"]).text)
    node.exec.run(["iptables-restore"], input=EMPTY_TABLES)
    try:
        wiped = node.exec.run(["iptables-save"]).text
        assert ":KUBE-" not in wiped, "iptables-restore of empty tables left KUBE-* chains behind"

        def restored() -> bool:
            now = parse_iptables_save(
                node.exec.run(["iptables-save"]).text, source=f"iptables-save on {node.name}"
            )
            return expected_rules <= kube_rules(now) and expected_chains <= kube_chains(now)

        wait_until(
            f"kube-proxy on {node.name} to restore its rules", restored, timeout=RESYNC_TIMEOUT, interval=0.5
        )
    finally:  # put back what was not kube-proxy's (kube-proxy and the kubelet re-create theirs)
        node.exec.run(["iptables-restore", "--noflush"], input=keep)
    assert others(node.exec.run(["iptables-save"]).text)[1] == kept, (
        "the node's other rules did not come back"
    )
    diff = cluster_state.diff(since="before-wipe")

    nd = diff.nodes[node.name]
    missing_rules = [r for r in nd.rules_removed if r[1].startswith("KUBE-") or " -j KUBE-" in f" {r[2]}"]
    missing_chains = [c for c in nd.chains_removed if c[1].startswith("KUBE-")]
    assert missing_rules == []
    assert missing_chains == []
    for other in k8s_cluster.nodes:
        if other.name != node.name:
            assert not diff.nodes[other.name].netfilter_changed, other.name
