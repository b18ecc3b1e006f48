"""A step's *footprint*: what changed in each node's network state, normalised so that runs and CNIs compare.

:func:`footprint` reads a :class:`~pytest_k8sstate.state.StateDiff` and the snapshot it ends at and gives,
per node (named without the cluster's prefix: ``control-plane``, ``worker``), the links, addresses and routes
added / removed / changed, and the netfilter chains and rules added / removed per table — each item as a
text in which everything that differs between two runs of the same step is replaced by a role or a pattern:

* addresses by the role the cluster's own objects give them (read from the snapshot's etcd): an address of
  a Pod created in the step → ``<pod IP>``, of another Pod → ``<other pod IP>``, this node's InternalIP →
  ``<node IP>``, another node's → ``<other node IP>``, a node's podCIDR → ``<node pod CIDR>`` /
  ``<other node's pod CIDR>`` (an address inside it → ``<node pod CIDR address>`` / ``<other node's pod CIDR
  address>``), a Service's ClusterIP → ``<Service IP>``; anything else stays as it is;
* interface names ending in a generated suffix (``veth1a2b3c4d``, ``cali…``, ``lxc…``) → ``veth*``;
* generated chain names: ``CNI-<hex>`` → ``CNI-…``, ``CNI-DN-<hex>`` → ``CNI-DN-…``, kube-proxy's
  ``KUBE-SEP-<base32>`` → ``KUBE-SEP-…`` (also SVC/SVL/EXT/FW), nft ``service-<hash>-…`` → ``service-…-…``;
  long hex strings (container IDs in comments) → ``…``.

A link whose name is both removed and added (its state or MTU changed) is one ``changed`` item. A node
that exists on one side only is one ``node`` item (``added``/``removed``) counting what it has. Repeated
items are counted (``[text, count]``). The result is plain JSON (:meth:`Footprint.to_json` /
:meth:`Footprint.from_json`), recorded per test by the plugin and read by ``k8sstate findings cni-table``.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.state.labels import parse_link

if TYPE_CHECKING:
    from pytest_k8sstate.state.diff import StateDiff
    from pytest_k8sstate.state.nodediff import NodeDiff
    from pytest_k8sstate.state.snapshot import Snapshot

__all__ = ["CATEGORIES", "Footprint", "NodeFootprint", "Roles", "footprint", "normalise_name", "roles_from"]

CATEGORIES = ("node", "links", "addrs", "routes", "chains", "rules", "nft_chains", "nft_rules", "ipsets")
"""The parts of a :class:`NodeFootprint`, in the order they are rendered."""

_IFACE_RE = re.compile(r"\b(veth|cali|lxc|tap|vxlan|enp|cilium_)[0-9a-f]{5,}\b")
_CHAIN_RES = (
    (re.compile(r"\b(CNI-(?:DN-|HOSTPORT-|SNAT-)?)[0-9a-f]{12,}\b"), r"\1…"),
    (re.compile(r"\b(KUBE-(?:SEP|SVC|SVL|EXT|FW|XLB)-)[A-Z2-7]{16}\b"), r"\1…"),
    (re.compile(r"\b((?:service|external|firewall|endpoint)-)[A-Z2-7]{8}(?=-)"), r"\1…"),
    (re.compile(r"\b[0-9a-f]{32,}\b"), "…"),
)
_ADDR_RE = re.compile(
    r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(/\d{1,3})?"
)


def normalise_name(text: str) -> str:
    """Generated interface and chain names, and long hex IDs, replaced by their pattern."""
    text = _IFACE_RE.sub(r"\1*", text)
    for pattern, repl in _CHAIN_RES:
        text = pattern.sub(repl, text)
    return text


@dataclass
class Roles:
    """Address → role, as the cluster's own objects say (see the module docstring)."""

    pods_new: set[str] = field(default_factory=set)
    pods_other: set[str] = field(default_factory=set)
    node_ips: dict[str, set[str]] = field(default_factory=dict)
    """Node name → its InternalIP(s)."""
    pod_cidrs: dict[str, list[str]] = field(default_factory=dict)
    """Node name → its podCIDR(s)."""
    service_ips: set[str] = field(default_factory=set)

    def role(self, address: str, prefix: str | None, node: str) -> str | None:
        """The role of ``address`` (with ``prefix``, e.g. ``/24``, or None) seen on ``node``; None: none."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        text = str(ip)
        if prefix is not None:  # a pod CIDR itself
            for owner, cidrs in self.pod_cidrs.items():
                for cidr in cidrs:
                    net = ipaddress.ip_network(cidr, strict=False)
                    if net.version == ip.version and (net.network_address, net.prefixlen) == (
                        ip,
                        int(prefix[1:]),
                    ):
                        return "<node pod CIDR>" if owner == node else "<other node's pod CIDR>"
        suffix = prefix or ""
        if text in self.pods_new:
            return f"<pod IP>{suffix}"
        if text in self.node_ips.get(node, set()):
            return f"<node IP>{suffix}"
        if any(text in ips for owner, ips in self.node_ips.items() if owner != node):
            return f"<other node IP>{suffix}"
        if text in self.service_ips:
            return f"<Service IP>{suffix}"
        if text in self.pods_other:
            return f"<other pod IP>{suffix}"
        for owner, cidrs in self.pod_cidrs.items():
            for cidr in cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                if net.version == ip.version and ip in net:
                    where = "node pod CIDR" if owner == node else "other node's pod CIDR"
                    return f"<{where} address>{suffix}"
        return None

    def replace(self, text: str, node: str) -> str:
        def one(m: re.Match[str]) -> str:
            role = self.role(m.group(1), m.group(2), node)
            return role if role is not None else m.group(0)

        return _ADDR_RE.sub(one, text)


def _fields(snapshot: Snapshot | None, prefix: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    if snapshot is None or snapshot.etcd is None:
        return
    for key, entry in snapshot.etcd.entries.items():
        if key.startswith(prefix) and isinstance(entry.decoded.fields, Mapping):
            yield key, entry.decoded.fields


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(p)
    return obj


def _strings(values: Any) -> list[str]:
    return [str(v) for v in values if isinstance(v, str) and v] if isinstance(values, list) else []


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def roles_from(diff: StateDiff, after: Snapshot | None) -> Roles:
    """The roles of the addresses that the objects in ``after``'s etcd name (pods new in ``diff``
    are ``<pod IP>``)."""
    roles = Roles()
    new_pods = {c.key for c in diff.etcd.added if c.key.startswith("/registry/pods/")}
    for key, obj in _fields(after, "/registry/pods/"):
        ips = {str(p.get("ip")) for p in _get(obj, "status", "podIPs") or [] if isinstance(p, Mapping)}
        ips |= set(_strings([_get(obj, "status", "podIP")]))
        ips.discard("None")
        if _get(obj, "spec", "hostNetwork") is True:
            continue
        (roles.pods_new if key in new_pods else roles.pods_other).update(ips)
    roles.pods_other -= roles.pods_new
    for _, obj in _fields(after, "/registry/minions/"):
        name = _get(obj, "metadata", "name")
        if not isinstance(name, str):
            continue
        addrs = _get(obj, "status", "addresses") or []
        roles.node_ips[name] = {
            str(a.get("address")) for a in addrs if isinstance(a, Mapping) and a.get("type") == "InternalIP"
        }
        cidrs = _strings(_get(obj, "spec", "podCIDRs")) or _strings([_get(obj, "spec", "podCIDR")])
        roles.pod_cidrs[name] = [c for c in cidrs if _is_network(c)]
    for _, obj in _fields(after, "/registry/services/specs/"):
        roles.service_ips.update(_strings(_get(obj, "spec", "clusterIPs")))
        roles.service_ips.update(_strings([_get(obj, "spec", "clusterIP")]))
    roles.service_ips.discard("None")
    return roles


Counted = list[tuple[str, int]]


def _count(items: Iterable[str]) -> Counted:
    return sorted(Counter(items).items())


@dataclass
class NodeFootprint:
    """One node's normalised changes: category → change (``added``/``removed``/``changed``) → counted
    texts."""

    changes: dict[str, dict[str, Counted]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(items for kinds in self.changes.values() for items in kinds.values())

    def items(self, category: str, change: str) -> Counted:
        return self.changes.get(category, {}).get(change, [])

    def to_json(self) -> dict[str, Any]:
        return {
            cat: {ch: [[t, n] for t, n in items] for ch, items in kinds.items() if items}
            for cat, kinds in self.changes.items()
            if any(kinds.values())
        }

    @classmethod
    def from_json(cls, d: Any, where: str = "footprint") -> Self:
        if not isinstance(d, Mapping):
            raise ParseError(where, None, "an object of categories", type(d).__name__)
        out: dict[str, dict[str, Counted]] = {}
        for cat, kinds in d.items():
            if not isinstance(kinds, Mapping):
                raise ParseError(where, None, f"{cat}: an object of changes", type(kinds).__name__)
            out[str(cat)] = {}
            for ch, items in kinds.items():
                ok = isinstance(items, list) and all(
                    isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and type(i[1]) is int
                    for i in items
                )
                if not ok:
                    raise ParseError(where, None, f"{cat}.{ch}: a list of [text, count]", repr(items)[:80])
                out[str(cat)][str(ch)] = [(i[0], i[1]) for i in items]
        return cls(out)


@dataclass
class Footprint:
    """Every node's :class:`NodeFootprint` (nodes without a change left out)."""

    nodes: dict[str, NodeFootprint] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.nodes.values())

    def to_json(self) -> dict[str, Any]:
        return {"nodes": {name: nf.to_json() for name, nf in sorted(self.nodes.items())}}

    @classmethod
    def from_json(cls, d: Any, where: str = "footprint") -> Self:
        nodes = d.get("nodes") if isinstance(d, Mapping) else None
        if not isinstance(nodes, Mapping):
            raise ParseError(where, None, 'an object with "nodes"', type(d).__name__)
        return cls({str(k): NodeFootprint.from_json(v, f"{where}: node {k}") for k, v in nodes.items()})


