"""CPU time of a node diff of kube-proxy's iptables rules at 10,000 Services × 3 endpoints (110k rules),
one Service scaled 3 → 2 and one removed, with and without the per-Service summary.

    PYTHONPATH=. python bench/bench_diff_services.py
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.state import kubeproxy, nodediff
from pytest_k8sstate.state.render import node_summary_lines
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services


def main() -> None:
    svcs = make_services(10_000, 3)
    after = list(svcs)
    after[5] = dataclasses.replace(svcs[5], endpoints=svcs[5].endpoints[:2])
    del after[7]
    b = NodeState("n", iptables=parse_iptables_save(kube_proxy_iptables(svcs)))
    a = NodeState("n", iptables=parse_iptables_save(kube_proxy_iptables(after)))
    rules = sum(len(c.rules) for t in b.iptables.tables.values() for c in t.chains.values())  # type: ignore[union-attr]
    nodediff.diff_nodes(b, a)  # materialise the lazily parsed chains once

    def cpu(fn: object) -> float:
        ts = []
        for _ in range(5):
            t = time.process_time()
            fn()  # type: ignore[operator]
            ts.append(time.process_time() - t)
        return statistics.median(ts)

    with_summary = cpu(lambda: nodediff.diff_nodes(b, a))
    real = kubeproxy.summarize_services
    nodediff.summarize_services = lambda *a, **k: []  # type: ignore[assignment]
    try:
        without = cpu(lambda: nodediff.diff_nodes(b, a))
    finally:
        nodediff.summarize_services = real
    nd = nodediff.diff_nodes(b, a)
    print(
        f"{rules} rules: diff_nodes {with_summary * 1000:.0f} ms CPU with per-Service summaries, "
        f"{without * 1000:.0f} ms without"
    )
    print("\n".join(node_summary_lines(nd)))


if __name__ == "__main__":
    main()
