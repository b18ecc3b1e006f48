"""The ``kind`` provider: Kubernetes in Docker node containers, created by the ``kind`` CLI.

* **Config** -- :mod:`.config` (kind's Cluster config and ``kind create cluster`` argv, pure).
* **kind binary** -- ``KindOptions.kind_binary``, else ``kind`` on PATH, else the binaries cache (pinned
  ``binaries.DEFAULT_KIND_VERSION``, override with ``K8SSTATE_KIND_VERSION``), else built.
* **Node exec** -- ``docker [--host H] exec -i <node container>``
  (:class:`~pytest_k8sstate.node.exec.DockerExec`).
* **etcd** -- the control-plane's kubeadm etcd, reached *without changing the cluster*: the etcd CA and the
  apiserver's etcd client certificate are read out of the node into the provider's state dir
  (:func:`~pytest_k8sstate.providers.kubeadm.copy_node_certs`), and the plugin's gRPC client connects to
  ``<control-plane IP>:2379``. Nothing is added to the cluster (no pod, no service, no port-forward).
* **Reachability** -- with the project's own Docker engine (:mod:`pytest_k8sstate.providers.docker.engine`,
  network namespace ``k8ss-docker``) a loopback forwarder (:mod:`pytest_k8sstate.providers.forwarders`)
  reaches the apiserver (``:6443``) and etcd (``:2379``) of the control-plane and the provider's kubeconfig
  points at it; with a normal engine the kubeconfig kind wrote and the container IP are used directly.
* **Readiness** -- :mod:`.ready` (every node Ready with its Lease, CoreDNS available).
* **Reaping** -- :mod:`.reaper`: clusters of dead sessions are deleted at every create.
* **Logs** -- ``kind export logs`` into the artifacts dir: automatically when create fails, and on demand
  with :meth:`KindProvider.export_logs`.
* **Default CNI** -- kindnetd, or on node images built without it (:mod:`.image`) :mod:`.noderoutes`.

State per cluster: ``<cache>/kind-clusters/<name>/`` (``state.json``, ``config.yaml``, ``kubeconfig``,
``kubeconfig.kind``, ``pki/``, ``forward.json``).
"""

from __future__ import annotations

import builtins
import contextlib
import re
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_k8sstate.errors import BinaryError, CommandError, ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.node import session
from pytest_k8sstate.node.exec import CommandResult, DockerExec, NodeExec, SessionExec, run_command
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, NodeInfo, Progress, family_capabilities
from pytest_k8sstate.providers.docker.nodes import DockerNodesProvider
from pytest_k8sstate.providers.forwarders import stop_forwarder
from pytest_k8sstate.providers.kind import liveness, noderoutes, reaper
from pytest_k8sstate.providers.kind import reset as kind_reset
from pytest_k8sstate.providers.kind.config import (
    CLUSTER_LABEL,
    ROLE_LABEL,
    KindOptions,
    create_argv,
    host_cgroup_v1,
    kind_config,
    kind_error_summary,
    node_image,
    render_config,
)
from pytest_k8sstate.providers.kind.noderoutes import cni_name, missing_capability_notes
from pytest_k8sstate.providers.kind.ready import inotify_warning, read_int, wait_ready
from pytest_k8sstate.providers.kubeadm import (
    KUBEADM_CERTS,
    attach_control_plane,
    ipvs_in_kernel,
    node_capabilities,
    proxy_mode_from_kubeadm_conf,
)
from pytest_k8sstate.providers.kubeconfig import copy_kubeconfig
from pytest_k8sstate.providers.statefile import StateFile
from pytest_k8sstate.util.progress import progress as live_progress

FLANNELD_PATH = "/usr/local/bin/flanneld"
"""Where ``cni=flannel`` puts flanneld in every node (the agent's mode ``flannel`` runs it from there)."""
DEFAULT_POD_SUBNET = "10.244.0.0/16"
"""kind's default ``networking.podSubnet`` (flannel's ``Network`` unless ``KindOptions.pod_subnet``)."""

__all__ = ["KindProvider", "capabilities_for", "cni_name", "missing_capability_notes", "provider"]


