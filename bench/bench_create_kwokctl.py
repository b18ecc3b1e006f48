"""local create → ready vs kwok's own ``kwokctl create cluster --runtime binary``, same binaries, interleaved.

    python bench/bench_create_kwokctl.py [--runs 5] [--nodes 2] [--proxy-mode iptables] [--pool]

Issue goal: local create → ready (1 control plane + 2 workers, iptables) ≤ 0.8× kwokctl's create.

* ours    : ``LocalProvider.create(ClusterSpec(nodes=2, proxy_mode=iptables))`` returned (apiserver ready,
            nodes Ready, coredns endpoints, every kube-proxy synced, pristine state captured), then
            ``delete()``.
* kwokctl : ``kwokctl create cluster --runtime binary --wait`` (components started, ``/version`` served,
            ``/healthz`` ok), ``kwokctl scale node --replicas 3`` (one node per node of ours), the 3 Node
            objects Ready (polled like ours polls its nodes), then ``kwokctl delete cluster``.

kwokctl is built once from the Go module proxy at the kwok version the project pins (``go install
sigs.k8s.io/kwok/cmd/kwokctl@<version>`` into ``<cache>/bin/kwokctl-<version>/``, log in
``<cache>/logs/kwokctl-<version>.log``); later runs reuse it. It runs the binaries of the project's cache
(kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok, kubectl), offline: its work dir,
config, cache and kubeconfig live in a temp dir, and a dead HTTP(S) proxy makes any download attempt fail.
* pool    : (``--pool``) what a session with ``--k8sstate-pool 1`` meets once the pool is warm: the time
            from asking for a cluster of that shape to a ready one it owns (``warm.take`` + the liveness
            check of ``LocalProvider.get``), then ``delete()``. The server's replacement create is
            awaited *untimed* before the next runner starts, so no runner shares the machine with it;
            its duration is printed separately (it is a background create like ours).

The runners are run alternately (the order turns every run) so all see the same machine load; the medians
and ratios come from the same run. Needs root (the local provider).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("K8SSTATE_PROGRESS", "0")  # no live line; the provider's step lines still arrive

import pytest_k8sstate.binaries as bins
from pytest_k8sstate.binaries.gobuild import find_go, go_env, run_logged
from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.node.exec import run_command
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.host import proc_start_time, sigterm_as_interrupt
from pytest_k8sstate.providers.local import warm
from pytest_k8sstate.providers.local.binaries import resolve_binaries
from pytest_k8sstate.providers.local.provider import LocalProvider
from pytest_k8sstate.providers.local.readiness import nodes_not_ready
from pytest_k8sstate.providers.local.rest import RestClient
from pytest_k8sstate.util.files import cache_dir

GOAL = 0.8
KWOKCTL_MODULE = "sigs.k8s.io/kwok/cmd/kwokctl"
BUILD_TIMEOUT = 1800.0  # go install of kwokctl (cold: ~1-2 min on 2 cores)
CMD_TIMEOUT = 180.0  # any kwokctl command
READY_TIMEOUT = 120.0  # kwokctl's --wait and our wait for its nodes
DEAD_PROXY = "http://127.0.0.1:9"  # a download kwokctl would try fails at once instead of going out


# --- kwokctl from the Go module proxy ---
def build_kwokctl(version: str, cache: Path) -> Path:
    """``<cache>/bin/kwokctl-<version>/kwokctl``, built by ``go install`` unless already there."""
    vdir = cache / "bin" / f"kwokctl-{version}"
    dest = vdir / "kwokctl"
    if dest.is_file() and os.access(dest, os.X_OK):
        print(f"kwokctl {version}: cached at {dest}")
        return dest
    spec = f"{KWOKCTL_MODULE}@{version}"
    log = cache / "logs" / f"kwokctl-{version}.log"
    print(f"kwokctl {version}: go install {spec} (log: {log})…", flush=True)
    t0 = time.monotonic()
    gobin = vdir / f".tmp-gobin-{os.getpid()}"
    shutil.rmtree(gobin, ignore_errors=True)
    gobin.mkdir(parents=True)
    cwd = cache / "build"
    cwd.mkdir(parents=True, exist_ok=True)
    env = go_env()
    env["GOBIN"] = str(gobin)
    try:
        run_logged(
            [find_go(), "install", "-trimpath", "-ldflags=-s -w", spec],
            cwd=cwd,
            log_path=log,
            what=f"kwokctl: go install {spec}",
            timeout=BUILD_TIMEOUT,
            env=env,
        )
        built = gobin / "kwokctl"
        if not built.is_file():
            raise K8sStateError(f"go install {spec} produced no kwokctl in {gobin}; see {log}")
        os.replace(built, dest)
    finally:
        shutil.rmtree(gobin, ignore_errors=True)
    print(f"kwokctl {version}: built in {time.monotonic() - t0:.1f}s → {dest}")
    return dest


# --- ours ---
_STEP = re.compile(r"\s*\((?:\d+(?:\.\d+)?s)\)\s*$")


def _step_label(line: str) -> str:
    """``coredns endpoints ready (10.244.1.2, …) (1.6s)`` → ``coredns endpoints ready``."""
    if line.startswith("cluster ") and " ready (" in line:
        return "state saved + pristine capture"
    text = re.sub(r"\s*\([^)]*\)", "", _STEP.sub("", line))
    return " ".join(text.split(":")[0].split())


def ours_once(prov: LocalProvider, name: str, nodes: int, proxy_mode: str) -> dict[str, float]:
    """One create + delete; the times of create, create+delete and each create step (seconds)."""
    marks: list[tuple[float, str]] = []

    def record(line: str) -> None:
        marks.append((time.monotonic(), line))

    prov.progress = record
    out: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        prov.create(ClusterSpec(name=name, nodes=nodes, proxy_mode=proxy_mode))
        out["create"] = time.monotonic() - t0
    finally:
        prov.delete(name)
    out["create+delete"] = time.monotonic() - t0
    prev = t0
    for i, (t, line) in enumerate(marks):
        label = _step_label(line)
        if i == 0:
            label = f"reap, binaries, state + {label}"
        out[f"step: {label}"] = t - prev
        prev = t
    return out


# --- ours, from the warm pool ---
def _wait_warm(spec: warm.WarmSpec, deadline: float) -> None:
    t0 = time.monotonic()
    while not any(s.slug == spec.slug() and s.waiting for s in warm.statuses()):
        if not warm.serving(warm.pool_dir(spec)) and time.monotonic() - t0 > 10.0:  # 10 s: its start-up
            raise K8sStateError(f"the warm pool server stopped; see {warm.pool_dir(spec) / 'serve.log'}")
        if time.monotonic() > deadline:
            raise K8sStateError(f"the warm pool {spec.slug()} had no ready cluster within {READY_TIMEOUT:g}s")
        time.sleep(0.05)


def pooled_once(prov: LocalProvider, spec: warm.WarmSpec) -> dict[str, float]:
    """Take a ready cluster (timed: "create"), delete it; then wait, untimed, for the pool's replacement."""
    _wait_warm(spec, time.monotonic() + READY_TIMEOUT)
    me = os.getpid()
    t0 = time.monotonic()
    name = warm.take(spec, owner_pid=me, owner_start=proc_start_time(me))
    if name is None:
        raise K8sStateError(f"the warm pool {spec.slug()} handed out no cluster")
    try:
        prov.get(name)  # what the plugin does with it: the liveness check
        out = {"create": time.monotonic() - t0}
    finally:
        prov.delete(name)
    out["create+delete"] = time.monotonic() - t0
    t1 = time.monotonic()
    _wait_warm(spec, t1 + READY_TIMEOUT)
    out["refill (background, untimed above)"] = time.monotonic() - t1
    return out


