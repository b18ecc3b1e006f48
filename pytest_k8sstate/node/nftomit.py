"""The ``nft`` part without iptables-nft's own tables, where the iptables part already holds them exactly.

With the iptables nf_tables backend, every iptables rule is also an nf_tables rule: ``nft -j list ruleset``
of 2,000 kube-proxy Services prints 8 MB of JSON for the ``ip nat`` table alone (about a second of ``nft``
per node, and a third of a second to parse), rules whose ``xt`` arguments ``nft -j`` cannot show anyway
(the tracer refuses them; the node diff and the rule counts already take those tables from the iptables
part). So, for a node that is a network namespace of this machine (``local``; not a node container: its
changed iptables part is its own ``iptables-save``):

* when a family's iptables tables (raw, mangle, filter, nat, security of ``ip``/``ip6``) hold at least
  :data:`~pytest_k8sstate.node.iptfast.MIN_CHAINS` chains — exactly when the capture reads that
  family's iptables part over netlink — and nothing the iptables part cannot show (no sets, named
  objects or flowtables, no table flags, base chains only with iptables' own hooks, priorities and
  types), the nft part lists every *other* table
  (``nft -j list table FAMILY NAME``, one document each, merged) and names the left-out ones in
  :attr:`~pytest_k8sstate.parse.nft.NftRuleset.omitted`;
* if the iptables part of such a family was not read exactly over netlink after all (a rule the
  translator does not know, an error), the ruleset changed after the tables were listed, or a listed
  table is gone or a document is not what ``nft`` prints, the nft part is the whole
  ``nft -j list ruleset`` as before: nothing is lost.

``K8SSTATE_NFT_OMIT=0`` keeps every table in the nft part.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from pytest_k8sstate.errors import CommandTimeout
from pytest_k8sstate.node import iptfast, netnsio, reuse
from pytest_k8sstate.node.exec import DockerExec, NodeExec
from pytest_k8sstate.parse.iptnft import BUILTIN_CHAINS

__all__ = ["ENV", "IPTABLES_TABLES", "Omission", "covered", "enabled", "merge_documents", "plan"]

ENV = "K8SSTATE_NFT_OMIT"
IPTABLES_TABLES = frozenset(BUILTIN_CHAINS)  # raw, mangle, filter, nat, security
_FAMILIES = {2: "ip", 10: "ip6", 1: "inet", 3: "arp", 7: "bridge", 5: "netdev"}
_PART_OF = {"ip": "iptables", "ip6": "ip6tables"}
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # a table name nft's command line takes as it is


@dataclass(frozen=True)
class Omission:
    kept: tuple[tuple[str, str], ...]
    """``(family, name)`` of the tables to list, in the kernel's order."""
    omitted: tuple[tuple[str, str], ...]
    generation: str
    """The ruleset generation the tables were listed at: if another commit came before the listing ran,
    the whole ruleset is read instead (one consistent view, as ``nft -j list ruleset`` gives)."""

    def shell(self) -> str:
        """The ``sh`` text printing one ``nft -j`` document per kept table (nothing when none is kept)."""
        if not self.kept:
            return "true"
        return "( " + " && ".join(shlex.join(a) for a in self.argvs()) + " )"

    def argvs(self) -> list[list[str]]:
        return [["nft", "-j", "list", "table", f, n] for f, n in self.kept]

    def exact(self, methods: dict[str, str], errors: dict[str, str]) -> bool:
        """Every left-out family's iptables part was read exactly over netlink in this capture."""
        parts = {_PART_OF[f] for f, _ in self.omitted}
        return all(methods.get(p) == iptfast.NETLINK_METHOD and p not in errors for p in parts)

    def unchanged(self, exec: NodeExec, timeout: float) -> bool:
        """No ruleset commit since the tables were listed."""
        try:
            return netnsio.nft_generation(exec, min(timeout, 30.0)) == self.generation
        except CommandTimeout:
            return False


