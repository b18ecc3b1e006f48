"""What the liveness check adds to every ``local`` snapshot (needs root and the binaries).

    python bench/bench_liveness.py [--nodes 2] [--runs 2000]

Creates a control plane + ``--nodes`` workers, then prints the median of ``cluster.check_alive()`` (one
``/proc/<pid>/stat`` read per recorded process) and of a whole ``cluster.snapshot()``, and their ratio.
Goal (issue 14): the check stays well under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_seconds

import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.local.provider import LocalProvider


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    prov = LocalProvider(progress=lambda _line: None)
    name = f"blv{os.getpid() % 100000}"
    cluster = prov.create(ClusterSpec(name=name, nodes=args.nodes))
    try:
        check = cluster.check_alive
        assert check is not None
        alive = median_seconds(check, args.runs)
        snap = median_seconds(lambda: cluster.snapshot("bench"), 5)
        st = local_state.load_state(name)
        print(f"nodes: 1+{args.nodes}, processes checked: {len(st.processes) if st else '?'}")
        print(f"check_alive median: {alive * 1e3:.3f} ms over {args.runs} runs (goal: well under 10 ms)")
        print(f"snapshot median   : {snap * 1e3:.1f} ms over 5 runs; check/snapshot = {alive / snap:.2%}")
    finally:
        prov.delete(name)


if __name__ == "__main__":
    main()
