"""Warm install of the pinned binaries (every one a cache hit): median of N runs.

    python bench/bench_binaries.py [--runs 7] [--components kube-apiserver,...]

Needs a populated cache (``k8sstate binaries install``).
Measures ``ensure_binaries()`` in-process and the whole ``binaries install --no-build`` command in a fresh
interpreter (what a user waits for).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest_k8sstate.binaries as binaries  # noqa: E402
from pytest_k8sstate.errors import BinaryError  # noqa: E402


def _summary(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{name}: median {statistics.median(ms):.1f} ms  min {min(ms):.1f}  max {max(ms):.1f}  (n={len(ms)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--components", default=",".join(binaries.DEFAULT_BINARIES))
    args = parser.parse_args()
    runs = max(5, args.runs)
    comps = [c for c in args.components.split(",") if c]

    try:
        first = binaries.ensure_binaries(comps, progress=lambda _: None, download=False, build=False)
    except BinaryError as exc:
        print(f"cache not populated, run `k8sstate binaries install` first:\n{exc}", file=sys.stderr)
        return 1
    print(f"cache: {binaries.cache_dir()}  versions: {first.versions.to_json()}")

    inproc: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = binaries.ensure_binaries(comps, progress=lambda _: None, download=False, build=False)
        inproc.append(time.perf_counter() - t0)
        assert set(res.sources.values()) == {"cache"}

    cli: list[float] = []
    argv = [
        sys.executable,
        "-m",
        "pytest_k8sstate.cli",
        "binaries",
        "install",
        "--no-build",
        "--components",
        ",".join(comps),
    ]
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=120, check=True)  # noqa: S603 - argv list
        cli.append(time.perf_counter() - t0)

    print(f"warm install of {len(comps)} binaries ({', '.join(comps)})")
    print(_summary("ensure_binaries() in-process", inproc))
    print(_summary("`binaries install --no-build` command (fresh interpreter)", cli))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
