"""iptables-nft tables read over netlink → exactly what ``iptables-save -c`` prints for them.

Input: the output of :mod:`pytest_k8sstate.node.nfdump` run on a node (a header line, then the
kernel's raw ``NEWTABLE``/``NEWCHAIN``/``NEWRULE`` nf_tables messages for one family). Output: the
``iptables-save -c`` text of iptables 1.8.x (nf_tables) for those tables, line for line — table and
chain order, fake built-in chains, counters, native expressions (``-s/-d/-i/-o/-p``, tcp/udp ports and
flags, ``-m mark``) and the ``xt`` compat matches/targets kube-proxy, Docker and CNIs write (comment,
statistic, recent, multiport, addrtype, conntrack/state, tcp/udp, MARK, CONNMARK, DNAT, SNAT,
MASQUERADE, REJECT) — so :func:`~pytest_k8sstate.parse.iptables.parse_iptables_save` gives the same
ruleset as for the real ``iptables-save`` output (``# Generated``/``# Completed`` comment lines are
written at the same places so even the line numbers agree).

Anything this module cannot reproduce byte for byte (an expression or extension it does not know,
a revision with another layout, a table iptables itself would call incompatible) raises
:class:`Untranslatable` naming the table, chain, rule handle and the reason; the caller then runs the
real ``iptables-save`` instead. Never a guess.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import blake2b

from pytest_k8sstate.parse.gcpause import gc_paused
from pytest_k8sstate.parse.iptnft_ext import MATCHES, TARGETS
from pytest_k8sstate.parse.iptnft_rule import translate_ops
from pytest_k8sstate.parse.nfnl import CNT_HEAD, Op, Untranslatable, attrs, decode_expr, nl_str, u32, u64

__all__ = [
    "BUILTIN_CHAINS",
    "HEADER",
    "Translated",
    "Untranslatable",
    "netlink_to_iptables_save",
    "netlink_translate",
    "patch",
]

HEADER = b"K8SS-NFTNL 1 "

_AF_INET, _AF_INET6 = 2, 10
_MSG_NEWTABLE, _MSG_NEWCHAIN, _MSG_NEWRULE = 0, 3, 6
_HDR = struct.Struct("=IH")
_ATTR = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_TABLE_ORDER = ("mangle", "security", "raw", "filter", "nat")  # iptables-nft-save's order
_BUILTIN: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
BUILTIN_CHAINS = _BUILTIN
"""Each iptables table's built-in chains."""


# --- the dump ------------------------------------------------------------------------------------


ChainInfo = tuple[str | None, int, int]
"""A chain as ``iptables-save`` declares it: policy (None for a user-defined chain), packets, bytes."""


@dataclass
class Translated:
    """A translated dump: each iptables table's chains and each chain's rule lines, as
    :func:`netlink_to_iptables_save` prints them (:meth:`text`). Kept by the capture of a large ruleset
    so that a later change is applied chain by chain (:func:`patch`)."""

    tables: dict[str, dict[str, ChainInfo]]
    rules: dict[tuple[str, str], list[str]]
    counters: bool = True

    def text(self) -> str:
        """The ``iptables-save`` text; :class:`Untranslatable` for a chain name that is not UTF-8."""
        try:
            return _render_dump(self.tables, self.rules, self.counters)
        except UnicodeEncodeError as exc:
            raise Untranslatable(f"a malformed nf_tables netlink dump ({exc!r})") from None

    def rule_count(self) -> int:
        return sum(len(v) for v in self.rules.values())


def netlink_to_iptables_save(
    data: bytes,
    *,
    counters: bool = True,
    previous: Mapping[bytes, str] | None = None,
    memo: dict[bytes, str] | None = None,
    shared: dict[bytes, str] | None = None,
) -> str:
    """The ``iptables-save [-c]`` text for a :mod:`~pytest_k8sstate.node.nfdump` output.

    ``memo``: filled with each translated rule's text by its key (a BLAKE2b-128 digest of the family and
    the rule's expressions without the counters iptables-nft writes: what the text depends on, and
    nothing else; a rule with a counter in another layout is not memoised), and with the lines of each
    run of one chain's rule messages by a digest of all their bytes after the headers (handles and
    counters included; :data:`RUN_PREFIX`); ``previous``: such a memo of an earlier dump, whose runs and
    rules are taken from it instead of being decoded again (a capture after a change translates only the
    rules that changed, and walks only the chains that changed). ``shared``: rule translations (by the
    same keys) shared with other dumps translated at the same time — the nodes of one snapshot hold
    mostly the same rules; read and filled like ``memo``, never holding runs.

    Raises :class:`Untranslatable` (with table, chain, rule handle and reason) for anything that
    would not come out exactly as iptables-save prints it.
    """
    return netlink_translate(data, counters=counters, previous=previous, memo=memo, shared=shared).text()


