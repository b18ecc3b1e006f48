"""The HTML report's cost next to the diff it draws: one node with kube-proxy's iptables rules for 10,000
Services × 3 endpoints (110k rules), 100 Services scaled 3 → 2 (the report draws 40 graphs and lists 60).
Medians of the same run: ``before.diff(after)`` and ``render_report`` given that diff (the tracing, SVG and
page), and their ratio.

    PYTHONPATH=. python bench/bench_report.py [--runs 5]
"""

from __future__ import annotations

import argparse
import dataclasses

from _timing import median_seconds

from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.report import render_report
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services

ADDR = {"family": "inet", "local": "172.18.0.2", "ifname": "eth0", "prefixlen": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    svcs = make_services(10_000, 3)
    after = [
        dataclasses.replace(s, endpoints=s.endpoints[:2]) if i % 100 == 0 else s for i, s in enumerate(svcs)
    ]
    b = Snapshot(
        "before",
        1.0,
        nodes={"n": NodeState("n", iptables=parse_iptables_save(kube_proxy_iptables(svcs)), addrs=[ADDR])},
    )
    a = Snapshot(
        "after",
        2.0,
        nodes={"n": NodeState("n", iptables=parse_iptables_save(kube_proxy_iptables(after)), addrs=[ADDR])},
    )
    diff = b.diff(a)  # materialise the lazily parsed chains once
    page = render_report(b, a, diff=diff)
    t_diff = median_seconds(lambda: b.diff(a), args.runs)
    t_report = median_seconds(lambda: render_report(b, a, diff=diff), args.runs)
    changed = sum(len(nd.services) for nd in diff.nodes.values())
    print(f"{changed} changed Services, page {len(page) // 1024} KiB")
    print(
        f"diff: median {t_diff * 1000:.0f} ms; report (given the diff): median {t_report * 1000:.0f} ms; "
        f"report/diff {t_report / t_diff:.2f}"
    )


if __name__ == "__main__":
    main()
