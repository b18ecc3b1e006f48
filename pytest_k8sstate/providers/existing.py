"""The ``existing`` provider: any cluster a kubeconfig reaches (bring your own cluster).

Nothing is created or deleted: ``create`` attaches (and checks the API answers), ``delete`` removes only
what the plugin added (the debug namespace :data:`DEBUG_NAMESPACE` and its pods). Cluster names are
kubeconfig context names.

* **Node state** -- one privileged debug pod per node, as ``kubectl debug node/NODE --profile=sysadmin``
  makes it: ``nodeName`` pinned, ``hostNetwork``/``hostPID``/``hostIPC``, privileged, the node's ``/``
  mounted at ``/host``, every taint tolerated, ``activeDeadlineSeconds`` so a forgotten pod ends by itself.
  Commands run as ``kubectl exec -i POD -- chroot /host ARGV`` (:class:`DebugPodExec`), i.e. with the
  node's own iptables-save/nft/ip binaries in the node's network namespace. The pod is created on first use.
* **etcd** -- only when the user gives an endpoint and certificates (``etcd_endpoints``/``etcd_ca``/
  ``etcd_cert``/``etcd_key`` or ``K8SSTATE_ETCD_ENDPOINTS``/``_CA``/``_CERT``/``_KEY``); otherwise
  ``cluster.etcd`` is None and :func:`etcd_skip_reason` explains how to enable it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pytest_k8sstate.errors import CommandError, ConfigError, ProviderError
from pytest_k8sstate.node.exec import DEFAULT_TIMEOUT, CommandResult, run_command
from pytest_k8sstate.providers.base import Cluster, ClusterSpec, NodeInfo, Progress, Provider, stderr_progress
from pytest_k8sstate.providers.kubeadm import proxy_mode_from_kubeadm_conf

__all__ = [
    "DEBUG_NAMESPACE",
    "DebugPodExec",
    "ExistingOptions",
    "ExistingProvider",
    "debug_pod_manifest",
    "debug_pod_name",
    "etcd_skip_reason",
    "exec_argv",
    "kubeconfig_contexts",
    "nodes_from_json",
    "provider",
]

DEBUG_NAMESPACE = "k8sstate-debug"
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_DEBUG_IMAGE = "busybox:1.36"
MANAGED_BY = "pytest-k8sstate"
POD_DEADLINE = 4 * 3600
ENV_PREFIX = "K8SSTATE_ETCD_"
BASE_CAPABILITIES = frozenset({"container-runtime", "kubelet", "cni", "iptables", "nftables"})


def provider(**options: Any) -> ExistingProvider:
    return ExistingProvider(**options)


# --------------------------------------------------------------------------------------------------
# options and pure construction
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExistingOptions:
    kubeconfig: Path | None = None
    """Default ``$KUBECONFIG`` (first entry), else ``~/.kube/config``."""
    context: str | None = None
    etcd_endpoints: tuple[str, ...] = ()
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    debug_image: str = DEFAULT_DEBUG_IMAGE
    """Needs ``sleep`` and ``chroot`` (busybox has both); node tools come from the node (``chroot /host``)."""
    namespace: str = DEBUG_NAMESPACE
    kubectl: str = "kubectl"
    pod_timeout: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> ExistingOptions:
        """Options from ``given``, else ``KUBECONFIG``/``K8SSTATE_ETCD_*``/``K8SSTATE_DEBUG_IMAGE``."""
        e = os.environ if env is None else env
        kw: dict[str, Any] = dict(given)
        if kw.get("kubeconfig") is None and e.get("KUBECONFIG"):
            kw["kubeconfig"] = Path(e["KUBECONFIG"].split(os.pathsep)[0])
        if not kw.get("etcd_endpoints") and e.get(ENV_PREFIX + "ENDPOINTS"):
            kw["etcd_endpoints"] = tuple(
                x.strip() for x in e[ENV_PREFIX + "ENDPOINTS"].split(",") if x.strip()
            )
        for part in ("ca", "cert", "key"):
            var = ENV_PREFIX + part.upper()
            if kw.get(f"etcd_{part}") is None and e.get(var):
                kw[f"etcd_{part}"] = Path(e[var])
        if "debug_image" not in kw and e.get("K8SSTATE_DEBUG_IMAGE"):
            kw["debug_image"] = e["K8SSTATE_DEBUG_IMAGE"]
        return cls(**kw)

    def __post_init__(self) -> None:
        if isinstance(self.etcd_endpoints, str):
            object.__setattr__(self, "etcd_endpoints", (self.etcd_endpoints,))
        for name in ("kubeconfig", "etcd_ca", "etcd_cert", "etcd_key"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))
        if self.etcd_endpoints and (self.etcd_cert is None) != (self.etcd_key is None):
            raise ConfigError(
                "existing provider: etcd_cert and etcd_key go together (a client certificate and its key); "
                f"got cert={self.etcd_cert}, key={self.etcd_key}"
            )

    @property
    def kubeconfig_path(self) -> Path:
        return self.kubeconfig or Path.home() / ".kube" / "config"


def etcd_skip_reason(cluster: str) -> str:
    return (
        f"etcd capture skipped for existing cluster {cluster!r}: no etcd endpoint given. To capture it, set "
        "K8SSTATE_ETCD_ENDPOINTS=https://HOST:2379 and K8SSTATE_ETCD_CA/_CERT/_KEY (kubeadm: "
        "/etc/kubernetes/pki/etcd/ca.crt, /etc/kubernetes/pki/apiserver-etcd-client.crt and .key), or pass "
        "etcd_endpoints/etcd_ca/etcd_cert/etcd_key to the provider"
    )


_POD_NAME_BAD = re.compile(r"[^a-z0-9-]+")


def debug_pod_name(node: str) -> str:
    """A valid, stable pod name for ``node`` (``k8sstate-debug-<node>``, at most 63 characters)."""
    base = _POD_NAME_BAD.sub("-", node.lower()).strip("-") or "node"
    name = f"k8sstate-debug-{base}"
    if len(name) > 63:
        import hashlib

        digest = hashlib.sha256(node.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def debug_pod_manifest(
    node: str,
    *,
    namespace: str = DEBUG_NAMESPACE,
    image: str = DEFAULT_DEBUG_IMAGE,
    deadline: int = POD_DEADLINE,
) -> dict[str, Any]:
    """The privileged host-network pod on ``node`` (as ``kubectl debug node/N --profile=sysadmin`` makes)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": debug_pod_name(node),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "k8sstate.io/debug-node": debug_pod_name(node),
            },
            "annotations": {"k8sstate.io/node": node},
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "hostPID": True,
            "hostIPC": True,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline,
            "terminationGracePeriodSeconds": 0,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "debugger",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", str(deadline)],
                    # `chroot /host CMD` looks CMD up in this PATH: the node's usual one, not the image's
                    "env": [{"name": "PATH", "value": NODE_PATH}],
                    "stdin": True,
                    "securityContext": {"privileged": True},
                    "volumeMounts": [{"name": "host-root", "mountPath": "/host"}],
                }
            ],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/"}}],
        },
    }


