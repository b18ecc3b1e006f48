"""A large iptables chain's rules by the one destination address each can match (the tracer's index).

``KUBE-SERVICES`` holds one rule per Service port, most of them ``-d VIP/32 ...``: a packet to one
Service needs only the rules for its address and the ones that could match any address, in chain order
(:func:`chain_index`). Building that index reads every rule line (2,000 lines: about 2.7 ms), and a
snapshot holds the same chain on every node, as does the next snapshot when the Services did not
change. So two memos, both pure functions of the text they are keyed by:

* a chain's whole dumped text (and name) → its index, for the last :data:`CHAIN_MEMO` chains: the
  same text on another node or in the next snapshot costs one string hash;
* a ``[P:B] -A NAME -d ...`` line as dumped → the address it is indexed by, for at most
  :data:`LINE_MEMO` lines: a chain whose text changed reads each known line with one lookup
  (kube-proxy writes ``KUBE-SERVICES`` in another order on every node and at every sync).

Lines that would have to be built to be read (not ``-A NAME -d``, or an unclosed quote: building it
raises the ParseError naming it) are never memoised, so an error names the same line as without them.
The indexes are shared between rulesets: read, never changed.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from operator import itemgetter

from pytest_k8sstate.parse.iptables import Chain, Rule, unclosed_quote
from pytest_k8sstate.trace.ipt_match import addr

__all__ = ["CHAIN_MEMO", "LINE_MEMO", "Index", "chain_index", "index_key"]

Index = tuple[dict[str, list[int]], list[int]]
"""Rule positions by destination address (canonical text), and the positions of the other rules."""

CHAIN_MEMO = 8
LINE_MEMO = 1 << 15  # about 8 MB of lines: a 10,000-Service KUBE-SERVICES three times over

_chains: dict[tuple[str, str], Index] = {}  # (name, text) → index, oldest first
_lines: dict[str, str] = {}  # "[P:B] -A NAME -d ..." as dumped → its address, or "" for none
_lock = threading.Lock()


def chain_index(ch: Chain) -> Index:
    """``ch``'s index: the rules that can only match one destination address (a plain ``-d IP[/32]``)
    by that address, and the rest. Leaves ``ch`` reading its rules line by line, as the walk through
    the index expects (:meth:`~pytest_k8sstate.parse.iptables.Chain.unbuilt_lines`)."""
    text = ch.rules_text()
    lines = ch.unbuilt_lines()
    if text is None or lines is None:
        return _build(ch, None)
    key = (ch.name, text)
    got = _chains.get(key)
    if got is not None:
        return got
    got = _build(ch, lines)
    with _lock:
        _chains[key] = got
        while len(_chains) > CHAIN_MEMO:
            del _chains[next(iter(_chains))]
    return got


def _build(ch: Chain, lines: list[tuple[str, int]] | None) -> Index:
    """While the chain is not built, a line ``[P:B] -A NAME -d TOKEN ...`` is read as its rule's spec
    would be (the spec starts right after ``-A NAME ``) and checked as building it would (a line with
    an unclosed double quote is built, which raises its ParseError); any other line's rule is built
    and asked. Lines are taken in order, so the first bad line is the one named, as when the chain is
    built."""
    by_dst: dict[str, list[int]] = {}
    generic: list[int] = []
    if lines is None:
        for i, r in enumerate(ch.rules):
            _add(by_dst, generic, i, _rule_key(r))
        return by_dst, generic
    head = f"-A {ch.name} -d "
    known = _lines
    if len(known) > LINE_MEMO:
        known.clear()
    texts = list(map(itemgetter(0), lines))
    for i, got in enumerate(list(map(known.get, texts))):  # one C loop for the lines seen before
        if got is None:
            got = _line_key(texts[i], head)
            if got is None:  # read by building the rule (which raises for a bad line)
                _add(by_dst, generic, i, _rule_key(ch.rule(i)))
                continue
            known[texts[i]] = got
        if got:
            by_dst.setdefault(got, []).append(i)
        else:
            generic.append(i)
    return by_dst, generic


def _add(by_dst: dict[str, list[int]], generic: list[int], i: int, ip: str | None) -> None:
    if ip is None:
        generic.append(i)
    else:
        by_dst.setdefault(ip, []).append(i)


def _line_key(line: str, head: str) -> str | None:
    """A ``[P:B] -A NAME -d TOKEN ...`` line's address as its rule would give it ("" for none), read as
    the rule's spec would be (it starts right after ``-A NAME ``); None for a line that must be built
    to be read: any other line, or one with an unclosed double quote (building it raises)."""
    text = line[line.find("] ") + 2 :] if line[:1] == "[" else line
    if not text.startswith(head) or unclosed_quote(text, len(head) - 3):
        return None
    tok = text[len(head) :].split(" ", 1)[0]
    return (index_key(tok) or "") if tok != "!" else ""


def _rule_key(r: Rule) -> str | None:
    spec = r.spec
    if spec.startswith("-d "):
        tok = spec[3:].split(" ", 1)[0]
        return index_key(tok) if tok != "!" else None
    d = r.basic("-d")
    return index_key(d.value) if d is not None and not d.negated else None


_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}", re.ASCII)


@lru_cache(maxsize=1 << 16)
def index_key(text: str) -> str | None:
    """``10.0.0.1``/``10.0.0.1/32`` → itself without /32; ``FD00:0::1/128`` → ``fd00::1``; else None.

    Cached: every node of a cluster, and every snapshot's fresh parse, has the same Service addresses."""
    if text.endswith("/32"):
        text = text[:-3]
    if _IPV4.fullmatch(text):
        return text  # canonical already: four decimal octets without leading zeros
    if ":" not in text:
        return None
    if text.endswith("/128"):
        text = text[:-4]
    try:
        a = addr(text)
    except ValueError:
        return None
    return a.compressed if a.version == 6 else None