def provider(**options: Any) -> KindProvider:
    return KindProvider(**options)


def capabilities_for(
    proxy_mode: str, *, default_cni: bool, ipvs_kernel: bool, kindnet: bool = True, cni: str | None = None
) -> frozenset[str]:
    """``kindnet=False``: the default CNI is :mod:`.noderoutes` (node images built without kindnetd); ``cni``
    (``ptp``, ``bridge``, ``kindnet``) adds the capability ``cni-<name>``."""
    caps = ({"cni", "kindnet"} if kindnet else {"cni"}) if default_cni else set()
    if default_cni and cni:
        caps.add(f"cni-{cni}")
    return node_capabilities(proxy_mode, ipvs_kernel=ipvs_kernel, extra=caps)


class KindProvider(DockerNodesProvider):
    name = "kind"
    cnis = ("ptp", "bridge", "flannel", "flannel-host-gw", "kindnet")
    # what a kind cluster can offer at most (the plugin skips a test needing anything else before create)
    capabilities = (
        capabilities_for("iptables", default_cni=True, ipvs_kernel=False)
        | {f"cni-{c}" for c in cnis}
        | {"ipv6", "dual-stack"}
    )
    ip_families = ("ipv4", "ipv6", "dual")

    def __init__(
        self,
        options: KindOptions | None = None,
        progress: Progress | None = None,
        **kw: Any,
    ) -> None:
        self.options = options or KindOptions(**kw)
        self._attach(progress, self.options.docker_host, self.options.docker_netns)

    # --- binary ----------------------------------------------------------------------------------
    def kind_binary(self) -> str:
        if self.options.kind_binary:
            return self.options.kind_binary
        on_path = shutil.which("kind")
        if on_path and not self.options.kind_version:
            return on_path
        import pytest_k8sstate.binaries as bins

        versions = bins.Versions.resolve(kind=self.options.kind_version)
        cached = bins.find_binary("kind", versions)
        if cached is not None:
            return str(cached)
        try:
            return str(bins.ensure_binaries(["kind"], versions, progress=self.progress)["kind"])
        except BinaryError as exc:
            raise ProviderError(f"no kind binary: {exc}") from exc

    def _kind(self, *args: str, timeout: float = 120.0, check: bool = True) -> CommandResult:
        return run_command(
            [self.kind_binary(), *args], timeout=timeout, check=check, env=self.docker.env(), where="kind"
        )

    # --- contract --------------------------------------------------------------------------------
    def list(self) -> list[str]:
        self.docker.require()
        res = self._kind("get", "clusters", timeout=60)
        return [ln.strip() for ln in res.text.splitlines() if ln.strip() and not ln.startswith("No kind")]

    def create(self, spec: ClusterSpec) -> Cluster:
        self._precheck_create(spec)
        opts = self.options
        self.reap()
        if spec.name in self.list():
            raise ProviderError(
                f"kind cluster {spec.name!r} already exists; delete it (`k8sstate cluster delete --name "
                f"{spec.name}`) or pick another name"
            )
        warn = inotify_warning(read_int(Path("/proc/sys/fs/inotify/max_user_instances")))
        if warn:
            self.progress(warn)
        if opts.allow_cgroup_v1 is None:
            opts = replace(opts, allow_cgroup_v1=host_cgroup_v1())
        image = node_image(spec, opts)
        if image and not self.docker.image_exists(image):
            raise ProviderError(
                f"kind node image {image!r} is not in the Docker engine at {self.docker.where}; no registry "
                "is assumed: `docker load -i IMAGE.tar` it or build one (docs/kind-on-restricted-machines.md)"
            )
        install_cni = self._cni_to_install(spec, opts, image)
        self._check_family_cni(spec, opts, image)
        if install_cni is not None:
            # kind's --wait would wait for a Ready control plane, which needs the CNI installed below
            opts = replace(opts, disable_default_cni=True, wait=0.0)
        st = StateFile.fresh(spec.name, self.root)  # leftovers of an earlier cluster of this name go
        cfg_path = st.dir / "config.yaml"
        cfg_path.write_text(render_config(kind_config(spec, opts, image)))
        st.data = {
            "name": spec.name,
            "proxy_mode": spec.proxy_mode,
            "ip_family": spec.ip_family,
            "image": image,
            "default_cni": install_cni is not None or not opts.disable_default_cni,
            **({"cni": install_cni} if install_cni is not None else {}),
            "docker_host": self.docker.host,
            "netns": self.netns,
            "persistent": spec.persistent,
            # the creator owns every cluster while it is being created (a killed create is reaped);
            # a persistent one has no owner once ready
            **reaper.owner(),
            "phase": "creating",
        }
        st.save()
        t0 = time.monotonic()
        argv = create_argv(
            self.kind_binary(), spec.name, cfg_path, st.dir / "kubeconfig.kind", image=image, wait=opts.wait
        )
        self.progress(f"kind: {' '.join(argv)}")
        try:
            with live_progress(f"kind cluster {spec.name!r}", sink=self.progress) as live:
                live.step("kind create cluster (node containers, kubeadm init/join)")
                res = run_command(
                    argv,
                    timeout=opts.wait + 600.0,
                    env=self.docker.env(),
                    check=False,
                    where=f"kind cluster {spec.name}",
                )
            if res.returncode != 0:
                logs = self._export_failure_logs(spec.name)
                raise ProviderError(
                    f"kind create cluster {spec.name!r} failed (exit {res.returncode}): "
                    f"{kind_error_summary(res.stderr.decode(errors='replace'))}; logs: {logs}"
                )
            cluster = self._cluster(st)
            if install_cni is not None:
                self._install_node_routes(cluster, install_cni)
            # kind --wait covers control-plane nodes only: wait for every node and CoreDNS as well
            wait_ready(cluster, timeout=max(self.options.wait, 60.0))
            st.data["pristine"] = self._capture_pristine(cluster, st)
            st.data["phase"] = "ready"
            if spec.persistent:
                st.data["owner_pid"] = st.data["owner_start"] = None
            st.save()
            copy_kubeconfig(cluster.kubeconfig, spec.kubeconfig_out)
        except BaseException:
            self.progress(f"kind: create of {spec.name!r} did not finish; removing what it made")
            self._delete(spec.name, st.dir, settle=10.0)
            raise
        self.progress(
            f"kind cluster {spec.name!r} ready ({time.monotonic() - t0:.1f}s): {cluster.kubeconfig}"
        )
        return cluster

    def _capture_pristine(self, cluster: Cluster, st: StateFile) -> str:
        """What ``fresh=True`` restores (:mod:`.reset`); "ok", or why there is none (never fails create)."""
        try:
            kind_reset.capture(cluster, st.dir, ip6=st.data.get("ip_family", "ipv4") != "ipv4")
        except K8sStateError as exc:
            self.progress(f"kind: no pristine capture of {cluster.name!r}, fresh=True will refuse it: {exc}")
            return f"not captured: {exc}"
        return "ok"

    def reset(self, cluster: Cluster) -> None:
        st = StateFile.load(cluster.name, self.root)
        if st.data.get("pristine", "ok") != "ok":
            raise ProviderError(f"kind cluster {cluster.name!r}: {st.data['pristine']}; delete and create it")
        ip6 = st.data.get("ip_family", "ipv4") != "ipv4"
        kind_reset.reset(cluster, st.dir, ip6=ip6, timeout=30.0)

    def get(self, name: str) -> Cluster:
        self._require_listed(name, "kind cluster")
        st = StateFile.load(name, self.root)
        if not st.data:
            # a cluster created by plain `kind`: adopt it (kubeconfig from kind, mode from the node)
            st.dir.mkdir(parents=True, exist_ok=True)
            kc = self._kind("get", "kubeconfig", "--name", name, timeout=60).text
            (st.dir / "kubeconfig.kind").write_text(kc)
            st.data = {"name": name, "docker_host": self.docker.host, "netns": self.netns, "phase": "ready"}
            st.save()
        return self._cluster(st)

    def orphans(self) -> builtins.list[str]:
        """Clusters of this provider's Docker engine whose creating process is gone (:mod:`.reaper`)."""
        return reaper.orphans(self.root, self.docker.host)

    def reap(self) -> builtins.list[str]:
        """Delete every orphaned cluster (:meth:`orphans`); returns their names. Never raises for one."""
        reaped = []
        for name in self.orphans():
            if not reaper.orphaned(self.root, name, self.docker.host):  # claimed again meanwhile
                continue
            self.progress(f"kind: deleting cluster {name!r} left behind by a process that is gone")
            with contextlib.suppress(K8sStateError, OSError):
                self._delete(name, self.root / name)
                reaped.append(name)
        return reaped

    def export_logs(self, name: str, dest: Path) -> Path:
        """``kind export logs DEST --name NAME``: control-plane pods, kubelet/containerd journals, ..."""
        dest.mkdir(parents=True, exist_ok=True)
        self._kind("export", "logs", str(dest), "--name", name, timeout=300)
        return dest

    # --- internals -------------------------------------------------------------------------------
    def _image_default_cni(self, image: str | None) -> str:
        """``kindnet`` or ``ptp``: what ``image`` runs by default (:data:`~.noderoutes.IMAGE_LABEL`)."""
        if not image:
            return "kindnet"  # kind's own node image
        fmt = '{{index .Config.Labels "' + noderoutes.IMAGE_LABEL + '"}}'
        res = self.docker.run("image", "inspect", "--format", fmt, image, timeout=30, check=False)
        label = res.text.strip() if res.returncode == 0 else ""
        return cni_name(label if label and label != "<no value>" else "kindnet") or "kindnet"

    def _check_family_cni(self, spec: ClusterSpec, opts: KindOptions, image: str | None) -> None:
        """An IPv6 or dual-stack kind cluster needs a pod network of those families: kindnet (kind's own) or
        the node-routes agent (ptp, bridge: one host-local range per family of the node's podCIDRs). The
        flannel set-up here leases IPv4 subnets only."""
        self.check_ip_family(spec.ip_family)
        if spec.ip_family == "ipv4" or opts.disable_default_cni:
            return
        cni = spec.cni or self._image_default_cni(image)
        if cni not in ("kindnet", *noderoutes.DUAL_STACK_MODES):
            raise ConfigError(
                f"kind cluster {spec.name!r}: ip_family={spec.ip_family!r} needs a pod network "
                f"of that family (CNI {cni!r} here assigns IPv4 pod addresses only); use --k8sstate-cni "
                f"{' or '.join(noderoutes.DUAL_STACK_MODES)} (or kindnet)"
            )

    def _cni_to_install(self, spec: ClusterSpec, opts: KindOptions, image: str | None) -> str | None:
        """The node-routes mode to install after create (None: the image's default CNI, or none at all)."""
        self.check_cni(spec.cni)
        if spec.cni is not None and opts.disable_default_cni:
            raise ConfigError(
                f"kind cluster {spec.name!r}: cni={spec.cni!r} and disable_default_cni ask for opposite "
                "things; drop one (disable_default_cni leaves the pod network to you)"
            )
        if spec.cni is None:
            return None
        default = self._image_default_cni(image)
        if spec.cni == default:
            return None
        if spec.cni == "kindnet":
            note = missing_capability_notes(image or "the node image", noderoutes.CONFIGMAP)["kindnet"]
            raise ProviderError(f"kind cluster {spec.name!r}: CNI 'kindnet' is not available: {note}")
        if default != "ptp":  # the agent's own default: images with the node-routes agent
            raise ProviderError(
                f"kind cluster {spec.name!r}: CNI {spec.cni!r} needs the {noderoutes.CONFIGMAP} agent, which "
                f"node image {image or 'kind default'} does not have (its default CNI is kindnet); build one "
                "with `k8sstate image build --default-cni k8sstate-node-routes`"
            )
        return spec.cni

    def _install_node_routes(self, cluster: Cluster, cni: str) -> None:
        """Switch every node's agent on for ``cni`` (the manifest kind would have applied, in that mode);
        flannel: copy flanneld (built on demand, cached by version) into every node first."""
        self.progress(f"kind: installing CNI {cni} ({noderoutes.CONFIGMAP} agent)")
        if cni.startswith("flannel"):
            flanneld = self._flanneld()
            for n in cluster.nodes:
                self.docker.run("cp", str(flanneld), f"{n.name}:{FLANNELD_PATH}", timeout=120)
            text = noderoutes.manifest(
                "flannel",
                backend="host-gw" if cni == "flannel-host-gw" else "vxlan",
                network=self.options.pod_subnet or DEFAULT_POD_SUBNET,
            )
        else:
            text = noderoutes.manifest(cni)
        cluster.control_plane.exec.run(
            ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "apply", "-f", "-"],
            input=text.encode(),
            timeout=120,
        )

    def _flanneld(self) -> Path:
        """flanneld from the binaries cache (built from the Go module proxy the first time, ~5 min)."""
        import pytest_k8sstate.binaries as bins

        try:
            return bins.ensure_binaries(["flanneld"], progress=self.progress)["flanneld"]
        except BinaryError as exc:
            raise ProviderError(f"CNI flannel needs flanneld: {exc}") from exc

    def _check_nodes_running(self, name: str, nodes: Sequence[NodeInfo]) -> None:
        """Every node container is running (one ``docker inspect`` for all): ProviderError naming the rest."""
        res = self.docker.run(
            "inspect", "--format", "{{.Name}}\t{{.State.Status}}", *[n.name for n in nodes], check=False
        )
        status = {}
        for line in res.text.splitlines():
            cname, _, state = line.partition("\t")
            status[cname.strip().lstrip("/")] = state.strip()
        dead = [f"{n.name} ({status.get(n.name, 'gone')})" for n in nodes if status.get(n.name) != "running"]
        if dead:
            raise ProviderError(
                f"kind cluster {name!r} is broken: node container(s) not running: {', '.join(dead)}; "
                f"to recover, delete it with `k8sstate cluster delete --name {name} --provider kind` and run "
                "again"
            )

    def _check_alive(self, name: str, nodes: Sequence[NodeInfo], mode: str, cni: str | None) -> None:
        """Node containers running, and in them the kubelet, kube-proxy, the CNI agent (:mod:`.liveness`)."""
        comps = liveness.expected_components(mode, cni)
        # the probe runs in each node's long-lived shell (node/session.py) when there is one
        execs: list[tuple[str, NodeExec]] = [
            (n.name, SessionExec(n.exec) if isinstance(n.exec, DockerExec) else n.exec) for n in nodes
        ]
        if all(isinstance(n.exec, DockerExec) and n.exec.session_alive() for n in nodes):
            # every node's shell ran a moment ago, so did its container: `docker inspect` only when the
            # probe could not look inside one (a stopped container first: the clearer message)
            dead = liveness.probe(execs, comps)
            if any(c.name == "node" for ds in dead.values() for c, _ in ds):
                self._check_nodes_running(name, nodes)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:  # both at once: a snapshot waits for the slower
                inside = pool.submit(liveness.probe, execs, comps)
                self._check_nodes_running(name, nodes)  # a stopped container first: the clearer message
                dead = inside.result()
        liveness.check_components(name, execs, comps, dead=dead)

    def _default_cni_of(self, container: str) -> str:
        """``kindnet``, or what the node image's :data:`~.noderoutes.IMAGE_LABEL` names (images built by
        :mod:`.image`); kind's own images have no such label and run kindnet."""
        fmt = '{{index .Config.Labels "' + noderoutes.IMAGE_LABEL + '"}}'
        try:
            res = self.docker.run("inspect", "--format", fmt, container, timeout=30)
        except CommandError as exc:
            raise ProviderError(
                f"cannot read the default-CNI label of node container {container}: {exc}"
            ) from exc
        label = res.text.strip()
        return label if label and label != "<no value>" else "kindnet"

    def _export_failure_logs(self, name: str) -> str:
        root = self.options.artifacts_dir or (self.root.parent / "kind-logs")
        dest = root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            return str(self.export_logs(name, dest))
        except (CommandError, ProviderError, OSError) as exc:
            return f"(kind export logs failed: {exc})"

    def _delete(self, name: str, state_dir: Path, settle: float = 0.0) -> None:
        """``kind delete cluster``, then any container of the cluster still there is removed; with
        ``settle`` > 0 that check repeats for as long (after an interrupted create: Ctrl-C kills kind and its
        `docker run` clients, and the engine may finish a container after `kind delete` listed the nodes)."""
        stop_forwarder(state_dir)
        node_name = re.compile(re.escape(name) + r"-(control-plane|worker)\d*")
        session.close_sessions(lambda argv: any(node_name.fullmatch(a) for a in argv))
        with contextlib.suppress(CommandError, ProviderError):
            self._kind("delete", "cluster", "--name", name, timeout=180)
        label = f"label={CLUSTER_LABEL}={name}"
        deadline = time.monotonic() + settle
        while True:
            res = self.docker.run("ps", "-aq", "--filter", label, timeout=30, check=False)
            left = res.text.split() if res.returncode == 0 else []
            if left:
                self.docker.run("rm", "-f", "-v", *left, timeout=120, check=False)
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        shutil.rmtree(state_dir, ignore_errors=True)

    def _cluster(self, st: StateFile) -> Cluster:
        rows = self.docker.containers(f"{CLUSTER_LABEL}={st.name}", ROLE_LABEL)
        rows = [r for r in rows if r["role"] in ("control-plane", "worker")]
        if not rows:
            raise ProviderError(f"kind cluster {st.name!r} has no node containers at {self.docker.where}")
        rows.sort(key=lambda r: (r["role"] != "control-plane", r["name"]))
        nodes = [
            NodeInfo(r["name"], r["role"], DockerExec(r["name"], host=self.docker.host), r["ip"])
            for r in rows
        ]
        cp = nodes[0]
        if cp.role != "control-plane":
            raise ProviderError(f"kind cluster {st.name!r} has no control-plane container")
        mode = st.data.get("proxy_mode")
        if not mode:
            conf = cp.exec.run(["cat", "/kind/kubeadm.conf"], check=False, timeout=20)
            mode = proxy_mode_from_kubeadm_conf(conf.text)
            st.data["proxy_mode"] = mode
        netns = st.data.get("netns")
        kc, api_server, etcd = attach_control_plane(
            st.dir, netns, cp, KUBEADM_CERTS, st.dir / "kubeconfig.kind", api_port=6443
        )
        cni: str | None = None  # the default CNI (None: disabled)
        if st.data.get("default_cni", True):
            cni = str(st.data.get("cni") or "") or self._default_cni_of(cp.name)
            st.data["cni"] = cni
        if not st.data.get("version"):
            res = cp.exec.run(["kubelet", "--version"], check=False, timeout=20)
            st.data["version"] = res.text.strip().rpartition(" ")[2] if res.returncode == 0 else ""
        st.save()
        return Cluster(
            name=st.name,
            provider=self.name,
            kubeconfig=kc,
            api_server=api_server,
            nodes=nodes,
            etcd=etcd,
            capabilities=capabilities_for(
                str(mode),
                default_cni=cni is not None,
                ipvs_kernel=ipvs_in_kernel(),
                kindnet=cni_name(cni) == "kindnet",
                cni=cni_name(cni),
            )
            | family_capabilities(str(st.data.get("ip_family") or "ipv4")),
            proxy_mode=str(mode),
            version=str(st.data.get("version") or ""),
            check_alive=lambda: self._check_alive(st.name, nodes, str(mode), cni_name(cni)),
            details={
                "dir": str(st.dir),
                "docker_host": self.docker.host,
                "netns": netns,
                "image": st.data.get("image"),
                "default_cni": cni,
                "ip_family": str(st.data.get("ip_family") or "ipv4"),
                "missing_capabilities": missing_capability_notes(
                    str(st.data.get("image") or "the node image"), cni
                ),
            },
        )
