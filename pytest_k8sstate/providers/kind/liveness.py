"""Is every component inside a kind cluster's nodes still running? Checked before every snapshot.

The node containers themselves are checked by the provider (one ``docker inspect``); this module looks
inside each node, with one ``docker exec`` per node (all nodes at once): the kubelet (its systemd unit
active and its process present), kube-proxy (its process, unless the cluster runs without kube-proxy) and
the CNI agent when there is one (``kindnetd``; the node-routes agent's unit for ``ptp``/``bridge``/
``flannel``, plus ``flanneld`` for ``flannel``). A missing one is looked at again for a few seconds
(the kubelet restarts a crashed pod container at once), then named with its node and the last lines of
its log (``journalctl`` for a unit, ``crictl logs`` of its last container for a pod).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import NodeExec
from pytest_k8sstate.providers.kind import noderoutes

__all__ = [
    "GRACE_SECONDS",
    "Component",
    "check_components",
    "dead_in",
    "expected_components",
    "probe",
    "probe_argv",
]

GRACE_SECONDS = 6.0
"""How long a missing component may take to come back (a pod container restarted by the kubelet)."""
LOG_LINES = 8


@dataclass(frozen=True)
class Component:
    """``name`` as shown; running when ``unit`` (if any) is active and a process ``comm`` (if any) exists;
    its log: the unit's journal, else the last container named ``container`` (crictl)."""

    name: str
    unit: str | None = None
    comm: str | None = None
    container: str | None = None


KUBELET = Component("kubelet", unit="kubelet.service", comm="kubelet")
KUBE_PROXY = Component("kube-proxy", comm="kube-proxy", container="kube-proxy")
KINDNET = Component("kindnetd", comm="kindnetd", container="kindnet-cni")
NODE_ROUTES = Component(noderoutes.CONFIGMAP, unit=noderoutes.UNIT_NAME)
FLANNELD = Component("flanneld", unit=noderoutes.UNIT_NAME, comm="flanneld")


def expected_components(proxy_mode: str, cni: str | None) -> list[Component]:
    """What runs in every node of a kind cluster with this kube-proxy mode and CNI (``cni_name``)."""
    comps = [KUBELET]
    if proxy_mode not in ("", "none"):
        comps.append(KUBE_PROXY)
    if cni == "kindnet":
        comps.append(KINDNET)
    elif cni in noderoutes.MODES or cni == noderoutes.CONFIGMAP:
        comps.append(NODE_ROUTES)
        if cni == "flannel":
            comps.append(FLANNELD)
    return comps


_PROBE = (
    'for u in "$@"; do echo "unit $u $(systemctl is-active "$u" 2>/dev/null)"; done; '
    "echo --; cat /proc/[0-9]*/comm 2>/dev/null; exit 0"
)


def probe_argv(comps: Sequence[Component]) -> list[str]:
    """One ``sh`` printing ``unit NAME STATE`` per unit, ``--``, then every process name of the node."""
    units = sorted({c.unit for c in comps if c.unit})
    return ["sh", "-c", _PROBE, "sh", *units]


def dead_in(output: str, comps: Sequence[Component]) -> list[tuple[Component, str]]:
    """The components of ``comps`` not running according to :func:`probe_argv`'s ``output``, each with
    why (``unit kubelet.service is inactive`` / ``no kube-proxy process``)."""
    lines = output.splitlines()
    cut = lines.index("--") if "--" in lines else len(lines)
    units: dict[str, str] = {}
    for line in lines[:cut]:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "unit":
            units[parts[1]] = parts[2] if len(parts) > 2 else "unknown"
    procs = {line.strip() for line in lines[cut + 1 :]}
    dead: list[tuple[Component, str]] = []
    for c in comps:
        if c.unit and units.get(c.unit) != "active":
            dead.append((c, f"unit {c.unit} is {units.get(c.unit) or 'not found'}"))
        elif c.comm and c.comm[:15] not in procs:  # the kernel keeps 15 characters of a name
            dead.append((c, f"no {c.comm} process"))
    return dead


def _log_tail(ex: NodeExec, c: Component) -> str:
    if c.unit:
        argv = ["journalctl", "-u", c.unit, "-n", str(LOG_LINES), "--no-pager", "-o", "cat"]
        where = f"journalctl -u {c.unit}"
    else:
        script = (
            'id=$(crictl ps -a --name "$0" -q 2>/dev/null | head -n1); '
            '[ -n "$id" ] && crictl logs --tail "$1" "$id" 2>&1'
        )
        argv = ["sh", "-c", script, c.container or c.name, str(LOG_LINES)]
        where = f"crictl logs of its last {c.container or c.name} container"
    try:
        res = ex.run(argv, check=False, timeout=20)
    except CommandError as exc:
        return f"    (cannot read {where}: {exc})"
    lines = res.text.splitlines()[-LOG_LINES:]
    if not lines:
        return f"    ({where}: nothing)"
    return f"    last lines of {where}:\n" + "\n".join(f"      {line[:300]}" for line in lines)


def probe(
    nodes: Sequence[tuple[str, NodeExec]], comps: Sequence[Component]
) -> dict[str, list[tuple[Component, str]]]:
    """Node name → the components of ``comps`` not running in it (nodes where all run are left out)."""
    argv = probe_argv(comps)

    def one(ex: NodeExec) -> list[tuple[Component, str]]:
        try:
            res = ex.run(argv, check=False, timeout=20)
        except CommandError as exc:
            return [(Component("node"), f"cannot look inside: {exc}")]
        if res.returncode != 0:
            return [
                (Component("node"), f"cannot look inside (exit {res.returncode}): {res.text.strip()[:200]}")
            ]
        return dead_in(res.text, comps)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(nodes)))) as pool:
        found = list(pool.map(one, [ex for _, ex in nodes]))
    return {name: d for (name, _), d in zip(nodes, found, strict=True) if d}


def check_components(
    cluster: str,
    nodes: Sequence[tuple[str, NodeExec]],
    comps: Sequence[Component],
    *,
    grace: float = GRACE_SECONDS,
    dead: dict[str, list[tuple[Component, str]]] | None = None,
) -> None:
    """ProviderError naming every component of ``comps`` not running in one of ``nodes`` ((name, exec)
    pairs), with its last log lines; a missing one gets ``grace`` seconds to come back first. ``dead``:
    the result of a :func:`probe` already made (the provider runs it beside its container check)."""
    dead = probe(nodes, comps) if dead is None else dead
    deadline = time.monotonic() + grace
    while dead and time.monotonic() < deadline:
        time.sleep(1.0)
        dead = probe([n for n in nodes if n[0] in dead], comps)
    if not dead:
        return
    execs = dict(nodes)
    names = ", ".join(f"{c.name} of node {node!r}" for node, ds in dead.items() for c, _ in ds)
    paras = [
        f"  {c.name} of node {node!r} is not running ({why});\n{_log_tail(execs[node], c)}"
        for node, ds in dead.items()
        for c, why in ds
        if c.name != "node"
    ] + [f"  node {node!r}: {why}" for node, ds in dead.items() for c, why in ds if c.name == "node"]
    raise ProviderError(
        f"kind cluster {cluster!r} is broken: {names} not running\n" + "\n".join(paras) + "\n"
        f"to recover, delete it with `k8sstate cluster delete --name {cluster} --provider kind` and run again"
    )
