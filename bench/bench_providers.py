"""local vs kind side by side in one run: create → ready (1 node and 1+2 nodes), snapshot, delete.

    python bench/bench_providers.py [--runs 5] [--providers local,kind]

kind needs a Docker engine (``DOCKER_HOST``) and a node image (``K8SSTATE_KIND_IMAGE``); on restricted
machines see docs/kind-on-restricted-machines.md (``scripts/docker-setup.sh start``). A provider that
cannot run is reported and skipped. Medians over ``--runs`` runs (n is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.registry import get_provider


def _quiet(_: str) -> None:
    pass


def bench(provider_name: str, workers: int, runs: int) -> dict[str, list[float]]:
    prov = get_provider(provider_name, progress=_quiet)
    name = f"bp{os.getpid() % 10000}{provider_name[0]}{workers}"
    res: dict[str, list[float]] = {"create": [], "snapshot": [], "delete": []}
    for _ in range(runs):
        t0 = time.monotonic()
        cluster = prov.create(ClusterSpec(name=name, nodes=workers))
        res["create"].append(time.monotonic() - t0)
        try:
            cluster.snapshot("warm-up")
            t0 = time.monotonic()
            cluster.snapshot("bench")
            res["snapshot"].append(time.monotonic() - t0)
        finally:
            t0 = time.monotonic()
            prov.delete(name)
            res["delete"].append(time.monotonic() - t0)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--providers", default="local,kind")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    head = f"{'provider':<8} {'nodes':<6} {'create':>10} {'snapshot':>10} {'delete':>10}"
    print(f"{head}  (medians, n={args.runs})")
    for provider_name in args.providers.split(","):
        for workers in (0, 2):
            try:
                res = bench(provider_name, workers, args.runs)
            except K8sStateError as exc:
                print(f"{provider_name:<8} skipped: {exc}")
                break
            med = {k: statistics.median(v) for k, v in res.items()}
            snap_ms = med["snapshot"] * 1000
            row = f"{provider_name:<8} {f'1+{workers}':<6} {med['create']:>9.2f}s {snap_ms:>8.0f}ms"
            print(f"{row} {med['delete']:>9.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
