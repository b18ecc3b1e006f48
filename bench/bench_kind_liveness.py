#!/usr/bin/env python3
"""What the kind liveness check adds to every snapshot (needs the project's Docker engine and node image).

    DOCKER_HOST=... K8SSTATE_KIND_IMAGE=... python bench/bench_kind_liveness.py [--nodes 1] [--runs 7]

Creates a kind cluster (a control plane + ``--nodes`` workers), prints the median of ``cluster.check_alive()``
(one ``docker inspect`` for the node containers, then one ``sh`` per node, all nodes at once: the kubelet,
kube-proxy and the CNI agent), of its in-node part alone, and of a whole ``cluster.snapshot()``, and the
ratio; the cluster is deleted at the end (also on failure or Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_seconds

from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.kind import liveness
from pytest_k8sstate.providers.kind.provider import KindProvider, cni_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=1, help="workers besides the control plane")
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    prov = KindProvider(progress=lambda _line: None)
    name = f"benchlive{os.getpid() % 100000}"
    try:
        c = prov.create(ClusterSpec(name=name, nodes=a.nodes, proxy_mode="iptables"))
        nodes = [(n.name, n.exec) for n in c.nodes]
        comps = liveness.expected_components(c.proxy_mode, cni_name(c.details.get("default_cni")))
        assert c.check_alive is not None
        whole = median_seconds(c.check_alive, a.runs)
        inside = median_seconds(lambda: liveness.check_components(name, nodes, comps), a.runs)
        snap = median_seconds(c.snapshot, max(1, a.runs // 2))
        print(f"{len(nodes)} nodes, components {', '.join(x.name for x in comps)}")
        print(f"check_alive          median {whole * 1000:7.0f} ms (in-node part {inside * 1000:.0f} ms)")
        print(f"snapshot (with it)   median {snap * 1000:7.0f} ms   ratio {whole / snap:.2f}")
    finally:
        prov.delete(name)


if __name__ == "__main__":
    main()