def netlink_translate(
    data: bytes,
    *,
    counters: bool = True,
    previous: Mapping[bytes, str] | None = None,
    memo: dict[bytes, str] | None = None,
    shared: dict[bytes, str] | None = None,
) -> Translated:
    """:func:`netlink_to_iptables_save` before its text is rendered."""
    with gc_paused():  # 100k+ small objects: the cyclic GC would rescan them over and over (4x slower)
        try:
            tables, rules = _translate_dump(
                data,
                counters,
                previous or {},
                {} if memo is None else memo,
                {} if shared is None else shared,
                memo is not None,
            )
        except (struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
            raise Untranslatable(f"a malformed nf_tables netlink dump ({exc!r})") from None
    return Translated(tables, rules, counters)


def patch(
    base: Translated,
    data: bytes,
    chains: Iterable[tuple[str, str]],
    *,
    previous: Mapping[bytes, str] | None = None,
    memo: dict[bytes, str] | None = None,
) -> Translated:
    """``base`` with each of ``chains`` (table, chain) as ``data`` shows it now: ``data`` is a dump of
    those chains only (each existing one's ``NEWCHAIN`` and ``NEWRULE`` messages, after the ``NEWTABLE``
    message of its table); a chain it does not hold is gone; a chain ``""`` stands for its table alone.
    The other chains are ``base``'s, unchanged. A table ``base`` does not have raises
    :class:`Untranslatable` (the caller reads everything again)."""
    part = netlink_translate(data, counters=base.counters, previous=previous, memo=memo)
    tables = dict(base.tables)
    rules = dict(base.rules)
    copied: set[str] = set()
    for t, c in chains:
        if t not in _BUILTIN:
            continue  # not an iptables table: not in the dump either
        if t not in tables:
            if t in part.tables:
                raise Untranslatable(f"table {t} is new since the last dump")
            continue
        if not c:
            continue  # the table was announced and is not new: its chains are announced on their own
        if t not in copied:
            tables[t] = dict(tables[t])
            copied.add(t)
        now = part.tables.get(t, {})
        if c in now:
            tables[t][c] = now[c]
            rules[(t, c)] = part.rules.get((t, c), [])
        else:
            tables[t].pop(c, None)
            rules.pop((t, c), None)
    return Translated(tables, rules, base.counters)


def _translate_dump(
    data: bytes,
    counters: bool,
    previous: Mapping[bytes, str],
    memo: dict[bytes, str],
    shared: dict[bytes, str],
    keep_runs: bool,
) -> tuple[dict[str, dict[str, ChainInfo]], dict[tuple[str, str], list[str]]]:
    # runs of one chain's rule messages (RUN_PREFIX): looked up before they are walked when ``previous``
    # has some (_scan_run reads each run ahead), else only recorded for the next dump as they are walked
    # (``keep_runs``: the caller keeps ``memo``)
    ahead = RUN_PREFIX in previous
    inline = keep_runs and not ahead
    cur_tc: tuple[bytes, bytes] | None = None  # the run being recorded inline: its table and chain,
    cur_h = blake2b(digest_size=16)  # the digest of its messages so far,
    cur_at: tuple[str, str] | None = None  # its chain's name, and its first line in that chain
    cur_first = 0
    nl = data.find(b"\n")
    if not data.startswith(HEADER) or nl < 0:
        raise Untranslatable("not a K8SS-NFTNL dump (missing header line)")
    fam = int(data[len(HEADER) : nl])
    if fam not in (_AF_INET, _AF_INET6):
        raise Untranslatable(f"address family {fam}")
    fam_key = b"%d:" % fam
    run_seed = b"run %d %d:" % (fam, counters)
    tables: dict[str, dict[str, ChainInfo]] = {}
    rules: dict[tuple[str, str], list[str]] = {}
    cache: dict[bytes, Op] = {}
    names: dict[bytes, str] = {}
    pos, end = nl + 1, len(data)
    view = memoryview(data)
    run_end = 0  # the end of the current run of one chain's rule messages (see _scan_run)
    run: tuple[bytes, tuple[str, str], int] | None = None  # its memo key, chain, first line
    runs_taken = 0
    hdr = _HDR.unpack_from
    attr = _ATTR.unpack_from
    u16 = _U16.unpack_from
    cnt_head = CNT_HEAD
    while pos + 20 <= end:
        length, mtype = hdr(data, pos)
        if length < 20 or pos + length > end:
            raise Untranslatable(f"a truncated netlink message at offset {pos}")
        mpos, mend = pos, pos + length
        kind = mtype & 0xFF
        if kind != _MSG_NEWRULE:
            if cur_at is not None:
                memo[RUN_PREFIX + cur_h.digest()] = "\n".join(rules[cur_at][cur_first:])
                cur_at = cur_tc = None
            a = attrs(data, pos + 20, mend)
            if kind == _MSG_NEWTABLE:
                name = nl_str(a.get(1, b""))
                if name in _BUILTIN:
                    tables.setdefault(name, {})
            elif kind == _MSG_NEWCHAIN:
                _chain(tables, a)
            pos += (length + 3) & ~3
            continue
        if ahead and pos >= run_end:  # a run of one chain's rules starts: all of it as in an earlier dump?
            run_end, tb, cb, digest = _scan_run(data, view, pos, end, run_seed)
            key_run = RUN_PREFIX + digest
            tname = names.get(tb) or names.setdefault(tb, nl_str(tb))
            cname = names.get(cb) or names.setdefault(cb, nl_str(cb))
            text = (memo.get(key_run) or previous.get(key_run)) if digest else None
            if text is not None and tname in tables:
                rules.setdefault((tname, cname), []).extend(text.split("\n"))
                memo[key_run] = text
                runs_taken += 1
                pos = run_end
                continue
            run = (key_run, (tname, cname), len(rules.get((tname, cname), ()))) if tname in tables else None
        # a rule: table, chain, handle, expressions (and user data, which iptables 1.8 never writes)
        p = pos + 20
        tb = cb = b""
        epos = eend = 0
        other = False
        while p + 4 <= mend:
            n, k = attr(data, p)
            if n < 4 or p + n > mend:
                raise Untranslatable(f"a malformed rule message at offset {pos}")
            k &= 0x3FFF
            if k == 4:
                epos, eend = p + 4, p + n
            elif k == 1:
                tb = data[p + 4 : p + n]
            elif k == 2:
                cb = data[p + 4 : p + n]
            elif k == 7:
                other = True
            p += (n + 3) & ~3
        pos += (length + 3) & ~3
        tname = names.get(tb) or names.setdefault(tb, nl_str(tb))
        if tname not in tables:
            continue
        cname = names.get(cb) or names.setdefault(cb, nl_str(cb))
        if inline:  # the digest _scan_run would compute for this run, message by message
            if cur_tc != (tb, cb):
                if cur_at is not None:
                    memo[RUN_PREFIX + cur_h.digest()] = "\n".join(rules[cur_at][cur_first:])
                cur_tc, cur_h, cur_at = (tb, cb), blake2b(run_seed, digest_size=16), (tname, cname)
                cur_first = len(rules.get(cur_at, ()))
            cur_h.update(b"%d:" % (length - 20))
            cur_h.update(view[mpos + 20 : mend])
        if other:
            raise Untranslatable(f"{_where(data, mpos, length)}: the rule carries user data")
        # the expressions' boundaries and counters first: the rest (with their headers, so the pieces
        # cannot be read another way) keys the rule in the memos
        cnt = (0, 0)
        cnt_at = -1  # where the last counter read here was (a decoded one after it wins)
        pieces: list[tuple[int, int]] = []  # (start, end) of the runs of other expressions
        start = e = epos
        while e + 4 <= eend:
            n = u16(data, e)[0]
            if n < 4 or e + n > eend:
                raise Untranslatable(f"{_where(data, mpos, length)}: a malformed expression")
            e0 = e
            e += (n + 3) & ~3
            if (
                n == 44
                and data.startswith(cnt_head, e0 + 4)
                and data[e0 + 32 : e0 + 36] == b"\x0c\x00\x02\x00"
            ):
                cnt = (
                    int.from_bytes(data[e0 + 36 : e0 + 44], "big"),
                    int.from_bytes(data[e0 + 24 : e0 + 32], "big"),
                )
                cnt_at = e0
                if start < e0:
                    pieces.append((start, e0))
                start = e
        if start < e:
            pieces.append((start, e))
        key = blake2b(fam_key, digest_size=16)
        for p0, p1 in pieces:
            key.update(data[p0:p1])
        digest = key.digest()
        spec = memo.get(digest)
        if spec is None:
            spec = previous.get(digest) or shared.get(digest)
            if spec is None:
                spec, odd = _translate_rule(data, pieces, fam, cache, mpos, length)
                if odd is None:
                    memo[digest] = shared[digest] = spec
                elif odd[0] > cnt_at:  # a counter in another layout, decoded: the last one counts
                    cnt = odd[1]
            else:
                memo[digest] = spec
        line = f"-A {cname}{spec}"
        rules.setdefault((tname, cname), []).append(f"[{cnt[0]}:{cnt[1]}] {line}" if counters else line)
        if pos >= run_end and run is not None:  # the run translated: its lines, for the next dump
            memo[run[0]] = "\n".join(rules[run[1]][run[2] :])
            run = None
    if cur_at is not None:
        memo[RUN_PREFIX + cur_h.digest()] = "\n".join(rules[cur_at][cur_first:])
    if keep_runs:
        memo[RUN_PREFIX] = ""  # a marker: this memo holds runs (the next dump looks them up)
    if runs_taken and len(previous) <= 2 * sum(len(v) for v in rules.values()) + 64:
        # the rules of the runs taken whole were not keyed one by one this time: keep the earlier keys
        # (bounded: a memo at most about twice the ruleset), so a later change in one of those chains
        # translates only its changed rules
        for k, v in previous.items():
            memo.setdefault(k, v)
    return tables, rules


RUN_PREFIX = b"run:"
"""Memo keys of whole runs of one chain's rule messages (rule keys are bare 16-byte digests)."""


def _scan_run(
    data: bytes, view: memoryview, pos: int, end: int, seed: bytes
) -> tuple[int, bytes, bytes, bytes]:
    """The run of rule messages from ``pos`` that name the same table and chain: where it ends, the
    table and chain, and a digest of ``seed`` and every message's bytes after its headers (rule handle,
    expressions, counters: all the text of the run depends on, the netlink header's sequence number and
    port aside). A message that is not a well-formed rule of that chain ends the run."""
    hdr = _HDR.unpack_from
    attr = _ATTR.unpack_from
    first: tuple[bytes, bytes] | None = None
    h = blake2b(seed, digest_size=16)
    p = pos
    while p + 20 <= end:
        length, mtype = hdr(data, p)
        if length < 20 or p + length > end or mtype & 0xFF != _MSG_NEWRULE:
            break
        q, mend = p + 20, p + length
        tb = cb = None
        while q + 4 <= mend and (tb is None or cb is None):
            n, k = attr(data, q)
            if n < 4 or q + n > mend:
                break
            k &= 0x3FFF
            if k == 1:
                tb = data[q + 4 : q + n]
            elif k == 2:
                cb = data[q + 4 : q + n]
            q += (n + 3) & ~3
        if tb is None or cb is None or (first is not None and first != (tb, cb)):
            break
        first = (tb, cb)
        h.update(b"%d:" % (length - 20))
        h.update(view[p + 20 : mend])
        p += (length + 3) & ~3
    if first is None:
        return pos, b"", b"", b""
    return p, first[0], first[1], h.digest()


def _translate_rule(
    data: bytes,
    pieces: list[tuple[int, int]],
    fam: int,
    cache: dict[bytes, Op],
    mpos: int,
    length: int,
) -> tuple[str, tuple[int, tuple[int, int]] | None]:
    """One rule's text after ``-A CHAIN`` from its expressions in ``pieces`` of ``data`` (``cache``:
    decoded expressions by their bytes, shared by the dump's rules), and the position and value of the
    last expression that decoded as a counter (one the caller's fast check did not take out), if any —
    such a rule's counters are in its key, so it is not memoised."""
    ops: list[Op] = []
    odd: tuple[int, tuple[int, int]] | None = None
    u16 = _U16.unpack_from
    get = cache.get
    for a, b in pieces:
        epos = a
        while epos < b:
            n = u16(data, epos)[0]
            at = epos
            e0 = epos + 4
            epos += (n + 3) & ~3
            raw = data[e0 : e0 + n - 4]
            op = get(raw)
            if op is None:
                try:
                    op = decode_expr(raw, fam)
                    if op[0] == "xt":
                        op = _extension(op, fam)
                except Untranslatable as exc:
                    raise Untranslatable(f"{_where(data, mpos, length)}: {exc}") from None
                except (struct.error, KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
                    raise Untranslatable(
                        f"{_where(data, mpos, length)}: an undecodable expression ({exc!r})"
                    ) from None
                cache[raw] = op
            if op[0] == "counter":
                odd = (at, (op[1], op[2]))
                continue
            ops.append(op)
    try:
        return translate_ops(ops, fam), odd
    except Untranslatable as exc:
        raise Untranslatable(f"{_where(data, mpos, length)}: {exc}") from None
    except (struct.error, KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise Untranslatable(f"{_where(data, mpos, length)}: an undecodable rule ({exc!r})") from None


def _extension(op: Op, fam: int) -> Op:
    """An ``("xt", match|target, name, revision, info)`` operation → its rendered form."""
    _, kind, name, rev, info = op
    if kind == "match":
        fn = MATCHES.get(name)
        if fn is None:
            raise Untranslatable(f"match extension {name!r} (revision {rev})")
        return ("xtmatch", *fn(info, fam, rev))
    tfn = TARGETS.get(name)
    if tfn is None:
        raise Untranslatable(f"target extension {name!r} (revision {rev})")
    return ("verdict", f" -j {name}" + tfn(info, fam, rev))


def _where(data: bytes, pos: int, length: int) -> str:
    """ "table T, chain C, rule handle H" of the rule message at ``pos`` (for error messages)."""
    a = attrs(data, pos + 20, pos + length)
    return (
        f"table {nl_str(a.get(1, b''))}, chain {nl_str(a.get(2, b''))}, rule handle {u64(a.get(3, bytes(8)))}"
    )


def _chain(tables: dict[str, dict[str, ChainInfo]], a: dict[int, bytes]) -> None:
    tname, cname = nl_str(a.get(1, b"")), nl_str(a.get(3, b""))
    if tname not in tables:
        return
    builtin = cname in _BUILTIN[tname]
    if (4 in a) != builtin:
        raise Untranslatable(
            f"table {tname}, chain {cname}: "
            + ("a base chain iptables does not know" if 4 in a else "a built-in name without a hook")
        )
    policy: str | None = None
    pk = by = 0
    if builtin:
        pol = u32(a[5]) if 5 in a else 1
        if pol not in (0, 1):
            raise Untranslatable(f"table {tname}, chain {cname}: policy {pol}")
        policy = "ACCEPT" if pol == 1 else "DROP"
        if 8 in a:
            c = attrs(a[8])
            by, pk = u64(c.get(1, bytes(8))), u64(c.get(2, bytes(8)))
    tables[tname][cname] = (policy, pk, by)


def _render_dump(
    tables: dict[str, dict[str, ChainInfo]],
    rules: dict[tuple[str, str], list[str]],
    counters: bool,
) -> str:
    out: list[str] = []
    for tname in _TABLE_ORDER:
        chains = tables.get(tname)
        if chains is None:
            continue
        out.append("# Generated by pytest-k8sstate from nf_tables netlink (iptables-save -c format)")
        out.append(f"*{tname}")
        order = list(_BUILTIN[tname]) + sorted(
            (c for c in chains if c not in _BUILTIN[tname]), key=lambda c: c.encode()
        )
        for c in order:
            policy, pk, by = chains.get(c, ("ACCEPT", 0, 0))
            out.append(f":{c} {policy or '-'} [{pk}:{by}]")
        for c in order:
            out.extend(rules.get((tname, c), ()))
        out.append("COMMIT")
        out.append("# Completed")
    return "\n".join(out) + "\n" if out else ""
