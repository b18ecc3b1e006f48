"""The ``kind`` provider: Kubernetes in Docker node containers, created by the ``kind`` CLI.

* **Config** -- :func:`kind_config` turns a :class:`~.base.ClusterSpec` plus :class:`KindOptions` into kind's
  ``kind.x-k8s.io/v1alpha4`` Cluster (one control-plane, ``spec.nodes`` workers, ``kubeProxyMode``,
  ``disableDefaultCNI``, pod/service subnets, node image, kubeadm patches); :func:`create_argv` is the
  ``kind create cluster`` command line. Both are pure and unit-tested.
* **kind binary** -- ``KindOptions.kind_binary``, else ``kind`` on PATH, else the binaries cache (pinned
  ``binaries.DEFAULT_KIND_VERSION``, override with ``K8SSTATE_KIND_VERSION``), else
  built.
* **Node exec** -- ``docker [--host H] exec -i <node container>`` (:class:`~..nodeexec.DockerExec`).
* **etcd** -- the control-plane's kubeadm etcd, reached *without changing the cluster*: the etcd CA and the
  apiserver's etcd client certificate are read out of the node (``docker exec cat /etc/kubernetes/pki/...``)
  into the provider's state dir, and the plugin's gRPC client connects to ``<control-plane IP>:2379``
  (kubeadm's etcd listens on 127.0.0.1 and the node IP). Nothing is added to the cluster (no pod, no service,
  no ``kubectl port-forward``); paging at one revision works as with every other provider. (An ``etcdctl``
  exec inside the etcd container would need crictl and is 5x slower to parse.)
* **Reachability** -- when the Docker engine is the project's own (:mod:`.docker_engine`, in network namespace
  ``k8ss-docker``) container IPs are reachable only inside that namespace: a :mod:`..portforward` process
  on the root namespace's 127.0.0.1 forwards to the apiserver (``:6443``) and etcd (``:2379``) of the
  control-plane, and the provider's kubeconfig points at it (TLS names: the apiserver has SANs
  ``localhost``/``127.0.0.1``, etcd's server certificate ``127.0.0.1``).
  With a normal Docker engine the kubeconfig kind wrote and the container IP are used directly.
* **Logs** -- ``kind export logs`` (control-plane static pods, kubelet and containerd journals, ...) into the
  artifacts dir: automatically when create fails, and on demand with :meth:`KindProvider.export_logs`.

State per cluster: ``<cache>/kind-clusters/<name>/`` (``state.json``, ``config.yaml``, ``kubeconfig``,
``kubeconfig.kind``, ``pki/``, ``forward.json``).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

import pytest_k8sstate.providers.docker.engine as docker_engine
import pytest_k8sstate.providers.local.state as local_state
from pytest_k8sstate.errors import BinaryError, CommandError, ConfigError, K8sStateError, ProviderError
from pytest_k8sstate.node.exec import CommandResult, DockerExec, run_command
from pytest_k8sstate.providers.base import (
    PROXY_MODES,
    Cluster,
    ClusterSpec,
    NodeInfo,
    Progress,
    Provider,
    stderr_progress,
)
from pytest_k8sstate.providers.kind import noderoutes

__all__ = [
    "CLUSTER_LABEL",
    "ROLE_LABEL",
    "DockerCli",
    "KindOptions",
    "KindProvider",
    "NodeCerts",
    "StateFile",
    "capabilities_for",
    "create_argv",
    "deployment_available",
    "host_cgroup_v1",
    "inotify_warning",
    "kind_config",
    "kind_error_summary",
    "kind_node_names",
    "not_ready",
    "provider",
    "proxy_mode_from_kubeadm_conf",
    "render_config",
]

CLUSTER_LABEL = "io.x-k8s.kind.cluster"
ROLE_LABEL = "io.x-k8s.kind.role"
KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
KUBEADM_PKI = "/etc/kubernetes/pki"
IMAGE_ENV = "K8SSTATE_KIND_IMAGE"
DEFAULT_WAIT = 300.0
BASE_CAPABILITIES = frozenset({"container-runtime", "kubelet", "iptables", "nftables", "etcd"})
_CIDR_RE = re.compile(r"^[0-9a-fA-F:.]+/\d{1,3}$")


def provider(**options: Any) -> KindProvider:
    return KindProvider(**options)


# --------------------------------------------------------------------------------------------------
# options and pure construction
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KindOptions:
    """kind-specific options besides :class:`~.base.ClusterSpec`."""

    image: str | None = None
    """Node image (``kindest/node:v1.37.1`` or a locally built one); default ``$K8SSTATE_KIND_IMAGE``, then
    ``kindest/node:<spec.version>`` when a version is given, else kind's own default."""
    disable_default_cni: bool = False
    pod_subnet: str | None = None
    service_subnet: str | None = None
    kubeadm_config_patches: tuple[str, ...] = ()
    """Cluster-wide kubeadm patches (YAML strategic-merge documents, as in kind's config)."""
    control_plane_patches: tuple[str, ...] = ()
    """kubeadm patches of the control-plane node only."""
    allow_cgroup_v1: bool | None = None
    """Add ``failCgroupV1: false`` to every kubelet's config (kubelet >= 1.35 refuses cgroup v1 hosts
    otherwise). None = when this host has cgroup v1 (:func:`host_cgroup_v1`)."""
    wait: float = DEFAULT_WAIT
    """``kind create cluster --wait`` (control-plane Ready) in seconds; 0 = don't wait."""
    kind_binary: str | None = None
    kind_version: str | None = None
    docker_host: str | None = None
    """``DOCKER_HOST`` for docker and kind; default ``$DOCKER_HOST``, else the project's engine if running."""
    docker_netns: str | None = None
    """Network namespace of the engine's containers (auto: the project engine's ``k8ss-docker``)."""
    artifacts_dir: Path | None = None
    """Where ``kind export logs`` goes when create fails (default ``<cache>/kind-logs``)."""

    def __post_init__(self) -> None:
        for name in ("pod_subnet", "service_subnet"):
            v = getattr(self, name)
            if v is not None and not _CIDR_RE.match(v):
                raise ConfigError(f"kind option {name}={v!r}: expected a CIDR like 10.244.0.0/16")
        for i, patch in enumerate((*self.kubeadm_config_patches, *self.control_plane_patches)):
            try:
                doc = yaml.safe_load(patch)
            except yaml.YAMLError as exc:
                raise ConfigError(f"kind kubeadm patch #{i + 1} is not valid YAML: {exc}") from exc
            if not isinstance(doc, dict) or "kind" not in doc:
                raise ConfigError(
                    f"kind kubeadm patch #{i + 1} must be a YAML mapping with a 'kind' "
                    "(e.g. 'kind: ClusterConfiguration'), got {patch[:60]!r}"
                )
        if self.wait < 0:
            raise ConfigError(f"kind option wait={self.wait!r}: expected seconds >= 0")