# --- kwokctl ---
class Kwokctl:
    """kwokctl (binary runtime) in a private work dir, pointed at the project's binaries."""

    def __init__(self, exe: Path, paths: dict[str, Path], kube_version: str, etcd_version: str) -> None:
        self.exe = exe
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-kwokctl-"))
        self.kubeconfig = self.tmp / "kubeconfig"
        self.workdir = self.tmp / "work"
        self.paths = paths
        self.env = {  # added to os.environ by run_command
            "KWOK_WORKDIR": str(self.workdir),
            "KWOK_RUNTIME": "binary",
            "KWOK_KUBE_VERSION": kube_version,
            "KWOK_ETCD_VERSION": etcd_version.removeprefix("v"),
            "KWOK_KUBECTL_BINARY": str(paths["kubectl"]),
            "KWOK_QUIET_PULL": "true",
            "KUBECONFIG": str(self.kubeconfig),
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "http_proxy": DEAD_PROXY,
            "https_proxy": DEAD_PROXY,
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
        }

    def run(self, name: str, *args: str, timeout: float = CMD_TIMEOUT) -> str:
        """kwokctl's stdout + stderr; K8sStateError (the last 15 lines) when it fails or times out."""
        argv = [str(self.exe), "--name", name, *args]
        proc = run_command(argv, env=self.env, timeout=timeout, check=False, where="kwokctl")
        out = proc.text + proc.stderr.decode("utf-8", errors="replace")
        if proc.returncode != 0:
            tail = "\n".join("    " + ln for ln in out.splitlines()[-15:])
            raise K8sStateError(f"`{' '.join(argv)}` exited {proc.returncode}:\n{tail}")
        return out

    def cluster_dir(self, name: str) -> Path:
        return self.workdir / "clusters" / name

    def create(self, name: str) -> dict[str, float]:
        p = self.paths
        wait = f"{READY_TIMEOUT:g}s"
        t0 = time.monotonic()
        out = self.run(
            name,
            "create",
            "cluster",
            "--runtime=binary",
            f"--kubeconfig={self.kubeconfig}",
            f"--kube-apiserver-binary={p['kube-apiserver']}",
            f"--kube-controller-manager-binary={p['kube-controller-manager']}",
            f"--kube-scheduler-binary={p['kube-scheduler']}",
            f"--etcd-binary={p['etcd']}",
            f"--kwok-controller-binary={p['kwok']}",
            f"--wait={wait}",
            f"--timeout={wait}",
            timeout=READY_TIMEOUT + 60,
        )
        t_cluster = time.monotonic()
        res = {f"phase: {k}": v for k, v in _kwokctl_phases(out).items()}
        if "phase: /healthz ok (--wait)" not in res:
            raise K8sStateError(
                f"kwokctl create cluster {name}: no 'Cluster is ready' in its log:\n{out[-2000:]}"
            )
        res["phase: kwokctl create cluster (wall)"] = t_cluster - t0
        self.run(name, "scale", "node", "--replicas=3")
        self._wait_nodes(name, 3, deadline=time.monotonic() + READY_TIMEOUT)
        res["phase: scale node 3 + nodes Ready"] = time.monotonic() - t_cluster
        res["create"] = time.monotonic() - t0
        return res

    def _wait_nodes(self, name: str, count: int, deadline: float) -> None:
        """Until ``count`` Node objects are Ready (the readiness check ours uses for its own nodes)."""
        d = self.cluster_dir(name)
        server = _server(d / "kubeconfig.yaml")
        host, _, port = server.removeprefix("https://").rpartition(":")
        api = RestClient(
            host, int(port), d / "pki" / "ca.crt", d / "pki" / "admin.crt", d / "pki" / "admin.key", 5
        )
        try:
            why: str | None = "not checked"
            while time.monotonic() < deadline:
                status, body = api.request("GET", "/api/v1/nodes")
                items = body.get("items", []) if status == 200 and isinstance(body, dict) else []
                names = [it["metadata"]["name"] for it in items]
                why = f"{len(names)} nodes" if len(names) < count else nodes_not_ready(api, names)
                if why is None:
                    return
                time.sleep(0.02)
            raise K8sStateError(f"kwokctl cluster {name}: nodes not Ready within {READY_TIMEOUT:g}s: {why}")
        finally:
            api.close()

    def delete(self, name: str) -> None:
        """``kwokctl delete cluster``, then kill whatever of its processes is still alive (a half create)."""
        pids = _pids(self.cluster_dir(name))
        try:
            if self.cluster_dir(name).exists():
                self.run(name, "delete", "cluster", f"--kubeconfig={self.kubeconfig}")
        finally:
            for pid in pids:
                if _ours(pid, self.tmp):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            shutil.rmtree(self.cluster_dir(name), ignore_errors=True)

    def once(self, name: str) -> dict[str, float]:
        t0 = time.monotonic()
        try:
            res = self.create(name)
        finally:
            self.delete(name)
        res["create+delete"] = time.monotonic() - t0
        return res

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


