"""Assertions on pods' own network namespaces (``snapshot.pods``) and on the logs of a diff (``diff.logs``).

assert_pod_interface(snap, "default/web", address="10.244.1.5", route="default via 10.244.1.1")
assert_logs_contain(diff, r"Syncing nftables rules", component="kube-proxy")
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from pytest_k8sstate.assertions._common import did_you_mean, fail
from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.state.pods import route_text

if TYPE_CHECKING:
    from pytest_k8sstate.node.pods import PodNet
    from pytest_k8sstate.state.diff import StateDiff
    from pytest_k8sstate.state.snapshot import Snapshot

__all__ = ["assert_logs_contain", "assert_pod_interface", "find_pod"]


def find_pod(snapshot: Snapshot, pod: str, node: str | None = None) -> tuple[str, PodNet]:
    """``(node, PodNet)`` of ``pod`` (``namespace/name``; a glob like ``default/web-*`` takes the first
    match). AssertionError naming the captured pods when there is none."""
    if not snapshot.pods:
        raise AssertionError(
            f"snapshot {snapshot.label!r} has no pod network namespaces: capture it with pods=True "
            "(Snapshot.capture / Cluster.snapshot, or K8SSTATE_POD_NETNS=1 for cluster_state)"
        )
    known: list[str] = []
    for n, np in snapshot.pods.items():
        if node is not None and n != node:
            continue
        for key, pn in np.pods.items():
            known.append(key)
            if key == pod or fnmatchcase(key, pod):
                return n, pn
    where = f" on node {node}" if node else ""
    hint = did_you_mean(pod, known)
    errs = [f"{n}: {e}" for n, np in snapshot.pods.items() for e in np.errors.values()]
    raise AssertionError(
        f"no pod {pod!r}{where} in snapshot {snapshot.label!r}; captured: {short(sorted(known)) or '(none)'}"
        + (f"; did you mean {', '.join(hint)}?" if hint else "")
        + (f"; capture errors: {'; '.join(errs)[:500]}" if errs else "")
    )


def short(items: list[str], n: int = 8) -> str:
    """``a, b, c`` — at most ``n`` items, then how many more (one line, for a failure message)."""
    return ", ".join(items[:n]) + (f", … ({len(items) - n} more)" if len(items) > n else "")


def _addr_ok(want: str, have: str) -> bool:
    """``want`` (``10.0.0.5`` or ``10.0.0.5/24``) against ``have`` (``10.0.0.5/24``)."""
    return want == have or ("/" not in want and have.split("/", 1)[0] == want)


def _route_ok(want: str, r: dict[str, object]) -> bool:
    """``want``: ``DST [via GW] [dev DEV]`` (DST a CIDR, an address or ``default``)."""
    words = want.split()
    if not words:
        return False
    dst = str(r.get("dst"))
    if words[0] != dst:
        try:
            if ipaddress.ip_network(words[0], strict=False) != ipaddress.ip_network(dst, strict=False):
                return False
        except ValueError:
            return False
    opts = dict(zip(words[1::2], words[2::2], strict=False))
    return all(
        str(r.get({"via": "gateway", "dev": "dev"}.get(k, k))) == v
        for k, v in opts.items()
        if k in ("via", "dev")
    )


def assert_pod_interface(
    snapshot: Snapshot,
    pod: str,
    *,
    node: str | None = None,
    interface: str | None = None,
    address: str | None = None,
    route: str | None = None,
    verbose: bool | None = None,
) -> PodNet:
    """``pod`` (``namespace/name`` or a glob) has, in its own network namespace, an interface matching the
    glob ``interface`` (default: any but ``lo``), carrying ``address`` (``IP`` or ``IP/len``) and a route
    ``route`` (``DST [via GW] [dev DEV]``, e.g. ``default via 10.244.1.1``). Returns the pod's state."""
    if route is not None and not route.split():
        raise K8sStateError("assert_pod_interface: route must be 'DST [via GW] [dev DEV]', got ''")
    n, pn = find_pod(snapshot, pod, node)
    ifaces = [i for i in pn.interfaces() if interface is None or fnmatchcase(i, interface)]
    addrs = [
        f"{a['local']}/{a['prefixlen']}"
        for a in pn.addrs
        if a.get("ifname") in ifaces
        and (address is None or _addr_ok(address, f"{a['local']}/{a['prefixlen']}"))
    ]
    routes = [r for r in pn.routes if route is None or _route_ok(route, r)]
    problems = []
    if not ifaces:
        problems.append(
            f"no interface {interface or '(besides lo)'}; it has {short(pn.interfaces()) or 'only lo'}"
        )
    elif address is not None and not addrs:
        have = [
            f"{a['local']}/{a['prefixlen']} dev {a.get('ifname')}"
            for a in pn.addrs
            if a.get("ifname") != "lo"
        ]
        problems.append(f"no address {address} on {', '.join(ifaces)}; addresses: {short(have) or '(none)'}")
    if route is not None and not routes:
        problems.append(
            f"no route {route!r}; routes: {short([route_text(r) for r in pn.routes]) or '(none)'}"
        )
    if problems:
        full = "\n".join(
            [f"links: {pn.interfaces()}", f"addrs: {pn.addresses(None)}", *(route_text(r) for r in pn.routes)]
        )
        raise fail(
            f"pod {pn.pod} (node {n}, netns {pn.netns}): " + "; ".join(problems), full, verbose, "its state"
        )
    return pn


def assert_logs_contain(
    diff: StateDiff,
    pattern: str,
    *,
    component: str | None = None,
    node: str | None = None,
    min_count: int = 1,
    verbose: bool | None = None,
) -> list[tuple[str, str]]:
    """At least ``min_count`` log lines written between the diff's snapshots match ``pattern`` (regex),
    in the components / nodes matching the globs. Returns the ``(node/component, line)`` matches."""
    if diff.logs is None:
        raise AssertionError(
            "this diff has no logs: capture snapshots with logs (cluster_state does unless K8SSTATE_LOGS=0; "
            "Snapshot.capture(logs=...) + before.diff(after, logs_from=execs))"
        )
    hits = diff.logs.grep(pattern, component=component, node=node)
    if len(hits) >= min_count:
        return hits
    scope = diff.logs.filter(component=component, node=node)
    where = ", ".join(f"{k} ({len(v)} lines)" for k, v in scope.items()) or "(no source matches)"
    raise fail(
        f"{len(hits)} log line(s) match {pattern!r} (wanted ≥ {min_count}); sources: {where}",
        "\n".join(scope.render(limit=20)),
        verbose,
        "the logs",
    )