def node_image(spec: ClusterSpec, opts: KindOptions, env: Mapping[str, str] | None = None) -> str | None:
    """The node image to use (None: kind's default)."""
    environ = os.environ if env is None else env
    if opts.image:
        return opts.image
    from_env = environ.get(IMAGE_ENV, "").strip()
    if from_env:
        return from_env
    if spec.version:
        return f"kindest/node:v{spec.version.removeprefix('v')}"
    return None


def kind_config(spec: ClusterSpec, opts: KindOptions, image: str | None = None) -> dict[str, Any]:
    """kind's Cluster config for ``spec`` (one control-plane + ``spec.nodes`` workers)."""
    if spec.proxy_mode not in PROXY_MODES:  # pragma: no cover - ClusterSpec validates
        raise ConfigError(f"proxy mode {spec.proxy_mode!r}")
    cp: dict[str, Any] = {"role": "control-plane"}
    if opts.control_plane_patches:
        cp["kubeadmConfigPatches"] = list(opts.control_plane_patches)
    nodes = [cp] + [{"role": "worker"} for _ in range(spec.nodes)]
    if image:
        for n in nodes:
            n["image"] = image
    networking: dict[str, Any] = {"kubeProxyMode": spec.proxy_mode}
    if opts.disable_default_cni:
        networking["disableDefaultCNI"] = True
    if opts.pod_subnet:
        networking["podSubnet"] = opts.pod_subnet
    if opts.service_subnet:
        networking["serviceSubnet"] = opts.service_subnet
    cfg: dict[str, Any] = {
        "kind": "Cluster",
        "apiVersion": KIND_API_VERSION,
        "name": spec.name,
        "networking": networking,
        "nodes": nodes,
    }
    patches = list(opts.kubeadm_config_patches)
    if opts.allow_cgroup_v1:
        patches.append(CGROUP_V1_PATCH)
    if patches:
        cfg["kubeadmConfigPatches"] = patches
    return cfg


