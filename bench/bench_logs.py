"""What per-step logs cost (needs root and the binaries for the cluster part).

    python bench/bench_logs.py [--files 30] [--lines 1000] [--runs 10] [--cluster]

Prints the median of ``capture_cursors`` over ``--files`` log files + one unit (through ``LocalExec``), of
``read_between`` after ``--lines`` new lines per file and, with ``--cluster``, of a ``local`` cluster's
``snapshot()`` with and without ``logs=True`` (a control plane + 2 workers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_seconds

from pytest_k8sstate.node.exec import LocalExec
from pytest_k8sstate.node.logs import LogSource, capture_cursors, read_between


def files(n: int, lines: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            os.makedirs(f"{d}/c{i}")
            Path(f"{d}/c{i}/0.log").write_text("x" * 100 + "\n")
        src = [LogSource("{dir}", path=f"{d}/*/*.log"), LogSource("u", unit="k8sstate-node-routes.service")]
        ex = LocalExec("n")
        before = capture_cursors(ex, src)
        t = median_seconds(lambda: capture_cursors(ex, src), runs)
        print(f"capture_cursors, {n} files + 1 unit: {1000 * t:.1f} ms")
        for i in range(n):
            with open(f"{d}/c{i}/0.log", "a") as fh:
                fh.writelines(f"I1203 line {j} of component {i} with some text\n" for j in range(lines))
        after = capture_cursors(ex, src)
        t = median_seconds(lambda: read_between(ex, before, after), runs)
        print(f"read_between, {n} x {lines} new lines: {1000 * t:.1f} ms")


def cluster(runs: int) -> None:
    from pytest_k8sstate.providers.base import ClusterSpec
    from pytest_k8sstate.providers.local.provider import LocalProvider

    prov = LocalProvider()
    name = f"bl{os.getpid() % 100000}"
    c = prov.create(ClusterSpec(name=name, nodes=2))
    try:
        for logs in (False, True, False, True):
            t = median_seconds(partial(c.snapshot, "s", logs=logs), runs)
            print(f"local snapshot, 3 nodes, logs={logs}: {1000 * t:.0f} ms")
    finally:
        prov.delete(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cluster", action="store_true")
    a = ap.parse_args()
    files(a.files, a.lines, a.runs)
    if a.cluster:
        cluster(a.runs)


if __name__ == "__main__":
    main()