_PHASES = {
    "Cluster is created": "install: pki, config, binaries linked",
    "Cluster is started": "start components + /version served",
    "Cluster is ready": "/healthz ok (--wait)",
}


def _kwokctl_phases(out: str) -> dict[str, float]:
    """Seconds of each phase kwokctl logs (``"msg": "Cluster is started", "elapsed": {...}``)."""
    res: dict[str, float] = {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        label = _PHASES.get(rec.get("msg", ""))
        elapsed = rec.get("elapsed")
        if label and isinstance(elapsed, dict) and "nanosecond" in elapsed:
            res[label] = elapsed["nanosecond"] / 1e9
    return res


def _server(kubeconfig: Path) -> str:
    import yaml

    conf: Any = yaml.safe_load(kubeconfig.read_text())
    return str(conf["clusters"][0]["cluster"]["server"])


def _pids(cdir: Path) -> list[int]:
    pids = []
    for f in sorted((cdir / "pids").glob("*.pid")):
        try:
            pids.append(int(f.read_text().strip()))
        except (OSError, ValueError):
            pass
    return pids


def _ours(pid: int, tmp: Path) -> bool:
    """Is ``pid`` a process of this kwokctl work dir (its command line names the temp dir)?"""
    try:
        return str(tmp) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


# --- report ---
def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs if key in r)