CGROUP_V1_PATCH = "kind: KubeletConfiguration\nfailCgroupV1: false\n"


def host_cgroup_v1(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """True when ``cgroup_root`` is not a unified (v2) hierarchy."""
    return not (cgroup_root / "cgroup.controllers").exists()


def render_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=False)


def create_argv(
    kind: str,
    name: str,
    config: Path,
    kubeconfig: Path,
    *,
    image: str | None = None,
    wait: float = DEFAULT_WAIT,
    retain: bool = True,
) -> list[str]:
    """``kind create cluster`` for ``name`` (``--retain``: keep failed nodes so logs can be exported)."""
    argv = [
        kind,
        "create",
        "cluster",
        "--name",
        name,
        "--config",
        str(config),
        "--kubeconfig",
        str(kubeconfig),
    ]
    if image:
        argv += ["--image", image]
    if wait > 0:
        argv += ["--wait", f"{round(wait)}s"]
    if retain:
        argv.append("--retain")
    return argv


def kind_error_summary(stderr: str, limit: int = 3) -> str:
    """The useful lines of a failed kind command (``ERROR: ...``, ``Command Output: ...``), not its stack."""
    keep = [ln.strip() for ln in stderr.splitlines() if ln.startswith(("ERROR:", "Command Output:"))]
    if not keep:
        keep = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("\t", " "))][
            -1:
        ]
    text = " | ".join(keep[:limit]) or "(no output)"
    return text if len(text) <= 600 else text[:597] + "..."


def missing_names(
    list_json: str, expected: Sequence[str], where: Callable[[dict[str, Any]], bool] | None = None
) -> list[str]:
    """Names in ``expected`` with no item (satisfying ``where``) in a ``kubectl get … -o json`` list."""
    try:
        items = json.loads(list_json).get("items") or []
    except (ValueError, AttributeError):
        return list(expected)
    have = {
        (item.get("metadata") or {}).get("name")
        for item in items
        if isinstance(item, dict) and (where is None or where(item))
    }
    return [n for n in expected if n not in have]


