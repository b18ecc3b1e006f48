"""Each pod's own network namespace on a node: its interfaces, addresses, routes (and conntrack entries).

Which namespace belongs to which pod is found with ``crictl`` (containerd nodes: kind, minikube's
containerd runtime): ``crictl pods --state ready -o json`` and ``crictl inspectp -o json ID`` give the pod's
``namespace/name`` and the path of its network namespace (``/var/run/netns/cni-…``); a host-network pod has
none and is skipped. Or the caller names them (``pods={"default/web-1": "cni-1234"}``). Then **one** ``sh``
per node runs, per pod, ``ip -n NS -j -d addr show`` (links and addresses), ``ip -n NS -j route show``
(the main table) and, when asked, ``ip netns exec NS conntrack -L -o extended`` (at most ``max_conntrack``
lines). A pod whose namespace cannot be read gets an error; the other pods are kept.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pytest_k8sstate.errors import CommandError, K8sStateError, ParseError
from pytest_k8sstate.node.exec import NodeExec
from pytest_k8sstate.parse.iproute import parse_ip_json

__all__ = ["PodNet", "collect_pods", "pods_from_crictl"]

_NS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
_NETNS_DIRS = ("/var/run/netns/", "/run/netns/")
MAX_CONNTRACK = 1000


@dataclass
class PodNet:
    """One pod's network namespace as seen from inside it."""

    pod: str
    """``namespace/name``."""
    netns: str
    links: list[dict[str, Any]] = field(default_factory=list)
    addrs: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    conntrack: list[str] | None = None
    """``conntrack -L -o extended`` lines (None: not captured)."""
    errors: dict[str, str] = field(default_factory=dict)

    def addresses(self, family: str | None = "inet") -> list[str]:
        """``local/prefixlen`` of every address but loopback's (``family=None``: IPv4 and IPv6)."""
        return [
            f"{a['local']}/{a['prefixlen']}"
            for a in self.addrs
            if a.get("ifname") != "lo" and (family is None or a.get("family") == family)
        ]

    def interfaces(self) -> list[str]:
        return [str(li["ifname"]) for li in self.links if li.get("ifname") != "lo"]

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "netns": self.netns,
            "links": self.links,
            "addrs": self.addrs,
            "routes": self.routes,
            "conntrack": self.conntrack,
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, d: Any) -> Self:
        if (
            not isinstance(d, dict)
            or not isinstance(d.get("pod"), str)
            or not isinstance(d.get("netns"), str)
        ):
            raise ParseError(
                "pod network state", None, "an object with string 'pod' and 'netns'", repr(d)[:120]
            )
        where = f"pod network state {d['pod']}"
        lists: dict[str, list[dict[str, Any]]] = {}
        for part in ("links", "addrs", "routes"):
            v = d.get(part) or []
            if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
                raise ParseError(where, None, f"'{part}': a list of objects", type(v).__name__)
            lists[part] = [dict(x) for x in v]
        ct = d.get("conntrack")
        if ct is not None and (not isinstance(ct, list) or not all(isinstance(x, str) for x in ct)):
            raise ParseError(where, None, "'conntrack': null or a list of strings")
        errors = d.get("errors") or {}
        if not isinstance(errors, dict):
            raise ParseError(where, None, "'errors': an object")
        return cls(
            pod=d["pod"],
            netns=d["netns"],
            links=lists["links"],
            addrs=lists["addrs"],
            routes=lists["routes"],
            conntrack=list(ct) if ct is not None else None,
            errors={str(k): str(v) for k, v in errors.items()},
        )