def namespace_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                # privileged pods must be admitted where Pod Security is enforced
                "pod-security.kubernetes.io/enforce": "privileged",
            },
        },
    }


def kubectl_base(kubectl: str, kubeconfig: Path, context: str | None) -> list[str]:
    argv = [kubectl, f"--kubeconfig={kubeconfig}"]
    if context:
        argv.append(f"--context={context}")
    return argv


def exec_argv(
    kubectl: str, kubeconfig: Path, context: str | None, namespace: str, pod: str, argv: Sequence[str]
) -> list[str]:
    """``kubectl exec -i POD -- chroot /host /usr/bin/env PATH=... ARGV`` (the node's own binaries)."""
    return [
        *kubectl_base(kubectl, kubeconfig, context),
        "-n",
        namespace,
        "exec",
        "-i",
        pod,
        "-c",
        "debugger",
        "--",
        "chroot",
        "/host",
        # an absolute path: busybox's chroot (FEATURE_PREFER_APPLETS) would run its own `sh`/`ip` applets
        # for bare names; the node's env then finds the node's binaries
        "/usr/bin/env",
        f"PATH={NODE_PATH}",
        *argv,
    ]


def nodes_from_json(
    doc: Mapping[str, Any], source: str = "kubectl get nodes -o json"
) -> list[tuple[str, str, str]]:
    """(name, role, InternalIP) of every node; role from ``node-role.kubernetes.io/control-plane``."""
    items = doc.get("items")
    if not isinstance(items, list):
        raise ProviderError(f"{source}: expected a NodeList with 'items'")
    out = []
    for item in items:
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {}
        role = (
            "control-plane"
            if "node-role.kubernetes.io/control-plane" in labels or "node-role.kubernetes.io/master" in labels
            else "worker"
        )
        ip = ""
        for addr in (item.get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP":
                ip = str(addr.get("address", ""))
                break
        out.append((str(meta.get("name", "")), role, ip))
    out.sort(key=lambda t: (t[1] != "control-plane", t[0]))
    return out


def kubeconfig_contexts(text: str, source: str = "kubeconfig") -> tuple[list[str], str | None]:
    """(context names, current-context) of a kubeconfig."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProviderError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise ProviderError(f"{source}: expected a kubeconfig mapping")
    names = [str(c["name"]) for c in doc.get("contexts") or [] if isinstance(c, dict) and c.get("name")]
    current = doc.get("current-context")
    return names, str(current) if current else None


# --------------------------------------------------------------------------------------------------
# node exec
# --------------------------------------------------------------------------------------------------
@dataclass
class DebugPodExec:
    """:class:`~pytest_k8sstate.node.exec.NodeExec` over ``kubectl exec`` into the node's debug pod."""

    node_name: str
    kubeconfig: Path
    context: str | None = None
    namespace: str = DEBUG_NAMESPACE
    image: str = DEFAULT_DEBUG_IMAGE
    kubectl: str = "kubectl"
    pod_timeout: float = 120.0
    _ready: bool = field(default=False, repr=False)

    @property
    def node(self) -> str:
        return self.node_name

    @property
    def pod(self) -> str:
        return debug_pod_name(self.node_name)

    def _kubectl(self, *args: str, input: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        return run_command(
            [*kubectl_base(self.kubectl, self.kubeconfig, self.context), *args],
            input=input,
            timeout=timeout,
            where=f"node {self.node_name} (debug pod)",
        )

    def ensure_pod(self) -> None:
        if self._ready:
            return
        docs = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                namespace_manifest(self.namespace),
                debug_pod_manifest(self.node_name, namespace=self.namespace, image=self.image),
            ],
        }
        self._kubectl("apply", "-f", "-", input=json.dumps(docs).encode())
        try:
            self._kubectl(
                "-n",
                self.namespace,
                "wait",
                "--for=condition=Ready",
                f"pod/{self.pod}",
                f"--timeout={round(self.pod_timeout)}s",
                timeout=self.pod_timeout + 30,
            )
        except CommandError as exc:
            raise ProviderError(
                f"debug pod {self.namespace}/{self.pod} on node {self.node_name} not ready within "
                f"{self.pod_timeout:g}s ({exc}); the node must be able to run image {self.image!r} "
                "(set K8SSTATE_DEBUG_IMAGE to one it has) and admit privileged hostNetwork pods"
            ) from exc
        self._ready = True

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input: bytes | None = None,
        check: bool = True,
    ) -> CommandResult:
        self.ensure_pod()
        return run_command(
            exec_argv(self.kubectl, self.kubeconfig, self.context, self.namespace, self.pod, argv),
            timeout=timeout,
            input=input,
            check=check,
            where=f"node {self.node_name} (debug pod {self.namespace}/{self.pod})",
        )

    def which(self, program: str) -> bool:
        res = self.run(["sh", "-c", 'command -v "$0"', program], check=False, timeout=30)
        return res.returncode == 0