def _short_node(name: str, cluster: str) -> str:
    return name[len(cluster) + 1 :] if cluster and name.startswith(f"{cluster}-") else name


def _links(nd: NodeDiff, norm: Callable[[str], str]) -> dict[str, Counted]:
    def parsed(labels: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for label in labels:
            link = parse_link(label)
            name = link.name if link is not None else label
            out[name] = label
        return out

    added, removed = parsed(nd.links_added), parsed(nd.links_removed)
    both = set(added) & set(removed)

    def short(label: str) -> str:
        link = parse_link(label)
        if link is None:
            return norm(label)
        return norm(f"{link.name} ({link.kind})" if link.kind else link.name)

    def state(label: str) -> str:
        link = parse_link(label)
        return (
            f"{link.state or '?'}" + (f" mtu {link.mtu}" if link.mtu is not None else "") if link else label
        )

    changed = []
    for name in sorted(both):
        a, b = state(removed[name]), state(added[name])
        changed.append(short(added[name]) + (f": {a} → {b}" if a != b else ""))
    return {
        "added": _count(short(v) for k, v in added.items() if k not in both),
        "removed": _count(short(v) for k, v in removed.items() if k not in both),
        "changed": _count(changed),
    }


def _node_footprint(nd: NodeDiff, node: str, roles: Roles) -> NodeFootprint:
    def norm(text: str) -> str:
        return normalise_name(roles.replace(text, node))

    out: dict[str, dict[str, Counted]] = {"links": _links(nd, norm)}
    for cat, added, removed in (
        ("addrs", nd.addrs_added, nd.addrs_removed),
        ("routes", nd.routes_added, nd.routes_removed),
        ("ipsets", nd.ipsets_added, nd.ipsets_removed),
    ):
        out[cat] = {"added": _count(map(norm, added)), "removed": _count(map(norm, removed))}
    for cat, (added2, removed2) in (
        ("chains", (nd.chains_added, nd.chains_removed)),
        ("nft_chains", (nd.nft_chains_added, nd.nft_chains_removed)),
    ):
        out[cat] = {
            "added": _count(norm(f"{t} {c}") for t, c in added2),
            "removed": _count(norm(f"{t} {c}") for t, c in removed2),
        }
    for cat, (added3, removed3) in (
        ("rules", (nd.rules_added, nd.rules_removed)),
        ("nft_rules", (nd.nft_rules_added, nd.nft_rules_removed)),
    ):
        out[cat] = {
            "added": _count(norm(f"{t} {c}: {s}") for t, c, s in added3),
            "removed": _count(norm(f"{t} {c}: {s}") for t, c, s in removed3),
        }
    return NodeFootprint(
        {
            cat: {ch: items for ch, items in kinds.items() if items}
            for cat, kinds in out.items()
            if any(kinds.values())
        }
    )


def footprint(diff: StateDiff, after: Snapshot | None = None, *, cluster: str | None = None) -> Footprint:
    """The normalised node changes of ``diff`` (``after``: the snapshot it ends at, for the roles of
    addresses; ``cluster``: the prefix stripped from node names, default ``after.cluster["name"]``)."""
    roles = roles_from(diff, after)
    if cluster is None and after is not None:
        name = after.cluster.get("name") if isinstance(after.cluster, Mapping) else None
        cluster = name if isinstance(name, str) else None
    nodes: dict[str, NodeFootprint] = {}
    whole = {**dict.fromkeys(diff.nodes_added, "added"), **dict.fromkeys(diff.nodes_removed, "removed")}
    for node, nd in sorted(diff.nodes.items()):
        if node in whole:  # diffed against an empty node: say what it has, not every item
            counts = ", ".join(
                f"{len(getattr(nd, f'{kind}_{whole[node]}'))} {kind}"
                for kind in ("links", "addrs", "routes", "chains", "rules", "nft_rules")
            )
            nodes[_short_node(node, cluster or "")] = NodeFootprint({"node": {whole[node]: [(counts, 1)]}})
            continue
        nf = _node_footprint(nd, node, roles)
        if nf:
            nodes[_short_node(node, cluster or "")] = nf
    return Footprint(nodes)