def _node_ready(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def not_ready(nodes_json: str, expected: Sequence[str]) -> list[str]:
    """Names in ``expected`` whose Node is missing or not Ready in ``kubectl get nodes -o json``."""
    return missing_names(nodes_json, expected, _node_ready)


def deployment_available(deployment_json: str) -> bool:
    """True when every desired replica of the Deployment is available."""
    try:
        d = json.loads(deployment_json)
        want = int((d.get("spec") or {}).get("replicas", 1))
        have = int((d.get("status") or {}).get("availableReplicas") or 0)
    except (ValueError, AttributeError, TypeError):
        return False
    return have >= want


INOTIFY_INSTANCES = 512


def inotify_warning(max_user_instances: int | None) -> str | None:
    """kind's known issue: every node's systemd/kubelet/containerd use inotify instances; with the
    kernel default (128) kubelets of later nodes die with "inotify_init: too many open files"."""
    if max_user_instances is None or max_user_instances >= INOTIFY_INSTANCES:
        return None
    return (
        f"fs.inotify.max_user_instances is {max_user_instances}: with several kind nodes on this machine "
        "kubelets fail with 'inotify_init: too many open files'; raise it with "
        f"`sysctl -w fs.inotify.max_user_instances={INOTIFY_INSTANCES}` (kind's known issue)"
    )


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kind_node_names(cluster: str, workers: int) -> list[str]:
    """Container names kind gives the nodes: ``C-control-plane``, ``C-worker``, ``C-worker2``, ..."""
    return [f"{cluster}-control-plane"] + [
        f"{cluster}-worker" + ("" if i == 1 else str(i)) for i in range(1, workers + 1)
    ]


def proxy_mode_from_kubeadm_conf(text: str, source: str = "/kind/kubeadm.conf") -> str:
    """kube-proxy's mode from the kubeadm config kind writes into the node (default ``iptables``)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        docs = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "KubeProxyConfiguration":
            mode = d.get("mode") or "iptables"
            return str(mode)
    return "iptables"


def missing_capability_notes(image: str, default_cni: str | None) -> dict[str, str]:
    """Why a cluster lacks a capability its provider usually has (for the skip message)."""
    if default_cni == noderoutes.CONFIGMAP:
        return {
            "kindnet": f"{image} has {noderoutes.CONFIGMAP} as its default CNI, not kindnetd (it was built "
            "without a kindnetd binary, which cannot be built from the Go module proxy); build the image "
            "with --kindnetd PATH, see docs/kind-on-restricted-machines.md"
        }
    return {}


def kind_create_running(name: str, proc: Path = Path("/proc")) -> bool:
    """True while a ``kind create cluster --name NAME`` process exists (read from ``/proc/*/cmdline``)."""
    needle = f"create\0cluster\0--name\0{name}\0".encode()
    with contextlib.suppress(OSError):
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def ipvs_in_kernel(proc: Path = Path("/proc")) -> bool:
    """True when this kernel has IPVS (``/proc/net/ip_vs`` exists or the module is loaded)."""
    return (proc / "net" / "ip_vs").exists() or Path("/sys/module/ip_vs").exists()


def capabilities_for(
    proxy_mode: str, *, default_cni: bool, ipvs_kernel: bool, kindnet: bool = True
) -> frozenset[str]:
    """``kindnet=False``: the default CNI is :mod:`...noderoutes` (node images built without kindnetd)."""
    caps = set(BASE_CAPABILITIES)
    if default_cni:
        caps |= {"cni", "kindnet"} if kindnet else {"cni"}
    if ipvs_kernel and proxy_mode == "ipvs":
        caps.add("ipvs")
    return frozenset(caps)


# --------------------------------------------------------------------------------------------------
# docker
# --------------------------------------------------------------------------------------------------
@dataclass
class DockerCli:
    """The ``docker`` CLI against one engine."""

    host: str | None = None
    docker: str = "docker"

    def env(self) -> dict[str, str]:
        return docker_engine.docker_env(self.host)

    def argv(self, *args: str) -> list[str]:
        return [self.docker, *(["--host", self.host] if self.host else []), *args]

    def run(self, *args: str, timeout: float = 60.0, check: bool = True) -> CommandResult:
        return run_command(self.argv(*args), timeout=timeout, check=check, where=f"docker ({self.where})")

    @property
    def where(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST") or "default engine"

    def require(self) -> None:
        if shutil.which(self.docker) is None:
            raise ProviderError(
                f"{self.docker!r} not found on PATH; install Docker (Debian: apt-get install docker.io)"
            )
        res = self.run("version", "--format", "{{.Server.Version}}", timeout=20, check=False)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            raise ProviderError(
                f"no Docker engine answers at {self.where} ({err[-1] if err else 'no output'}); start one "
                "(restricted machines: `scripts/docker-setup.sh start`, then export DOCKER_HOST) "
                "or set DOCKER_HOST"
            )

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, timeout=30, check=False).returncode == 0

    def containers(self, label: str) -> list[dict[str, str]]:
        """``name``, ``role``, ``ip`` (first network), ``state`` of containers with ``label``."""
        res = self.run("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}", timeout=30)
        names = res.text.split()
        if not names:
            return []
        fmt = (
            '{{.Name}}\t{{index .Config.Labels "' + ROLE_LABEL + '"}}\t{{.State.Status}}\t'
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        )
        res = self.run("inspect", "--format", fmt, *names, timeout=30, check=False)
        if res.returncode != 0:
            # a container listed a moment ago may be gone (or not inspectable yet) while kind creates or
            # deletes nodes: inspect one by one and leave those out
            text = ""
            for name in names:
                one = self.run("inspect", "--format", fmt, name, timeout=30, check=False)
                if one.returncode == 0:
                    text += one.text
                elif "No such object" not in one.stderr.decode(errors="replace"):
                    text += self.run("inspect", "--format", fmt, name, timeout=30).text  # or raises
            return parse_inspect_lines(text)
        return parse_inspect_lines(res.text)


def parse_inspect_lines(text: str) -> list[dict[str, str]]:
    """Parse ``NAME\\tROLE\\tSTATE\\tIP ...`` lines from :meth:`DockerCli.containers`."""
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        ips = parts[3].split()
        rows.append(
            {
                "name": parts[0].lstrip("/"),
                "role": parts[1] or "worker",
                "state": parts[2],
                "ip": ips[0] if ips else "",
            }
        )
    return rows


def resolve_docker(host: str | None, netns: str | None) -> tuple[str | None, str | None]:
    """(``DOCKER_HOST``, container network namespace) to use: explicit, ``$DOCKER_HOST``, project engine."""
    proj = docker_engine.EngineConfig()
    if host is None:
        host = os.environ.get("DOCKER_HOST") or None
    if host is None:
        host = docker_engine.detect(proj)
    if netns is None and host == proj.host:
        netns = proj.netns
    return host, netns


# --------------------------------------------------------------------------------------------------
# forwarder (project engine only)
# --------------------------------------------------------------------------------------------------
def _proc_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "portforward" in cmdline and marker in cmdline


def ensure_forwarder(state_dir: Path, netns: str, targets: Sequence[str], timeout: float = 20.0) -> list[int]:
    """A running :mod:`..portforward` for ``targets`` (``IP:PORT``); returns its local ports (reused)."""
    ready = state_dir / "forward.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads(ready.read_text())
        if info.get("targets") == list(targets) and _proc_alive(int(info["pid"]), str(state_dir)):
            return [int(p) for p in info["ports"]]
    stop_forwarder(state_dir)
    tmp_ready = state_dir / "forward.ready"
    with contextlib.suppress(OSError):
        tmp_ready.unlink()
    script = Path(__file__).resolve().parent.parent / "portforward.py"
    argv = [sys.executable, str(script), "--netns", netns, "--ready-file", str(tmp_ready)]
    for t in targets:
        argv += ["--map", f"127.0.0.1:0={t}"]
    log = open(state_dir / "forward.log", "ab")
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()
    try:
        deadline = time.monotonic() + timeout
        while not tmp_ready.exists():
            if proc.poll() is not None:
                raise ProviderError(
                    f"port forwarder into {netns} exited ({proc.returncode}); see {state_dir / 'forward.log'}"
                )
            if time.monotonic() > deadline:
                raise ProviderError(f"port forwarder into {netns} not ready within {timeout:g}s")
            time.sleep(0.05)
        got = json.loads(tmp_ready.read_text())
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        raise
    info = {"pid": proc.pid, "ports": got["ports"], "targets": list(targets), "netns": netns}
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, ready)
    return [int(p) for p in got["ports"]]


def stop_forwarder(state_dir: Path) -> None:
    ready = state_dir / "forward.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        info = json.loads(ready.read_text())
        pid = int(info["pid"])
        if _proc_alive(pid, str(state_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        ready.unlink()


def rewrite_kubeconfig_server(text: str, server: str, source: str = "kubeconfig") -> str:
    """``text`` with every cluster's ``server`` replaced by ``server``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProviderError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("clusters"), list):
        raise ProviderError(f"{source}: expected a kubeconfig with a 'clusters' list")
    for c in doc["clusters"]:
        if isinstance(c, dict) and isinstance(c.get("cluster"), dict):
            c["cluster"]["server"] = server
    return yaml.safe_dump(doc, sort_keys=False)


def kubeconfig_server(text: str) -> str:
    with contextlib.suppress(yaml.YAMLError, KeyError, IndexError, TypeError):
        doc = yaml.safe_load(text)
        return str(doc["clusters"][0]["cluster"]["server"])
    return ""


# --------------------------------------------------------------------------------------------------
# shared by kind and minikube: a cluster of docker node containers with kubeadm PKI
# --------------------------------------------------------------------------------------------------
@dataclass
class NodeCerts:
    """Where the etcd CA and a client certificate live inside the control-plane node."""

    ca: str
    cert: str
    key: str


KIND_CERTS = NodeCerts(
    ca=f"{KUBEADM_PKI}/etcd/ca.crt",
    cert=f"{KUBEADM_PKI}/apiserver-etcd-client.crt",
    key=f"{KUBEADM_PKI}/apiserver-etcd-client.key",
)


def attach_endpoints(
    state_dir: Path, netns: object, node_ip: str, tool_kubeconfig: Path, *, api_port: int
) -> tuple[Path, str, str]:
    """The API server and etcd endpoints of a node container, and a kubeconfig for them.

    With a project-owned engine (``netns`` set) the container IPs exist only inside that namespace, so a
    loopback forwarder (``portforward.py``) is started and the tool's kubeconfig is rewritten to it;
    otherwise the tool's kubeconfig and the container IP are used as they are. Returns
    ``(kubeconfig path, api server URL, etcd endpoint)``."""
    tool_kc = tool_kubeconfig.read_text()
    if netns:
        api, etcd = ensure_forwarder(state_dir, str(netns), [f"{node_ip}:{api_port}", f"{node_ip}:2379"])
        api_server, etcd_ep = f"https://127.0.0.1:{api}", f"https://127.0.0.1:{etcd}"
        kc_text = rewrite_kubeconfig_server(tool_kc, api_server, str(tool_kubeconfig))
    else:
        api_server, etcd_ep, kc_text = kubeconfig_server(tool_kc), f"https://{node_ip}:2379", tool_kc
    kc = state_dir / "kubeconfig"
    fd = os.open(kc, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(kc_text)
    return kc, api_server, etcd_ep


def copy_node_certs(node: DockerExec, certs: NodeCerts, dest: Path) -> tuple[Path, Path, Path]:
    """Read the etcd CA + client cert/key out of ``node`` into ``dest`` (keys 0600). Read-only on the node."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = []
    for src, fname in (
        (certs.ca, "etcd-ca.crt"),
        (certs.cert, "etcd-client.crt"),
        (certs.key, "etcd-client.key"),
    ):
        res = node.run(["cat", src], timeout=20, check=False)
        if res.returncode != 0 or not res.stdout:
            raise ProviderError(
                f"cannot read {src} on node {node.node}: {res.stderr.decode(errors='replace').strip()}; "
                "is this a kubeadm control-plane node?"
            )
        p = dest / fname
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(res.stdout)
        out.append(p)
    return out[0], out[1], out[2]


@dataclass
class StateFile:
    """``<root>/<name>/state.json``: what the provider recorded about one cluster."""

    name: str
    dir: Path
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.dir / "state.json")

    @classmethod
    def load(cls, name: str, root: Path) -> StateFile:
        d = root / name
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads((d / "state.json").read_text())
            if isinstance(loaded, dict):
                data = loaded
        return cls(name, d, data)


def state_root(kind: str) -> Path:
    from pytest_k8sstate.binaries.install import cache_dir

    return cache_dir() / f"{kind}-clusters"


# --------------------------------------------------------------------------------------------------
# the provider
# --------------------------------------------------------------------------------------------------
class KindProvider(Provider):
    name = "kind"
    capabilities = capabilities_for("iptables", default_cni=True, ipvs_kernel=False)

    def __init__(
        self,
        options: KindOptions | None = None,
        progress: Progress | None = None,
        **kw: Any,
    ) -> None:
        self.options = options or KindOptions(**kw)
        self.progress: Progress = progress or stderr_progress
        host, netns = resolve_docker(self.options.docker_host, self.options.docker_netns)
        self.docker = DockerCli(host)
        self.netns = netns
        self.root = state_root("kind")

    # --- binary ----------------------------------------------------------------------------------
    def kind_binary(self) -> str:
        if self.options.kind_binary:
            return self.options.kind_binary
        on_path = shutil.which("kind")
        if on_path and not self.options.kind_version:
            return on_path
        import pytest_k8sstate.binaries.install as bins

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
        self.docker.require()
        opts = self.options
        if spec.proxy_mode == "ipvs" and not ipvs_in_kernel():
            raise ProviderError(
                f"kind cluster {spec.name!r}: proxy mode ipvs needs the kernel's ip_vs module, which this "
                "kernel lacks (/proc/net/ip_vs missing); use --proxy-mode iptables or nftables"
            )
        self.reap()
        if spec.name in self.list():
            raise ProviderError(
                f"kind cluster {spec.name!r} already exists; delete it (`k8sstate cluster delete --name "
                f"{spec.name}`) or pick another name"
            )
        warn = inotify_warning(_read_int(Path("/proc/sys/fs/inotify/max_user_instances")))
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
        st = StateFile(spec.name, self.root / spec.name)
        stop_forwarder(st.dir)  # leftovers of an earlier cluster of this name
        shutil.rmtree(st.dir, ignore_errors=True)
        st.dir.mkdir(parents=True, exist_ok=True)
        cfg_path = st.dir / "config.yaml"
        cfg_path.write_text(render_config(kind_config(spec, opts, image)))
        st.data = {
            "name": spec.name,
            "proxy_mode": spec.proxy_mode,
            "image": image,
            "default_cni": not opts.disable_default_cni,
            "docker_host": self.docker.host,
            "netns": self.netns,
            "persistent": spec.persistent,
            # the creator owns every cluster while it is being created (a killed create is reaped);
            # a persistent one has no owner once ready
            "owner_pid": os.getpid(),
            "owner_start": local_state.proc_start_time(os.getpid()),
            "phase": "creating",
        }
        st.save()
        t0 = time.monotonic()
        argv = create_argv(
            self.kind_binary(), spec.name, cfg_path, st.dir / "kubeconfig.kind", image=image, wait=opts.wait
        )
        self.progress(f"kind: {' '.join(argv)}")
        try:
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
            # kind --wait covers control-plane nodes only: wait for every node and CoreDNS as well
            self._wait_ready(cluster, timeout=max(opts.wait, 60.0))
            st.data["phase"] = "ready"
            if spec.persistent:
                st.data["owner_pid"] = st.data["owner_start"] = None
            st.save()
            if spec.kubeconfig_out is not None:
                spec.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cluster.kubeconfig, spec.kubeconfig_out)
        except BaseException:
            self.progress(f"kind: create of {spec.name!r} did not finish; removing what it made")
            self._delete(spec.name, st.dir, settle=10.0)
            raise
        self.progress(
            f"kind cluster {spec.name!r} ready ({time.monotonic() - t0:.1f}s): {cluster.kubeconfig}"
        )
        return cluster

    def delete(self, name: str) -> None:
        self._delete(name, self.root / name)

    def get(self, name: str) -> Cluster:
        names = self.list()
        if name not in names:
            raise ProviderError(
                f"no kind cluster {name!r}; known kind clusters: {', '.join(names) or '(none)'}"
            )
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
        """Clusters this provider created for a test session (or a create) whose process is gone: killed,
        crashed, or ended without teardown. ``persistent`` clusters (``k8sstate cluster create``) have no
        owner once ready and stay until deleted. Only clusters of this provider's Docker engine are
        considered, and none whose ``kind create cluster`` is still running (it goes on in its own session
        after its owner died; deleting under it would leave the nodes it creates afterwards)."""
        out: builtins.list[str] = []
        with contextlib.suppress(OSError):
            for d in sorted(self.root.iterdir()):
                if self._orphaned(d.name):
                    out.append(d.name)
        return out

    def _orphaned(self, name: str) -> bool:
        st = StateFile.load(name, self.root)
        pid = st.data.get("owner_pid")
        if not isinstance(pid, int) or st.data.get("docker_host") != self.docker.host:
            return False
        start = st.data.get("owner_start")
        if local_state.alive(pid, start if isinstance(start, int) else None):
            return False
        return not kind_create_running(name)

    def reap(self) -> builtins.list[str]:
        """Delete every orphaned cluster (:meth:`orphans`); returns their names. Never raises for one."""
        reaped = []
        for name in self.orphans():
            if not self._orphaned(name):  # claimed again meanwhile (a new session with the same name)
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
    def _wait_ready(self, cluster: Cluster, timeout: float) -> None:
        """Every node Ready with its Lease, and CoreDNS available (kubectl in the control-plane node)."""
        cp = cluster.control_plane.exec
        kubectl = ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf"]
        deadline = time.monotonic() + timeout
        problem = "not checked yet"
        while True:
            names = [n.name for n in cluster.nodes]
            res = cp.run([*kubectl, "get", "nodes", "-o", "json"], check=False, timeout=30)
            waiting = not_ready(res.text, names) if res.returncode == 0 else ["api"]
            if not waiting:
                # a kubelet may report Ready before its node Lease exists: snapshots of a "ready" cluster
                # must not depend on that race (finding 6 compares the keys of two clusters)
                res = cp.run(
                    [*kubectl, "-n", "kube-node-lease", "get", "leases", "-o", "json"],
                    check=False,
                    timeout=30,
                )
                waiting = (
                    [f"lease {n}" for n in missing_names(res.text, names)] if res.returncode == 0 else ["api"]
                )
            if not waiting:
                dns = cp.run(
                    [*kubectl, "-n", "kube-system", "get", "deployment", "coredns", "-o", "json"],
                    check=False,
                    timeout=30,
                )
                if dns.returncode != 0 or deployment_available(dns.text):
                    return  # no CoreDNS deployment (custom config): nothing to wait for
                waiting = ["coredns"]
            problem = ", ".join(waiting)
            if time.monotonic() > deadline:
                hint = ""
                if cluster.details.get("default_cni") == noderoutes.CONFIGMAP:
                    hint = f" and `journalctl -u {noderoutes.UNIT_NAME}` in a node"
                raise ProviderError(
                    f"kind cluster {cluster.name!r}: not ready within {timeout:g}s (waiting for {problem}); "
                    f"see `kind export logs --name {cluster.name}`{hint}"
                )
            time.sleep(1.0)

    def _default_cni_of(self, container: str) -> str:
        """``kindnet``, or what the node image's :data:`~...noderoutes.IMAGE_LABEL` names (images built by
        :mod:`...kindimage`); kind's own images have no such label and run kindnet."""
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
        root = self.options.artifacts_dir or (state_root("kind").parent / "kind-logs")
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
        from pytest_k8sstate.etcd.capture import EtcdTarget

        rows = self.docker.containers(f"{CLUSTER_LABEL}={st.name}")
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
        assert isinstance(cp.exec, DockerExec)
        ca, cert, key = copy_node_certs(cp.exec, KIND_CERTS, st.dir / "pki")
        mode = st.data.get("proxy_mode")
        if not mode:
            conf = cp.exec.run(["cat", "/kind/kubeadm.conf"], check=False, timeout=20)
            mode = proxy_mode_from_kubeadm_conf(conf.text)
            st.data["proxy_mode"] = mode
        netns = st.data.get("netns")
        kc, api_server, etcd_ep = attach_endpoints(
            st.dir, netns, cp.ip, st.dir / "kubeconfig.kind", api_port=6443
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
            etcd=EtcdTarget(endpoints=(etcd_ep,), ca=ca, cert=cert, key=key),
            capabilities=capabilities_for(
                str(mode),
                default_cni=cni is not None,
                ipvs_kernel=ipvs_in_kernel(),
                kindnet=cni != noderoutes.CONFIGMAP,
            ),
            proxy_mode=str(mode),
            version=str(st.data.get("version") or ""),
            details={
                "dir": str(st.dir),
                "docker_host": self.docker.host,
                "netns": netns,
                "image": st.data.get("image"),
                "default_cni": cni,
                "missing_capabilities": missing_capability_notes(
                    str(st.data.get("image") or "the node image"), cni
                ),
            },
        )