# --------------------------------------------------------------------------------------------------
# provider
# --------------------------------------------------------------------------------------------------
class ExistingProvider(Provider):
    name = "existing"
    capabilities = BASE_CAPABILITIES

    def __init__(
        self, options: ExistingOptions | None = None, progress: Progress | None = None, **kw: Any
    ) -> None:
        self.options = options or ExistingOptions.from_env(**kw)
        self.progress: Progress = progress or stderr_progress

    def _kubectl(
        self, context: str | None, *args: str, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        o = self.options
        return run_command(
            [*kubectl_base(o.kubectl, o.kubeconfig_path, context), *args],
            timeout=timeout,
            check=check,
            where=f"existing cluster {context or '(current context)'}",
        )

    def _contexts(self) -> tuple[list[str], str | None]:
        path = self.options.kubeconfig_path
        try:
            text = path.read_text()
        except OSError as exc:
            raise ProviderError(
                f"existing provider: cannot read kubeconfig {path} ({exc}); "
                "set KUBECONFIG or pass kubeconfig="
            ) from exc
        return kubeconfig_contexts(text, str(path))

    def list(self) -> list[str]:
        if self.options.context:
            return [self.options.context]
        names, _ = self._contexts()
        return names

    def create(self, spec: ClusterSpec) -> Cluster:
        """Attach: ``spec.name`` must be a context of the kubeconfig (or ``options.context`` is used)."""
        names, current = self._contexts()
        context = self.options.context or (spec.name if spec.name in names else current)
        if context is None:
            raise ProviderError(
                f"existing provider: kubeconfig {self.options.kubeconfig_path} has no context "
                f"{spec.name!r} and "
                "no current-context"
            )
        cluster = self.get(context)
        if spec.kubeconfig_out is not None:
            spec.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
            spec.kubeconfig_out.write_bytes(self.options.kubeconfig_path.read_bytes())
        return cluster

    def delete(self, name: str) -> None:
        """Remove only the plugin's debug namespace (and pods) -- never the cluster itself.

        Only a namespace the plugin created goes: the name *and* the ``managed-by`` label must match (a
        user's own namespace that happens to have the same name is left alone)."""
        with contextlib.suppress(CommandError):
            self._kubectl(
                name,
                "delete",
                "namespace",
                "--selector",
                f"app.kubernetes.io/managed-by={MANAGED_BY}",
                "--field-selector",
                f"metadata.name={self.options.namespace}",
                "--ignore-not-found",
                "--wait=false",
                timeout=60,
                check=False,
            )

    def get(self, name: str) -> Cluster:
        from pytest_k8sstate.etcd.target import EtcdTarget

        names, _ = self._contexts()
        if name not in names:
            raise ProviderError(
                f"no context {name!r} in kubeconfig {self.options.kubeconfig_path}; "
                f"contexts: {', '.join(names) or '(none)'}"
            )
        o = self.options
        nodes_json = json.loads(self._kubectl(name, "get", "nodes", "-o", "json", timeout=60).stdout)
        rows = nodes_from_json(nodes_json)
        nodes = [
            NodeInfo(
                n,
                role,
                DebugPodExec(
                    n, o.kubeconfig_path, name, o.namespace, o.debug_image, o.kubectl, o.pod_timeout
                ),
                ip,
            )
            for n, role, ip in rows
        ]
        mode = "iptables"
        res = self._kubectl(
            name, "-n", "kube-system", "get", "configmap", "kube-proxy", "-o", "json", timeout=30, check=False
        )
        if res.returncode == 0:
            with contextlib.suppress(ValueError, AttributeError):
                conf = json.loads(res.stdout).get("data", {}).get("config.conf", "")
                mode = proxy_mode_from_kubeadm_conf(conf, "kube-system/kube-proxy config.conf")
        server = ""
        srv = self._kubectl(
            name, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}", check=False
        )
        if srv.returncode == 0:
            server = srv.text.strip()
        details: dict[str, Any] = {"kubeconfig": str(o.kubeconfig_path), "context": name}
        etcd = None
        caps = set(BASE_CAPABILITIES)
        if o.etcd_endpoints:
            etcd = EtcdTarget(
                endpoints=tuple(o.etcd_endpoints), ca=o.etcd_ca, cert=o.etcd_cert, key=o.etcd_key
            )
            caps.add("etcd")
        else:
            details["etcd_skipped"] = etcd_skip_reason(name)
            self.progress(details["etcd_skipped"])
        if mode == "ipvs":
            caps.add("ipvs")
        return Cluster(
            name=name,
            provider=self.name,
            kubeconfig=o.kubeconfig_path,
            api_server=server,
            nodes=nodes,
            etcd=etcd,
            capabilities=frozenset(caps),
            proxy_mode=mode,
            details=details,
        )