def _split(stdout: bytes, marker: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    m = (marker + " ").encode()
    cur: str | None = None
    buf: list[bytes] = []
    for line in stdout.splitlines(keepends=True):
        if line.startswith(m):
            if cur is not None:
                out[cur] = b"".join(buf)
            cur, buf = line[len(m) :].decode("ascii", "replace").strip(), []
        elif cur is not None:
            buf.append(line)
    if cur is not None:
        out[cur] = b"".join(buf)
    return out


def _obj(d: Any, key: str) -> dict[str, Any]:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else {}


def pods_from_crictl(inspect: Mapping[str, bytes], source: str = "crictl inspectp") -> dict[str, str]:
    """``namespace/name`` → network namespace name, from ``crictl inspectp -o json`` outputs (by pod id).

    Host-network pods (no network namespace path) are left out. Raises ParseError for a non-JSON output."""
    out: dict[str, str] = {}
    for pid, raw in inspect.items():
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ParseError(
                f"{source} {pid}", None, "JSON (crictl inspectp -o json)", str(exc)[:100]
            ) from exc
        status = doc.get("status") if isinstance(doc, dict) else None
        meta = status.get("metadata") if isinstance(status, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise ParseError(f"{source} {pid}", None, "status.metadata.name", None)
        key = f"{meta.get('namespace') or 'default'}/{meta['name']}"
        linux = _obj(_obj(_obj(doc, "info"), "runtimeSpec"), "linux")
        for ns in linux.get("namespaces") or []:
            if isinstance(ns, dict) and ns.get("type") == "network" and isinstance(ns.get("path"), str):
                path: str = ns["path"]
                for d in _NETNS_DIRS:
                    if path.startswith(d) and _NS_RE.match(path[len(d) :]):
                        out[key] = path[len(d) :]
    return dict(sorted(out.items()))


def _discover(exec: NodeExec, timeout: float) -> dict[str, str]:
    marker = "@@k8ss-pods-" + secrets.token_hex(6)
    script = (
        "command -v crictl >/dev/null || { echo 'crictl not found' >&2; exit 127; }\n"
        f'for id in $(crictl pods --state ready -q); do echo "{marker} $id"; crictl inspectp -o json "$id"; '
        "done\n"
    )
    try:
        res = exec.run(["sh", "-c", script], timeout=timeout, check=False)
    except CommandError as exc:
        raise K8sStateError(f"listing pods on node {exec.node}: {exc}") from exc
    if res.returncode == 127:
        raise K8sStateError(
            f"crictl not found on node {exec.node}: pod network namespaces are found with crictl "
            "(containerd nodes, e.g. kind); pass pods={'ns/name': 'netns'} instead"
        )
    return pods_from_crictl(_split(res.stdout, marker), f"crictl inspectp (node {exec.node})")


def collect_pods(
    exec: NodeExec,
    pods: Mapping[str, str] | None = None,
    *,
    conntrack: bool = False,
    max_conntrack: int = MAX_CONNTRACK,
    timeout: float = 60.0,
) -> tuple[dict[str, PodNet], dict[str, str]]:
    """Every pod's network namespace on ``exec``'s node → (``{"ns/name": PodNet}``, errors).

    ``pods``: ``"ns/name"`` → network namespace name (under ``/run/netns``); None finds them with crictl.
    Never raises for a pod or for a node without crictl: the reason lands in the errors (key ``"*"`` for
    the node, the pod's key otherwise)."""
    errors: dict[str, str] = {}
    if pods is None:
        try:
            pods = _discover(exec, timeout)
        except K8sStateError as exc:
            return {}, {"*": str(exc)}
    wanted: dict[str, str] = {}
    for key, ns in pods.items():
        if not _NS_RE.match(ns):
            errors[key] = f"network namespace name {ns!r} is not a plain name under /run/netns"
        else:
            wanted[key] = ns
    if not wanted:
        return {}, errors
    marker = "@@k8ss-pods-" + secrets.token_hex(6)
    lines = []
    for i, ns in enumerate(wanted.values()):
        q = shlex.quote(ns)
        lines.append(f"echo '{marker} {i} addr'; ip -n {q} -j -d addr show 2>&1; echo")
        lines.append(f"echo '{marker} {i} route'; ip -n {q} -j route show 2>&1; echo")
        if conntrack:
            lines.append(
                f"echo '{marker} {i} ct'; if command -v conntrack >/dev/null; then ip netns exec {q} "
                f"conntrack -L -o extended 2>/dev/null | head -n {int(max_conntrack) + 1}; "
                "else echo '@@no-conntrack'; fi"
            )
    try:
        res = exec.run(["sh", "-c", "\n".join(lines) + "\n"], timeout=timeout, check=False)
    except CommandError as exc:
        return {}, {**errors, "*": f"reading pod network namespaces on node {exec.node}: {exc}"}
    got = _split(res.stdout, marker)
    out: dict[str, PodNet] = {}
    for i, (key, ns) in enumerate(wanted.items()):
        pn = PodNet(key, ns)
        src = f"ip -n {ns} (pod {key}, node {exec.node})"
        addr_raw = got.get(f"{i} addr", b"").strip()
        try:
            pn.links = parse_ip_json(addr_raw, "link", source=src)
            pn.addrs = parse_ip_json(addr_raw, "addr", source=src)
        except K8sStateError as exc:
            pn.errors["addrs"] = f"{addr_raw.decode('utf-8', 'replace')[:200] or exc}"
        route_raw = got.get(f"{i} route", b"").strip()
        try:
            pn.routes = parse_ip_json(route_raw, "route", source=src)
        except K8sStateError as exc:
            pn.errors["routes"] = f"{route_raw.decode('utf-8', 'replace')[:200] or exc}"
        if conntrack:
            ct = got.get(f"{i} ct", b"").decode("utf-8", "replace").splitlines()
            if ct[:1] == ["@@no-conntrack"]:
                pn.errors["conntrack"] = f"conntrack not found on node {exec.node}; install conntrack"
            else:
                pn.conntrack = [ln for ln in ct if ln.strip()]
                if len(pn.conntrack) > max_conntrack:
                    pn.conntrack = pn.conntrack[:max_conntrack]
                    pn.errors["conntrack"] = f"cut: first {max_conntrack} entries"
        out[key] = pn
    return out, errors
