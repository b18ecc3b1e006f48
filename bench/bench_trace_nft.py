#!/usr/bin/env python3
"""Benchmark: the nftables tracer on a kube-proxy-shaped ruleset (goal: ≤ 5 ms per packet).

    sudo python bench/bench_trace_nft.py [--services 5000 --endpoints 3 --packets 200 --runs 7]

Renders ``--services`` Services (``pytest_k8sstate.testing.nft_gen``, kube-proxy's nftables layout),
loads them with ``nft -f`` into a network namespace of our own, reads them back with ``nft -j`` and
traces one packet to each of the first ``--packets`` ClusterIPs from a pod, from outside (masqueraded)
and, on the IPv6 copy of the same Services (``ip6 kube-proxy``), from an IPv6 pod. Prints the CPU
time per packet (best and median of ``--runs`` passes). Needs root and the nft binary.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset
from pytest_k8sstate.trace import Packet
from pytest_k8sstate.trace.nft import trace_nft

NODE = "192.168.0.2"
NODE6 = "2001:db8::2"


def _v6(addr: str) -> str:
    """10.180.1.2 → fd00:10:180::1:2 (the same Service/endpoint layout, IPv6 addresses)."""
    a, b, c, d = (int(x) for x in addr.split("."))
    return str(ipaddress.IPv6Address(f"fd00:{a}:{b}::{c:x}:{d:x}"))


def _ipv6_text(text: str) -> str:
    out = []
    for line in text.splitlines():
        line = line.replace("ip kube-proxy", "ip6 kube-proxy").replace("ipv4_addr", "ipv6_addr")
        line = (
            line.replace("ip saddr", "ip6 saddr")
            .replace("ip daddr", "ip6 daddr")
            .replace("dnat ip ", "dnat ip6 ")
        )
        words = []
        for w in line.split(" "):
            core = w.rstrip(",;}")
            tail = w[len(core) :]
            host, sep, port = core.partition(":") if core.count(":") == 1 else (core, "", "")
            pfx, slash, ln = host.partition("/")
            try:
                ipaddress.IPv4Address(pfx)
            except ValueError:
                words.append(w)
                continue
            new = _v6(pfx) + (f"/{int(ln) + 96}" if slash else "")
            words.append((f"[{new}]:{port}" if sep else new) + tail)
        out.append(" ".join(words))
    return "\n".join(out).replace(_v6(NODE), NODE6)


def _load(text: str) -> NftRuleset:
    with netns.temporary("benchnft") as ns:
        ns.run(["nft", "-f", "-"], input=text.encode(), timeout=900)
        return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=900).text, source="bench")


def _time(rs: NftRuleset, packets: list[Packet], runs: int) -> tuple[float, float]:
    for p in packets[:5]:
        trace_nft(rs, p)  # warm: base chains and set indexes are built once
    per = []
    for _ in range(runs):
        t0 = time.process_time()
        for p in packets:
            trace_nft(rs, p)
        per.append((time.process_time() - t0) / len(packets))
    return min(per), statistics.median(per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--packets", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    svcs = generate_services(a.services, a.endpoints)
    text = render_ruleset(svcs, nodeport_ips=[NODE])
    rs4 = _load(text)
    rs6 = _load(_ipv6_text(text))
    some = svcs[: a.packets]
    cases = {
        "IPv4 pod → ClusterIP": (rs4, [Packet(s.cluster_ip, s.port, src="10.180.255.9") for s in some]),
        "IPv4 outside → ClusterIP (masq)": (rs4, [Packet(s.cluster_ip, s.port) for s in some]),
        "IPv6 pod → ClusterIP": (
            rs6,
            [Packet(_v6(s.cluster_ip), s.port, src=_v6("10.180.255.9")) for s in some],
        ),
    }
    for name, (rs, pkts) in cases.items():
        res = trace_nft(rs, pkts[0])
        assert len(res.endpoints) == a.endpoints, (name, res.outcomes)
        best, med = _time(rs, pkts, a.runs)
        print(
            f"{name:34} {best * 1000:7.3f} ms/packet best, {med * 1000:7.3f} median ({a.services} Services)"
        )


if __name__ == "__main__":
    main()
