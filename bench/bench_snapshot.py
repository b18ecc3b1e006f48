"""Benchmark (issue 15 goal 4): a whole ``cluster.snapshot()`` vs the bare commands it stands for.

    python bench/bench_snapshot.py [--provider local|kind] [--nodes 2] [--runs 15] [--cluster NAME]

Creates a control plane + ``--nodes`` workers (``local`` needs root; ``kind`` the project's Docker
engine and ``K8SSTATE_KIND_IMAGE``), then interleaves, ``--runs`` times (medians):

* ``bare``: one plain gRPC ``Range`` of ``/registry`` on a warm channel + one ``iptables-save -c`` per
  node (run concurrently): the least any tool reading the same state pays;
* ``snapshot``: ``cluster.snapshot()`` with nothing changed since the previous one (local nodes reuse
  the parts whose netlink fingerprint did not change — :mod:`pytest_k8sstate.node.reuse`);
* ``generation``: the same with ``K8SSTATE_NODE_REUSE=generation`` (rulesets fingerprinted by the
  nf_tables generation alone: traffic changing counters does not force a new read);
* ``after change``: a snapshot right after every node's nf_tables ruleset changed (a table added and
  removed in each node, untimed): iptables, ip6tables and nft are read again, as after a test that
  changed Services;
* ``full read``: ``K8SSTATE_NODE_REUSE=0``: every part of every node read again;
* ``no session`` (kind/minikube only): ``K8SSTATE_NODE_REUSE=0`` and ``K8SSTATE_NODE_SESSION=0``: one
  ``docker exec`` per node for the capture and one for the liveness probe, as before
  :mod:`pytest_k8sstate.node.session`.

Goal: local ≤ 50 ms, kind ≤ 150 ms (ratio to the goal printed; ``< 1`` meets it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_k8sstate.node.exec import NodeExec
from pytest_k8sstate.providers.base import Cluster, ClusterSpec
from pytest_k8sstate.providers.registry import get_provider

GOALS = {"local": 0.050, "kind": 0.150}


def _bare(cluster: Cluster, pool: ThreadPoolExecutor) -> None:
    """A plain Range on a warm channel + one iptables-save per node, concurrently."""
    from pytest_k8sstate.etcd.capture import _shared_client
    from pytest_k8sstate.etcd.target import prefix_range_end

    assert cluster.etcd is not None
    client = _shared_client(cluster.etcd, 30.0)
    fs = [pool.submit(n.exec.run, ["iptables-save", "-c"], timeout=30) for n in cluster.nodes]
    resp = client.range(b"/registry", prefix_range_end(b"/registry"))
    assert resp.kvs
    for f in fs:
        assert f.result().stdout


def _touch_rulesets(execs: list[NodeExec]) -> None:
    """A new nf_tables generation in every node (what kube-proxy's sync after a change does)."""
    for ex in execs:
        ex.run(["nft", "add table inet k8ss-bench-touch"], timeout=10)
        ex.run(["nft", "delete table inet k8ss-bench-touch"], timeout=10)


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", default="local", choices=sorted(GOALS))
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--cluster", help="use this existing cluster (kept) instead of creating one")
    args = ap.parse_args()
    if args.provider == "local" and os.geteuid() != 0:
        print("the local provider needs root", file=sys.stderr)
        return 2
    prov = get_provider(args.provider, progress=lambda _line: None)
    name = f"bsn{os.getpid() % 100000}"
    res: dict[str, list[float]] = {
        "bare": [],
        "snapshot": [],
        "generation": [],
        "after change": [],
        "full read": [],
        "no session": [],
    }
    t0 = time.monotonic()
    if args.cluster:
        cluster = prov.get(args.cluster)
        print(f"{args.provider} cluster {args.cluster}: {len(cluster.nodes)} nodes", flush=True)
    else:
        cluster = prov.create(ClusterSpec(name=name, nodes=args.nodes))
        print(f"{args.provider} cluster 1+{args.nodes} created in {time.monotonic() - t0:.1f} s", flush=True)
    execs = [n.exec for n in cluster.nodes]
    try:
        with ThreadPoolExecutor(max_workers=len(execs)) as pool:
            cluster.snapshot("warm-up")
            _bare(cluster, pool)
            for _ in range(args.runs):
                res["bare"].append(_timed(lambda: _bare(cluster, pool)))
                res["snapshot"].append(_timed(lambda: cluster.snapshot("bench")))
                os.environ["K8SSTATE_NODE_REUSE"] = "generation"
                try:
                    cluster.snapshot("bench")  # recorded by generation from here
                    res["generation"].append(_timed(lambda: cluster.snapshot("bench")))
                finally:
                    del os.environ["K8SSTATE_NODE_REUSE"]
                _touch_rulesets(execs)
                res["after change"].append(_timed(lambda: cluster.snapshot("bench")))
                os.environ["K8SSTATE_NODE_REUSE"] = "0"
                try:
                    res["full read"].append(_timed(lambda: cluster.snapshot("bench")))
                finally:
                    del os.environ["K8SSTATE_NODE_REUSE"]
                if args.provider != "local":
                    os.environ["K8SSTATE_NODE_REUSE"] = os.environ["K8SSTATE_NODE_SESSION"] = "0"
                    try:
                        res["no session"].append(_timed(lambda: cluster.snapshot("bench")))
                    finally:
                        del os.environ["K8SSTATE_NODE_REUSE"], os.environ["K8SSTATE_NODE_SESSION"]
    finally:
        if not args.cluster:
            prov.delete(name)
    goal = GOALS[args.provider]
    bare = statistics.median(res["bare"])
    print(
        f"\n{args.provider}, 1 control plane + {args.nodes} workers, {args.runs} interleaved runs (medians)"
    )
    for k, v in res.items():
        if not v:
            continue
        med = statistics.median(v)
        extra = "" if k == "bare" else f"  ×bare {med / bare:5.2f}  goal ratio {med / goal:5.2f}"
        print(f"  {k:12s} {med * 1000:7.1f} ms  (min {min(v) * 1000:6.1f}, max {max(v) * 1000:6.1f}){extra}")
    print(f"  goal: snapshot ≤ {goal * 1000:.0f} ms (goal ratio < 1 meets it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
