"""Cold build of Kubernetes binaries: one ``go build`` per binary vs one ``go build -o DIR pkg1 pkg2 …``.

    python bench/bench_binaries_build.py [--runs 1] [--binaries kube-proxy,kube-scheduler]

Each run starts from an empty, private ``GOCACHE`` (a temporary directory, deleted afterwards — never the
shared one); the module cache may be warm (the bench first makes sure the wrapper module is prepared, which is
what ``k8sstate binaries install`` does before building). "per binary" runs one ``go build`` per binary in
sequence on the same (initially cold) GOCACHE, as the installer did; "one invocation" builds all of them with
one command. The two modes alternate so a change of the machine's load hits both. A cold build of two
binaries takes minutes on 2 cores, so ``--runs 1`` (the default) is a single sample per mode: read the ratio
together with the load averages printed before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_k8sstate.binaries.cache import build_dir, log_path  # noqa: E402
from pytest_k8sstate.binaries.gobuild import (  # noqa: E402
    _prepare_wrapper,
    find_go,
    go_env,
    module_info,
    run_logged,
)
from pytest_k8sstate.binaries.gomod import (  # noqa: E402
    kubernetes_ldflags,
    kubernetes_tools_go,
    kubernetes_wrapper_gomod,
)
from pytest_k8sstate.binaries.versions import KUBERNETES_BINARIES, Versions  # noqa: E402
from pytest_k8sstate.util.files import cache_dir  # noqa: E402


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _build(go: Path, wrapper: Path, names: list[str], out: Path, ldflags: str, one: bool, log: Path) -> float:
    gocache = Path(tempfile.mkdtemp(prefix="k8sstate-bench-gocache-"))
    env = {**go_env(), "GOCACHE": str(gocache)}
    base = [go, "build", "-trimpath", f"-ldflags={ldflags}"]
    pkgs = [f"k8s.io/kubernetes/cmd/{n}" for n in names]
    t0 = time.perf_counter()
    try:
        if one:
            run_logged(
                [*base, "-o", str(out) + os.sep, *pkgs], cwd=wrapper, log_path=log, what="one", env=env
            )
        else:
            for name, pkg in zip(names, pkgs, strict=True):
                run_logged([*base, "-o", out / name, pkg], cwd=wrapper, log_path=log, what=name, env=env)
        seconds = time.perf_counter() - t0
        missing = [n for n in names if not (out / n).is_file()]
        if missing:
            raise SystemExit(f"the build produced no {', '.join(missing)} in {out}; see {log}")
        return seconds
    finally:
        shutil.rmtree(gocache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--binaries", default="kube-proxy,kube-scheduler")
    args = parser.parse_args()
    names = [n for n in args.binaries.split(",") if n]
    unknown = [n for n in names if n not in KUBERNETES_BINARIES]
    if unknown:
        parser.error(f"--binaries: {', '.join(unknown)} not among {', '.join(KUBERNETES_BINARIES)}")
    version = Versions.resolve().kubernetes
    go = find_go()
    cache = cache_dir()
    wrapper = build_dir("kubernetes", version, cache)
    log = log_path("kubernetes-bench", version, cache)
    info = module_info("k8s.io/kubernetes", version, go=go, cache=cache)
    source = f"{info.gomod} (k8s.io/kubernetes@{version} go.mod)"
    gomod = kubernetes_wrapper_gomod(info.gomod.read_text(errors="replace"), version, source)
    _prepare_wrapper(
        wrapper, {"go.mod": gomod, "tools.go": kubernetes_tools_go()}, go=go, log_path=log, what="bench"
    )
    ldflags = kubernetes_ldflags(version)
    print(f"kubernetes {version}: {', '.join(names)}; cold GOCACHE per run; log {log}")
    print(f"cores {os.cpu_count()}  load before {_load()}")
    samples: dict[bool, list[float]] = {False: [], True: []}
    for i in range(max(1, args.runs)):
        for one in (False, True) if i % 2 == 0 else (True, False):
            out = Path(tempfile.mkdtemp(prefix="k8sstate-bench-out-"))
            s = _build(go, wrapper, names, out, ldflags, one, log)
            samples[one].append(s)
            label = "one invocation" if one else "per binary"
            print(f"  run {i + 1} {label}: {s:.1f}s  (load {_load()})", flush=True)
    per = statistics.median(samples[False])
    one_s = statistics.median(samples[True])
    n = len(samples[True])
    print(f"per binary ({len(names)} go builds): median {per:.1f}s (n={n})")
    print(f"one go build -o DIR {' '.join(names)}: median {one_s:.1f}s (n={n})")
    print(f"ratio per-binary / one-invocation: {per / one_s:.2f}x  load after {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
