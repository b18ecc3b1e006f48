"""The ``local`` provider: a real Kubernetes control plane and real kube-proxies, no container engine.

Per cluster (see :mod:`.net` for the network layout):

* the control-plane node's network namespace runs etcd (127.0.0.1:2379), kube-apiserver (:6443, advertised
  on the node IP), kube-controller-manager, kube-scheduler and kwok (node heartbeats; pods Running with IPs
  from each node's podCIDR);
* every node's namespace runs a real kube-proxy writing real iptables/nftables rules there;
* the pytest process (root namespace) reaches the apiserver and etcd through
  :mod:`pytest_k8sstate.providers.portforward` on ``127.0.0.1:<port>``: nothing is added to the root
  namespace.

Everything is recorded in ``<cache>/clusters/<name>/state.json`` (:mod:`.state`) so teardown, the CLI in
another process and the reaper (:mod:`.reaper`) find it. The create's steps are in :mod:`.create`, the
components' command lines in :mod:`.components`, the readiness probes in :mod:`.readiness`, the binaries
in :mod:`.binaries`.

Start order: network → PKI → forwarder, etcd, kube-apiserver → (``/readyz``) kube-controller-manager,
kube-scheduler, Node objects and add-ons, kwok, one kube-proxy per node → readiness (nodes Ready, coredns
endpoints, every kube-proxy has the kubernetes and kube-dns Services) → pristine capture for
:meth:`LocalProvider.reset`. Controllers start after ``/readyz`` because earlier their leader election and
informers hit RBAC 403s and back off; ``K8SSTATE_LOCAL_EARLY_CONTROLLERS=1`` (read at each create) starts
them with the apiserver (measured: no gain on a 2-core machine, the start-up is CPU bound).

Teardown SIGKILLs every recorded process group at once (the cluster's state is thrown away, so a graceful
stop buys nothing and costs seconds), then deletes the namespaces (kube-proxy rules die with them) and
the cluster directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest_k8sstate.providers.local.net as net
import pytest_k8sstate.providers.local.state as state_mod
from pytest_k8sstate.errors import ConfigError, ProviderError
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.providers.base import (
    Cluster,
    ClusterSpec,
    NodeInfo,
    Progress,
    Provider,
    family_capabilities,
    stderr_progress,
)
from pytest_k8sstate.providers.host import check_ipvs_support, proc_start_time, sigterm_as_interrupt
from pytest_k8sstate.providers.local.binaries import kube_version, resolve_binaries
from pytest_k8sstate.providers.local.create import Creation
from pytest_k8sstate.providers.local.liveness import check_alive, forget
from pytest_k8sstate.providers.local.procs import Procs, kill_processes
from pytest_k8sstate.providers.local.state import ClusterState

__all__ = ["LocalProvider", "check_kubeconfig_out", "provider"]

CAPABILITIES = frozenset({"etcd", "iptables", "nftables"})
#: what a cluster of the right ``ip_family`` adds (``Provider.capabilities``: the most the provider offers)
FAMILY_CAPABILITIES = frozenset({"ipv6", "dual-stack"})
DEFAULT_TIMEOUT = 120.0


def provider(**options: Any) -> LocalProvider:
    return LocalProvider(**options)


class LocalProvider(Provider):
    name = "local"
    capabilities = CAPABILITIES | FAMILY_CAPABILITIES
    ip_families: ClassVar[tuple[str, ...]] = ("ipv4", "ipv6", "dual")
    missing_reasons: ClassVar[Mapping[str, str]] = {
        "container-runtime": "the local provider runs pods with kwok (no container runtime)",
        "kubelet": "the local provider's nodes are kwok nodes (no kubelet)",
        "cni": "the local provider has no CNI plugin (kwok assigns pod IPs)",
        "kindnet": "kindnet runs only on kind clusters",
    }
    shares_host_kernel: ClassVar[bool] = True

    def __init__(self, progress: Progress | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.progress: Progress = progress or stderr_progress
        self.timeout = timeout

    # --- public API -------------------------------------------------------------------------------
    def create(self, spec: ClusterSpec) -> Cluster:
        from pytest_k8sstate.node.netns import require_root

        require_root(f"creating local cluster {spec.name!r}")
        # SIGTERM (a CI timeout, `kill`) cleans up like Ctrl-C while the create runs (unless the caller
        # handles SIGTERM itself, as the pytest plugin does for the whole session)
        sigterm = sigterm_as_interrupt()
        try:
            return self._create(spec)
        finally:
            if sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _create(self, spec: ClusterSpec) -> Cluster:
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
            ip_family=spec.ip_family,
            version=version,
            owner_pid=os.getpid(),
            owner_start=proc_start_time(os.getpid()),
        )
        state_mod.checkpoint("claimed")
        procs = Procs(st)
        try:
            cluster = Creation(
                st, spec, paths, procs, deadline=t0 + self.timeout, progress=self.progress
            ).run(self.cluster)
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
        check_alive(st)
        return self.cluster(st)

    def reset(self, cluster: Cluster) -> None:
        from pytest_k8sstate.providers.pristine import reset_cluster

        st = state_mod.load_state(cluster.name)
        if st is None:
            raise ProviderError(f"no local cluster {cluster.name!r} to reset")
        reset_cluster(self.cluster(st), st.dir, ip6=st.ip_family != "ipv4", timeout=min(self.timeout, 30.0))

    # --- internals --------------------------------------------------------------------------------
    def cluster(self, st: ClusterState) -> Cluster:
        """The provider-neutral handle of the cluster recorded in ``st``."""
        from pytest_k8sstate.etcd.target import EtcdTarget

        pki = st.dir / "pki"
        etcd = EtcdTarget(
            endpoints=(f"https://127.0.0.1:{st.ports['etcd']}",),
            ca=pki / "etcd" / "ca.crt",
            cert=pki / "apiserver-etcd-client.crt",
            key=pki / "apiserver-etcd-client.key",
        )
        caps = set(CAPABILITIES) | family_capabilities(st.ip_family)
        if st.proxy_mode == "ipvs":
            caps.add("ipvs")
        return Cluster(
            name=st.name,
            provider=self.name,
            kubeconfig=Path(st.kubeconfig),
            api_server=f"https://127.0.0.1:{st.ports['api']}",
            # the node address Kubernetes knows first (InternalIP): IPv6 in an IPv6-only cluster
            nodes=[
                NodeInfo(
                    n.name, n.role, NetnsExec(n.netns, node=n.name), n.ip6 if st.ip_family == "ipv6" else n.ip
                )
                for n in st.nodes
            ],
            etcd=etcd,
            capabilities=frozenset(caps),
            proxy_mode=st.proxy_mode,
            version=st.version,
            details={
                "dir": str(st.dir),
                "subnet": st.subnet,
                "ports": dict(st.ports),
                "index": st.index,
                "ip_family": st.ip_family,
                **(
                    {"subnet6": st.subnet6, "node_ips6": {n.name: n.ip6 for n in st.nodes}}
                    if st.subnet6
                    else {}
                ),
            },
            check_alive=lambda: check_alive(st),
        )

    def _teardown(self, st: ClusterState, procs: Procs | None) -> None:
        """Stop every recorded process, delete the namespaces and the cluster directory."""
        with contextlib.suppress(Exception):
            st.phase = "deleting"
            st.save()
        left = kill_processes(st, timeout=10)
        if procs is not None:
            with contextlib.suppress(Exception):
                procs.reap()
        # a process left running keeps its namespaces (`ip netns pids NS` finds it)
        ns_left = list(st.netns) if left else net.delete_netns(list(st.netns))
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
        forget(st)
        state_mod.remove_dir(st.dir)


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
