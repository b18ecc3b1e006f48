"""Run a node's capture commands: all in one ``sh`` (split on per-call random markers), or one by one.

One ``sh`` invocation per node (one ``ip netns exec`` / ``docker exec`` instead of six); a node container
(``DockerExec``) runs that ``sh`` text in its long-lived shell (:mod:`~pytest_k8sstate.node.session`).
Where the node has no ``sh``, each command runs on its own. What each command printed, its exit code and
its standard error come back as a :class:`Raw`; nothing here raises for a failing command.
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass

from pytest_k8sstate.errors import CommandError, CommandNotFound, CommandTimeout
from pytest_k8sstate.node import conntrack, iptfast, nftomit
from pytest_k8sstate.node.exec import NodeExec

__all__ = ["COMMANDS", "MISSING_RC", "NO_IPVS_RC", "Raw", "run_batched", "run_single", "run_tables", "script"]

# command id → (argv, package that provides the binary)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "iptables": (("iptables-save", "-c"), "iptables"),
    "ip6tables": (("ip6tables-save", "-c"), "iptables"),
    "nft": (("nft", "-j", "list", "ruleset"), "nftables"),
    "ipsets": (("ipset", "save"), "ipset"),
    "ipvs": (("ipvsadm", "-Sn"), "ipvsadm"),
    "ipaddr": (("ip", "-j", "-d", "addr", "show"), "iproute2"),  # links (with linkinfo) and addresses
    "routes": (("ip", "-j", "route", "show", "table", "all"), "iproute2"),
    "conntrack": (("conntrack", "-L", "-o", "extended"), "conntrack"),  # optional: node/conntrack.py
}
NO_IPVS_RC = 199  # our script's code for "this node has no IPVS": not an error
MISSING_RC = 127  # sh: command not found


@dataclass
class Raw:
    """What one command printed: its exit code (-1: it did not finish or never ran), output and errors."""

    rc: int
    stdout: bytes
    stderr: bytes


def script(
    parts: list[str],
    marker: str,
    python: str | None = None,
    nft: str | None = None,
    plain: frozenset[str] = frozenset(),
) -> str:
    lines = []
    for p in parts:
        argv = " ".join(shlex.quote(a) for a in COMMANDS[p][0])
        if p == "nft" and nft is not None:
            argv = nft
        if python is not None and p in iptfast.FAMILY and p not in plain:
            argv = f"( {iptfast.shell_command(p, python)} )"
        if p == "conntrack":
            argv = f"( {conntrack.SCRIPT} )"
        if p == "ipvs":
            # ipvsadm would try to modprobe ip_vs: don't even start it when the kernel has no IPVS
            argv = f"if [ -e /proc/net/ip_vs ]; then {argv}; else exit {NO_IPVS_RC}; fi"
            argv = f"( {argv} )"
        lines.append(
            f"echo '{marker} {p}'; echo '{marker} {p}' >&2; {argv}; rc=$?; "
            f"printf '\\n{marker} end %s\\n' $rc; printf '\\n{marker} end %s\\n' $rc >&2"
        )
    return "\n".join(lines) + "\n"


def split(data: bytes, marker: str, parts: list[str]) -> dict[str, tuple[bytes, int | None]]:
    """Each part's output and exit code as the script printed them, in ``parts``' order (each found after
    the one before it: a 10 MB dump is not searched again for every later part)."""
    out: dict[str, tuple[bytes, int | None]] = {}
    m = marker.encode()
    pos = 0
    for p in parts:
        begin = m + b" " + p.encode() + b"\n"
        i = data.find(begin, pos)
        if i < 0:
            continue
        start = i + len(begin)
        j = data.find(b"\n" + m + b" end ", start)
        if j < 0:
            out[p] = (data[start:], None)
            break
        k = data.find(b"\n", j + 1 + len(m) + 5)
        rc_text = data[j + 1 + len(m) + 5 : k if k >= 0 else None].strip()
        out[p] = (data[start:j], int(rc_text) if rc_text.isdigit() else None)
        pos = j + 1
    return out


def run_batched(
    exec: NodeExec,
    parts: list[str],
    timeout: float,
    python: str | None = None,
    nft: str | None = None,
    plain: frozenset[str] = frozenset(),
) -> dict[str, Raw] | None:
    """All parts in one ``sh``; None when the node has no usable ``sh``. ``python``: the node's interpreter
    for the iptables families' fast path, but for those in ``plain`` (their plain ``iptables-save``)."""
    marker = "@@k8ss-" + secrets.token_hex(8)
    text = script(parts, marker, python, nft, plain)
    run_script = getattr(exec, "run_script", None)  # a node's long-lived shell (node/session.py)
    try:
        res = run_script(text, timeout=timeout) if run_script is not None else None
        if res is None:
            res = exec.run(["sh", "-c", text], timeout=timeout, check=False)
    except CommandTimeout as exc:  # running each command again would only double the wait
        return {p: Raw(-1, b"", str(exc).encode()) for p in parts}
    except CommandError:
        return None  # no usable ``sh`` (or no way to run it): one command per part
    outs, errs = split(res.stdout, marker, parts), split(res.stderr, marker, parts)
    if not outs and res.returncode != 0:
        return None  # sh itself missing or broken
    raw: dict[str, Raw] = {}
    for p in parts:
        if p not in outs:
            raw[p] = Raw(-1, b"", b"the capture script stopped before this part: " + res.stderr[-300:])
            continue
        out, rc = outs[p]
        err = errs.get(p, (b"", None))[0]
        raw[p] = Raw(rc if rc is not None else -1, out, err)
    return raw


def run_tables(exec: NodeExec, omit: nftomit.Omission, timeout: float) -> Raw:
    """Without ``sh``: one ``nft -j list table`` per kept table, their documents one per line."""
    out = []
    for argv in omit.argvs():
        r = run_single(exec, "nft", timeout, argv=argv)
        if r.rc != 0:
            return r
        out.append(r.stdout.rstrip() + b"\n")
    return Raw(0, b"".join(out), b"")


def run_single(
    exec: NodeExec, part: str, timeout: float, fast: bool = False, argv: list[str] | None = None
) -> Raw:
    """One part's command on its own (``argv``: another command for it); ``fast``: an iptables family's
    fast dump first (:func:`~pytest_k8sstate.node.iptfast.single_command`), its plain command where that
    gives nothing. A missing program is :data:`MISSING_RC`, a node without IPVS :data:`NO_IPVS_RC`."""
    if argv is None:
        argv = ["sh", "-c", conntrack.SCRIPT] if part == "conntrack" else list(COMMANDS[part][0])
    if fast and part in iptfast.FAMILY:
        out = iptfast.single_command(exec, part, timeout)
        if out is not None:
            return Raw(0, out, b"")
    try:
        if part == "ipvs":
            probe = exec.run(["test", "-e", "/proc/net/ip_vs"], timeout=timeout, check=False)
            if probe.returncode != 0:
                return Raw(NO_IPVS_RC, b"", b"")
        res = exec.run(argv, timeout=timeout, check=False)
    except CommandNotFound as exc:
        return Raw(MISSING_RC, b"", str(exc).encode())
    except CommandError as exc:
        return Raw(-1, b"", str(exc).encode())
    if res.returncode != 0 and b'exec of "' in res.stderr and b"No such file" in res.stderr:
        return Raw(MISSING_RC, b"", res.stderr)  # `ip netns exec` could not find the binary
    return Raw(res.returncode, res.stdout, res.stderr)
