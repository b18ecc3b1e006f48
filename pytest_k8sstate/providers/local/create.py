"""One ``local`` create, step by step: network, PKI, forwarder, etcd, apiserver, objects, kwok, kube-proxies.

Every wait (:func:`pytest_k8sstate.util.poll.wait_until`) ends at the create's deadline and fails at once,
with the log tail, when a component it depends on has exited. The provider
(:class:`~pytest_k8sstate.providers.local.provider.LocalProvider`) owns the state record and tears down
whatever a failed create left.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest_k8sstate.providers.local.addons as addons_mod
import pytest_k8sstate.providers.local.components as comp
import pytest_k8sstate.providers.local.net as net
import pytest_k8sstate.providers.local.readiness as ready
from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.pki import Pki
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, Progress
from pytest_k8sstate.providers.local.binaries import kwok_stages
from pytest_k8sstate.providers.local.procs import Procs
from pytest_k8sstate.providers.local.rest import RestClient
from pytest_k8sstate.providers.local.state import ClusterState, NodeRecord, checkpoint
from pytest_k8sstate.util.poll import wait_until
from pytest_k8sstate.util.progress import ProgressLine
from pytest_k8sstate.util.progress import progress as live_progress

__all__ = ["EARLY_CONTROLLERS_ENV", "Creation", "early_controllers", "node_ips"]

EARLY_CONTROLLERS_ENV = "K8SSTATE_LOCAL_EARLY_CONTROLLERS"
#: what a wait may meet while a component is still starting (connection refused, reset, a node command)
_TRANSIENT = (OSError, http.client.HTTPException, CommandError)


def node_ips(n: NodeRecord, ip_family: str) -> list[str]:
    """The node's InternalIPs in the cluster's families, primary first."""
    return {"ipv4": [n.ip], "ipv6": [n.ip6]}.get(ip_family, [n.ip, n.ip6])


def early_controllers(env: Mapping[str, str] | None = None) -> bool:
    """``$K8SSTATE_LOCAL_EARLY_CONTROLLERS`` is ``1``: start the controllers with the apiserver (read now)."""
    return (os.environ if env is None else env).get(EARLY_CONTROLLERS_ENV, "") == "1"


class Creation:
    """One create, step by step (see the module doc); every wait ends at the create's deadline."""

    def __init__(
        self,
        st: ClusterState,
        spec: ClusterSpec,
        paths: dict[str, Path],
        procs: Procs,
        *,
        deadline: float,
        progress: Progress,
    ) -> None:
        self.st, self.spec, self.paths, self.procs = st, spec, paths, procs
        self.deadline = deadline
        self.progress = progress
        self.step = time.monotonic()
        self.comp_conf: dict[str, Path] = {}
        self.live: ProgressLine | None = None  # the live line while run() runs

    def done(self, what: str) -> None:
        now = time.monotonic()
        self.progress(f"{what} ({now - self.step:.1f}s)")
        self.step = now

    def wait(
        self,
        what: str,
        probe: Callable[[], str | None],
        *,
        running: list[str] | None = None,
        logs: Callable[[], str] | None = None,
        deadline: float | None = None,
    ) -> None:
        """Poll ``probe`` until the deadline; fails at once when one of ``running`` has exited."""
        names = running if running is not None else [p.name for p in self.st.processes]
        live = self.live

        def shown() -> str | None:  # the live line says what is awaited and why it is not there yet
            why = probe()
            if live is not None:
                live.step(f"waiting for {what}" + (f": {why}" if why else ""))
            return why

        wait_until(
            what,
            shown,
            deadline=self.deadline if deadline is None else deadline,
            error=ProviderError,
            transient=_TRANSIENT,
            details=logs,
            check=lambda: self.procs.check(names),
        )

    def run(self, handle: Callable[[ClusterState], Cluster]) -> Cluster:
        """Start everything; ``handle`` makes the handle of the ready cluster (for its pristine capture).
        A live line shows the step and the wait running (:mod:`pytest_k8sstate.util.progress`)."""
        sink = self.progress
        with live_progress(f"cluster {self.spec.name!r}", sink=sink) as live:
            self.live, self.progress = live, live.emit
            try:
                return self._run(handle)
            finally:
                self.live, self.progress = None, sink

    def _run(self, handle: Callable[[ClusterState], Cluster]) -> Cluster:
        st, spec = self.st, self.spec
        cp = self._network()
        pki = self._pki(cp)
        d = st.dir
        # --- forwarder, etcd and kube-apiserver at once (the apiserver retries until etcd answers) ---
        ready_file = d / "portforward.json"
        self.procs.start("portforward", comp.portforward_argv(cp, ready_file), None)
        (d / "etcd-data").mkdir(mode=0o700, exist_ok=True)
        self.procs.start("etcd", comp.etcd_argv(self.paths["etcd"], d / "etcd-data", pki, cp), cp.netns)
        self.procs.start("kube-apiserver", comp.apiserver_argv(self.paths, pki, cp, st.ip_family), cp.netns)
        early = early_controllers()
        if early:
            self._start_controllers(pki)

        self.wait(
            "the port forwarder",
            lambda: None if ready_file.exists() else f"{ready_file} not written yet",
            running=["portforward"],
            deadline=min(self.deadline, time.monotonic() + 15),
        )
        fwd = json.loads(ready_file.read_text())
        st.ports = {"api": int(fwd["ports"][0]), "etcd": int(fwd["ports"][1])}
        st.save()
        from pytest_k8sstate.pki import write_kubeconfig

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
            self.wait(
                "kube-apiserver /readyz",
                lambda: ready.apiserver_not_ready(api),
                running=["portforward", "etcd", "kube-apiserver"],
                logs=self.procs.logs("etcd", "kube-apiserver"),
            )
            self.done("etcd + kube-apiserver ready")
            if not early:
                self._start_controllers(pki)
            self._objects(api, cp)
            self._nodes_and_proxies(cp)
            return self._ready(api, cp, handle)
        finally:
            api.close()

    def _network(self) -> NodeRecord:
        """The node records, the cluster's namespaces and their wiring; returns the control-plane node."""
        st, spec = self.st, self.spec
        names = [f"{spec.name}-control-plane"] + [
            f"{spec.name}-worker{'' if k == 1 else k}" for k in range(1, spec.nodes + 1)
        ]
        fam = st.ip_family
        for k, node in enumerate(names):
            cidrs = comp.node_pod_cidrs(k, "dual" if fam != "ipv4" else "ipv4")
            st.nodes.append(
                NodeRecord(
                    name=node,
                    role="control-plane" if k == 0 else "worker",
                    ip=net.host_ip(st.subnet, 2 + k),
                    netns=net.node_netns(node),
                    pod_cidr=cidrs[0],
                    ip6=net.host_ip(st.subnet6, 2 + k) if st.subnet6 else "",
                    pod_cidr6=cidrs[1] if fam != "ipv4" else "",
                )
            )
        st.netns = [n.netns for n in st.nodes] + [net.bridge_netns(spec.name)]
        st.save()
        checkpoint("netns-recorded")
        net.create_network(
            spec.name,
            st.subnet,
            [(n.netns, n.ip) for n in st.nodes],
            subnet6=st.subnet6,
            ips6=[n.ip6 for n in st.nodes],
        )
        checkpoint("network")
        on = f"{st.subnet} + {st.subnet6}" if st.subnet6 else st.subnet
        self.done(f"network: {len(st.nodes)} node namespaces on {on}")
        return st.nodes[0]

    def _pki(self, cp: NodeRecord) -> Pki:
        """The cluster's certificates and the components' kubeconfigs (``self.comp_conf``)."""
        from pytest_k8sstate.pki import generate_pki

        d = self.st.dir
        pki = generate_pki(
            d / "pki",
            apiserver_sans=[cp.ip, *([cp.ip6] if cp.ip6 else []), cp.name],
            etcd_sans=[cp.ip, cp.name],
            cluster_name=self.spec.name,
        )
        internal = comp.api_url(cp, self.st.ip_family)
        kc = d / "kubeconfig"
        kc.mkdir(exist_ok=True)
        for component, cn in (
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("kube-proxy", "system:kube-proxy"),
        ):
            crt, key = pki.client_cert(component, cn)
            self.comp_conf[component] = pki.write_kubeconfig(kc / f"{component}.conf", internal, crt, key, cn)
        self.comp_conf["admin-internal"] = pki.write_kubeconfig(
            kc / "admin-internal.conf", internal, pki.admin_crt, pki.admin_key, "kubernetes-admin"
        )
        return pki

    def _start_controllers(self, pki: Pki) -> None:
        """kube-controller-manager and kube-scheduler, flags as kubeadm sets them."""
        cp = self.st.nodes[0]
        conf = self.comp_conf
        self.procs.start(
            "kube-controller-manager",
            comp.controller_manager_argv(
                self.paths, pki, conf["controller-manager"], self.st.name, self.st.ip_family
            ),
            cp.netns,
        )
        self.procs.start("kube-scheduler", comp.scheduler_argv(self.paths, conf["scheduler"]), cp.netns)

    def _objects(self, api: RestClient, cp: NodeRecord) -> None:
        """The Node objects and kubeadm's add-ons (kube-proxy config, coredns, RBAC)."""
        st = self.st
        fam = st.ip_family
        objs = [
            addons_mod.node_object(
                n.name,
                role=n.role,
                ip=n.ip,
                pod_cidr=n.pod_cidr,
                version=st.version,
                ips=node_ips(n, fam),
                pod_cidrs=comp.node_pod_cidrs(k, fam),
            )
            for k, n in enumerate(st.nodes)
        ]
        objs += addons_mod.addons(
            proxy_mode=self.spec.proxy_mode,
            cluster_cidr=comp.cluster_cidrs(fam),
            api_server=comp.api_url(cp, fam),
            version=st.version,
            dns_ip=addons_mod.DNS_IP6 if fam == "ipv6" else addons_mod.DNS_IP,
        )
        for obj in objs:
            status, body = api.request("POST", addons_mod.collection_path(obj), obj)
            if status == 409:
                continue
            if status >= 300:
                msg = body.get("message") if isinstance(body, dict) else body
                raise ProviderError(
                    f"creating {obj['kind']} {obj['metadata']['name']} in cluster {st.name!r} failed: "
                    f"HTTP {status}: {msg}"
                )
        self.done(f"{len(st.nodes)} nodes and kubeadm add-ons created")

    def _nodes_and_proxies(self, cp: NodeRecord) -> None:
        """kwok (nodes Ready, pods Running) and one kube-proxy per node."""
        conf = self.comp_conf
        stages = kwok_stages(self.spec.version)
        fam = self.st.ip_family
        self.procs.start("kwok", comp.kwok_argv(self.paths, conf["admin-internal"], stages, fam), cp.netns)
        for n in self.st.nodes:
            self.procs.start(
                f"kube-proxy-{n.name}",
                comp.kube_proxy_argv(self.paths, conf["kube-proxy"], n, self.spec.proxy_mode, fam),
                n.netns,
            )

    def _ready(self, api: RestClient, cp: NodeRecord, handle: Callable[[ClusterState], Cluster]) -> Cluster:
        """Wait for readiness, mark the cluster ready and capture its pristine state."""
        st, spec = self.st, self.spec
        node_names = [n.name for n in st.nodes]
        self.wait(
            "all nodes Ready", lambda: ready.nodes_not_ready(api, node_names), logs=self.procs.logs("kwok")
        )
        self.done("nodes Ready")

        dns_eps: list[str] = []

        def dns_ready() -> str | None:
            why, ips = ready.dns_endpoints(api)
            dns_eps[:] = ips
            return why

        self.wait(
            "coredns endpoints",
            dns_ready,
            logs=self.procs.logs("kwok", "kube-scheduler", "kube-controller-manager"),
        )
        self.done(f"coredns endpoints ready ({', '.join(dns_eps)})")

        api_ip = comp.primary_ip(cp, st.ip_family)
        expected: list[ready.Expected] = [("default", "kubernetes", "https", "tcp", api_ip, comp.API_PORT)]
        expected += [("kube-system", "kube-dns", "dns-tcp", "tcp", ip, 53) for ip in dns_eps]
        pending = {n.name: n for n in st.nodes}

        def proxies_synced() -> str | None:
            for name, n in list(pending.items()):
                why = ready.proxy_rules_missing(NetnsExec(n.netns, node=n.name), spec.proxy_mode, expected)
                if why is not None:
                    return f"kube-proxy on {name}: {why}"
                del pending[name]
            return None

        self.wait(
            "every kube-proxy to sync the kubernetes and kube-dns Services",
            proxies_synced,
            logs=lambda: self.procs.logs(*(f"kube-proxy-{n}" for n in pending))(),
        )
        self.done(f"{len(st.nodes)} kube-proxies ({spec.proxy_mode}) synced")

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
        cluster = handle(st)
        from pytest_k8sstate.providers.pristine import capture_pristine

        capture_pristine(cluster, st.dir, ip6=st.ip_family != "ipv4")
        return cluster
