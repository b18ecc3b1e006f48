"""Rules of a node's previous ``nft -j list ruleset`` found again by their bytes (incremental parsing).

A capture right after kube-proxy changed one Service re-reads every node's ruleset: at 2,000 Services
(iptables-nft: about 22,000 rules in nft JSON per node) parsing, validating and rendering every rule
again, then sharing equal sub-trees (:mod:`pytest_k8sstate.node.compact`), costs about a second per
node, for a handful of changed rules. :func:`~pytest_k8sstate.parse.nft.parse_nft_json` given the
previous capture's ruleset instead takes every rule whose bytes are unchanged from it (its expressions,
comment and text: read-only objects, shared between the two snapshots like any reused part), and parses
only the others.

A rule's key is a 128-bit BLAKE2b digest of its family, table and chain as printed and of its bytes from
just after ``"handle": N, `` up to where the next rule object starts (without the ``, `` before it, or
the ``]}`` that ends the document): equal keys are equal rule contents (counters included: they are part
of ``expr``), whatever the handle. (The last rule of a table is keyed together with the next table's
header and chains: it is found again only when those did not change either.) The key is only taken when
the output has exactly one ``{"rule": {`` per rule object and no other object whose first key is
``"rule"`` (neither can occur inside a JSON string) and the rule's bytes start with exactly what its
decoded family, table, chain and handle print as — otherwise (another nft version's spacing, escaped
names, no handle) the rule is simply parsed. A rule found by its key is taken only if its decoded
expressions and comment also equal the earlier rule's: a crafted document whose byte positions do not
line up with its rule objects cannot hand a rule another rule's parse. The
keys live in the ruleset's scratch ``cache`` (``compare=False``), so they go away with the snapshot.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_k8sstate.parse.nft import NftRule, NftRuleset

__all__ = ["RuleIndex", "RuleKey", "fresh_rules", "previous_rules", "remember_rules"]

_RULE_START = re.compile(rb'\{"rule": \{')
_ANY_RULE_KEY = re.compile(rb'\{\s*"rule"\s*:')  # any spacing: a rule printed otherwise, or nested
_KEYS = "parse.nftmemo.rules"
_FRESH = "parse.nftmemo.fresh"

RuleKey = bytes


class RuleIndex:
    """Where each rule object of one raw ``nft -j`` output starts, to key the ``i``-th rule by its bytes."""

    def __init__(self, data: bytes, rules: int) -> None:
        starts = [m.start() for m in _RULE_START.finditer(data)]
        self.ok = len(starts) == rules == sum(1 for _ in _ANY_RULE_KEY.finditer(data))
        self._raw = data
        self._view = memoryview(data)
        self._starts = [*starts, len(data)]

    def key(self, i: int, family: str, table: str, chain: str, handle: Any) -> RuleKey | None:
        """The key of rule ``i`` (in output order), or None when its bytes are not what they must be."""
        if not self.ok or type(handle) is not int:
            return None
        prefix = _prefix(family, table, chain)
        if not prefix:
            return None
        start = self._starts[i]
        at = start + len(prefix)
        handle_text = b"%d, " % handle
        if not (self._raw.startswith(prefix, start) and self._raw.startswith(handle_text, at)):
            return None
        end = self._starts[i + 1]
        if end == len(self._raw):  # the last rule: without the list's and the document's ends
            end = len(self._raw.rstrip())
            if self._raw.endswith(b"]}", 0, end):
                end -= 2
        elif self._raw.startswith(b", ", end - 2):  # without the separator before the next item
            end -= 2
        digest = blake2b(prefix, digest_size=16)  # family, table and chain, as printed
        digest.update(self._view[at + len(handle_text) : end])
        return digest.digest()


@lru_cache(maxsize=1 << 17)
def _prefix(family: str, table: str, chain: str) -> bytes:
    """A rule object's start up to its handle, as nft prints it; b"" for a name nft cannot print.
    Cached: a chain's name repeats over every node and every capture (kube-proxy: a chain per Service)."""
    try:
        return (
            b'{"rule": {"family": '
            + _js(family)
            + b', "table": '
            + _js(table)
            + b', "chain": '
            + _js(chain)
            + b', "handle": '
        )
    except UnicodeEncodeError:  # a lone surrogate (a JSON \ud800 escape): nft prints no such name
        return b""


def _js(s: str) -> bytes:
    return json.dumps(s, ensure_ascii=False).encode()


def previous_rules(previous: NftRuleset | None) -> dict[RuleKey, NftRule]:
    """The keyed rules of ``previous`` (empty when it was parsed without an index)."""
    if previous is None:
        return {}
    got: dict[RuleKey, NftRule] = previous.cache.get(_KEYS) or {}
    return got


def remember_rules(rs: NftRuleset, keyed: dict[RuleKey, NftRule], fresh: list[NftRule]) -> None:
    """Record ``rs``'s keyed rules (for the next capture) and the rules it parsed itself."""
    rs.cache[_KEYS] = keyed
    rs.cache[_FRESH] = fresh


def fresh_rules(rs: NftRuleset) -> list[NftRule] | None:
    """The rules ``rs``'s parse did not take from the previous capture (None: all of them); once."""
    got: list[NftRule] | None = rs.cache.pop(_FRESH, None)
    return got