def covered(omitted: tuple[tuple[str, str], ...], parts: list[str]) -> bool:
    """The iptables parts holding ``omitted``'s tables are among ``parts``."""
    return all(_PART_OF.get(f) in parts for f, _ in omitted)


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def plan(exec: NodeExec, wanted: list[str], timeout: float) -> Omission | None:
    """The tables to list and to leave out, or None (list the whole ruleset)."""
    if not enabled() or isinstance(exec, DockerExec):
        return None
    parts = [p for p in iptfast.FAMILY if p in wanted and reuse.iptables_is_nft(p)]
    if not parts:
        return None
    try:
        got = netnsio.nft_tables(exec, min(timeout, 30.0))
    except CommandTimeout:
        return None
    if not got:
        return None
    generation, tables = got
    large = set()
    for p in parts:
        fam = iptfast.FAMILY[p]
        ipt = [t for t in tables if t[0] == fam and t[1] in IPTABLES_TABLES]
        if sum(t[4] for t in ipt) >= iptfast.MIN_CHAINS and all(_iptables_only(t) for t in ipt):
            large.add(fam)
    if not large:
        return None
    kept: list[tuple[str, str]] = []
    omitted: list[tuple[str, str]] = []
    for f, n, *_ in tables:
        family = _FAMILIES.get(f)
        if family is None or not _PLAIN.match(n):
            return None  # a table we could not name on nft's command line: list everything
        (omitted if f in large and n in IPTABLES_TABLES else kept).append((family, n))
    return Omission(tuple(kept), tuple(omitted), generation)


# iptables' own base chains: (hook number, priority, type) as iptables-nft creates them
_BASE = {
    ("filter", "INPUT"): (1, 0, "filter"),
    ("filter", "FORWARD"): (2, 0, "filter"),
    ("filter", "OUTPUT"): (3, 0, "filter"),
    ("nat", "PREROUTING"): (0, -100, "nat"),
    ("nat", "INPUT"): (1, 100, "nat"),
    ("nat", "OUTPUT"): (3, -100, "nat"),
    ("nat", "POSTROUTING"): (4, 100, "nat"),
    **{
        ("mangle", c): (h, -150, "route" if c == "OUTPUT" else "filter")
        for c, h in (("PREROUTING", 0), ("INPUT", 1), ("FORWARD", 2), ("OUTPUT", 3), ("POSTROUTING", 4))
    },
    ("raw", "PREROUTING"): (0, -300, "filter"),
    ("raw", "OUTPUT"): (3, -300, "filter"),
    ("security", "INPUT"): (1, 50, "filter"),
    ("security", "FORWARD"): (2, 50, "filter"),
    ("security", "OUTPUT"): (3, 50, "filter"),
}


def _iptables_only(t: netnsio.NftTableInfo) -> bool:
    """The table holds nothing the iptables part cannot show: no flags, nothing but chains (its use
    count: chains, sets, named objects and flowtables), base chains only as iptables-nft makes them."""
    _, name, flags, use, chains, bases = t
    if flags or use != chains:
        return False
    return all(_BASE.get((name, c)) == (hook, prio, kind) for c, hook, prio, kind in bases)


def merge_documents(data: bytes) -> bytes:
    """One ``{"nftables": [...]}`` document from the ``nft -j list table`` documents in ``data`` (one per
    line, as ``nft`` prints them), byte for byte what ``nft -j list ruleset`` prints for those tables:
    the first document's metainfo, then every document's items. ValueError when a document is not shaped
    like ``nft``'s output."""
    docs = [d.rstrip() for d in data.split(b"\n") if d.strip()]
    if not docs:
        return b'{"nftables": []}'
    head = b""
    bodies = []
    for doc in docs:
        start = doc.find(b', {"table": ')
        if not doc.startswith(b'{"nftables": [{"metainfo": ') or not doc.endswith(b"]}") or start < 0:
            raise ValueError(f"not an `nft -j list table` document: {doc[:80]!r}")
        head = head or doc[:start]
        bodies.append(doc[start + 2 : -2])
    return head + b", " + b", ".join(bodies) + b"]}"