def _breakdown(title: str, runs: list[dict[str, float]], prefix: str) -> None:
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r if k.startswith(prefix) and k not in keys]
    print(f"\n{title} (medians)")
    for k in keys:
        print(f"  {k.removeprefix(prefix):48s} {_med(runs, k) * 1000:7.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=2, help="workers of ours (kwokctl gets nodes + 1 nodes)")
    ap.add_argument("--proxy-mode", default="iptables")
    ap.add_argument(
        "--pool", action="store_true", help="also measure a take from a warm pool (--k8sstate-pool)"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (the local provider)", file=sys.stderr)
        return 2
    sigterm_as_interrupt()  # SIGTERM cleans up like Ctrl-C
    versions = bins.Versions.resolve()
    cache = cache_dir()
    try:
        kwokctl_exe = build_kwokctl(versions.kwok, cache)
    except (K8sStateError, OSError) as exc:
        print(
            f"cannot build kwokctl from the Go module proxy ({KWOKCTL_MODULE}@{versions.kwok}): {exc}",
            file=sys.stderr,
        )
        return 2
    try:
        paths = resolve_binaries(None, print)
        kubectl = (
            bins.find_binary("kubectl", versions) or bins.ensure_binaries(["kubectl"], versions)["kubectl"]
        )
    except K8sStateError as exc:
        print(f"the project's binaries are not available: {exc}", file=sys.stderr)
        return 2
    paths["kubectl"] = kubectl
    for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok", "kubectl"):
        print(f"  {n:24s} {paths[n]}")

    prov = LocalProvider(progress=lambda _: None)
    kw = Kwokctl(kwokctl_exe, paths, versions.kubernetes, versions.etcd)
    ours_name = f"bk{os.getpid() % 10000}"
    kw_name = f"kb{os.getpid() % 10000}"
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    runners: list[tuple[str, Callable[[], dict[str, float]], list[dict[str, float]]]] = [
        ("ours", lambda: ours_once(prov, ours_name, args.nodes, args.proxy_mode), ours),
        ("kwokctl", lambda: kw.once(kw_name), theirs),
    ]
    pooled: list[dict[str, float]] = []
    spec = warm.WarmSpec(args.nodes, args.proxy_mode)
    try:
        if args.pool:
            warm.ensure_serving(spec, size=1, idle=600)
            _wait_warm(spec, time.monotonic() + READY_TIMEOUT)  # the first fill runs alone, untimed
            runners.append(("pool", lambda: pooled_once(prov, spec), pooled))
        for run in range(args.runs):
            turn = run % len(runners)
            order = runners[turn:] + runners[:turn]  # who goes first turns every run
            parts = []
            for label, fn, sink in order:
                res = fn()
                sink.append(res)
                parts.append(f"{label} create {res['create']:.2f}s (+delete {res['create+delete']:.2f}s)")
            print(f"run {run + 1}/{args.runs}: " + ", ".join(parts), flush=True)
    except K8sStateError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        kw.close()
        if args.pool:
            warm.stop(spec=spec)

    n = args.runs
    o_c, o_cd = _med(ours, "create"), _med(ours, "create+delete")
    k_c, k_cd = _med(theirs, "create"), _med(theirs, "create+delete")
    print(
        f"\n1 control plane + {args.nodes} workers, kube-proxy {args.proxy_mode}; "
        f"kwokctl {versions.kwok} --runtime binary + {args.nodes + 1} nodes; "
        f"medians of n={n} interleaved runs"
    )
    print(f"  ours    create        {o_c:6.2f}s")
    print(f"  ours    create+delete {o_cd:6.2f}s")
    print(f"  kwokctl create        {k_c:6.2f}s")
    print(f"  kwokctl create+delete {k_cd:6.2f}s")
    print(f"  ratio ours/kwokctl create        {o_c / k_c:5.2f}   (goal ≤ {GOAL})")
    print(f"  ratio ours/kwokctl create+delete {o_cd / k_cd:5.2f}   (goal ≤ {GOAL})")
    if pooled:
        p_c, p_cd = _med(pooled, "create"), _med(pooled, "create+delete")
        refill = _med(pooled, "refill (background, untimed above)")
        print(
            f"  pool    take → ready  {p_c:6.3f}s   (the server's replacement create: {refill:.2f}s, "
            "in the background)"
        )
        print(f"  pool    take+delete   {p_cd:6.3f}s")
        print(f"  ratio pool/kwokctl create        {p_c / k_c:5.3f}   (goal ≤ {GOAL})")
        print(f"  ratio pool/kwokctl create+delete {p_cd / k_cd:5.3f}   (goal ≤ {GOAL})")
    _breakdown("ours: create steps", ours, "step: ")
    _breakdown("kwokctl: create phases", theirs, "phase: ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
