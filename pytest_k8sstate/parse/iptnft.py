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
from pytest_k8sstate.parse.iptables import IptablesRuleset
from pytest_k8sstate.parse.iptnft_render import BUILTIN as _BUILTIN
from pytest_k8sstate.parse.iptnft_render import ChainInfo, build_ruleset, render_dump
from pytest_k8sstate.parse.iptnft_rule import translate_rule, where
from pytest_k8sstate.parse.iptnft_runs import BLOCK_PREFIX, RUN_PREFIX
from pytest_k8sstate.parse.iptnft_runs import declare as _declare
from pytest_k8sstate.parse.iptnft_runs import decls_text as _decls_text
from pytest_k8sstate.parse.iptnft_runs import lead as _lead
from pytest_k8sstate.parse.iptnft_runs import record_block as _record_block
from pytest_k8sstate.parse.iptnft_runs import record_run as _record_run
from pytest_k8sstate.parse.iptnft_runs import scan_run as _scan_run
from pytest_k8sstate.parse.nfnl import (
    CNT_HEAD,
    PKTS_HEAD,
    Op,
    Untranslatable,
    attrs,
    host_u32,
    nl_str,
    u32,
    u64,
)

__all__ = [
    "BLOCK_PREFIX",
    "BUILTIN_CHAINS",
    "HEADER",
    "RUN_PREFIX",
    "Translated",
    "Untranslatable",
    "netlink_to_iptables_save",
    "netlink_translate",
    "patch",
]

HEADER = b"K8SS-NFTNL 1 "

_AF_INET, _AF_INET6 = 2, 10
_MSG_NEWTABLE, _MSG_NEWCHAIN, _MSG_NEWRULE = 0, 3, 6
_BLOCK_TYPE = (10 << 8) | 255  # nfdump's block marker (node/nfdump.py): its sequence number is the length
_DECLS_TYPE = (10 << 8) | 254  # the same for the block of the chain declarations
_HDR = struct.Struct("=IH")
_ATTR = struct.Struct("=HH")
_CNT_VALS = struct.Struct(">Q4xQ")  # a counter expression's bytes and packets, after its head
BUILTIN_CHAINS = _BUILTIN
"""Each iptables table's built-in chains."""


# --- the dump ------------------------------------------------------------------------------------


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
            return render_dump(self.tables, self.rules)
        except UnicodeEncodeError as exc:
            raise Untranslatable(f"a malformed nf_tables netlink dump ({exc!r})") from None

    def rule_count(self) -> int:
        return sum(len(v) for v in self.rules.values())

    def ruleset(self, source: str) -> IptablesRuleset | None:
        """What :func:`~pytest_k8sstate.parse.iptables.parse_iptables_save` gives for :meth:`text`,
        built without the text; None where the text must be parsed (see
        :func:`~pytest_k8sstate.parse.iptnft_render.build_ruleset`)."""
        with gc_paused():  # thousands of chains: no collection over the snapshots a session holds meanwhile
            return build_ruleset(self.tables, self.rules, source)


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
    the rule's expressions but the values of the one counter iptables-nft writes, found by its bytes:
    what the text depends on, and nothing else. A rule is memoised only when its translation found
    that counter there and no other one, so a key shared with a memoised rule means the same
    expressions; a rule with two counters, or one in another layout, is not memoised), and with the
    lines of each run of one chain's rule messages by a digest of all their bytes after the headers
    (handles and counters included; :data:`RUN_PREFIX`); ``previous``: such a memo of an earlier dump,
    whose runs and rules are taken from it instead of being decoded again (a capture after a change
    translates only the rules that changed, and walks only the chains that changed). ``shared``: rule
    translations (by the same keys) shared with other dumps translated at the same time — the nodes of
    one snapshot hold mostly the same rules; read and filled like ``memo``, never holding runs.

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
    shared: dict[bytes, str] | None = None,
) -> Translated:
    """``base`` with each of ``chains`` (table, chain) as ``data`` shows it now: ``data`` is a dump of
    those chains only (each existing one's ``NEWCHAIN`` and ``NEWRULE`` messages, after the ``NEWTABLE``
    message of its table); a chain it does not hold is gone; a chain ``""`` stands for its table alone.
    The other chains are ``base``'s, unchanged. A table ``base`` does not have raises
    :class:`Untranslatable` (the caller reads everything again). ``previous``/``memo``/``shared``: as for
    :func:`netlink_to_iptables_save`."""
    part = netlink_translate(data, counters=base.counters, previous=previous, memo=memo, shared=shared)
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
    cur_h = blake2b(digest_size=16)  # the run being recorded inline: the digest of its messages so far,
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
    block_seed = b"blk %d %d:" % (fam, counters)
    decls_seed = b"decls %d:" % fam  # declarations do not depend on the counters flag
    blk_end = 0  # the end of the open block (nfdump's marker; BLOCK_PREFIX), 0 when none is open
    blk_key = b""
    blk_ok = False  # so far only rule messages of one chain of an iptables table
    blk_at: tuple[str, str] | None = None  # that chain, and its first line from the block
    blk_first = 0
    marked = False  # the dump has markers: its chains are looked up as blocks, not as runs
    decls_end = 0  # the end of the open block of chain declarations (nfdump's marker), 0 when none
    decls_key = b""
    decls: list[tuple[str, str, ChainInfo]] | None = None  # what they declared so far (None: not all kept)
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
    cnt_head = CNT_HEAD
    pkts = PKTS_HEAD
    cnt_vals = _CNT_VALS.unpack_from
    find = data.find
    last_tc = b""  # the previous rule message's table and chain attributes, as they were
    tb = cb = b""
    same = skip = False
    tname = cname = head = ""
    lines: list[str] = []
    while pos + 20 <= end:
        if blk_end and pos >= blk_end:  # a block walked: its lines, for the next dump (here or elsewhere)
            if pos == blk_end and blk_ok and blk_at is not None:
                _record_block(memo, shared, blk_key, blk_at, rules[blk_at], blk_first)
            blk_end = 0
        if decls_end and pos >= decls_end:
            if pos == decls_end and decls is not None:
                memo[decls_key] = shared[decls_key] = _decls_text(decls)
            decls_end = 0
        length, mtype = hdr(data, pos)
        if length < 20 or pos + length > end:
            raise Untranslatable(f"a truncated netlink message at offset {pos}")
        mpos, mend = pos, pos + length
        kind = mtype & 0xFF
        if kind != _MSG_NEWRULE:
            if cur_at is not None:
                _record_run(memo, cur_h, rules[cur_at], cur_first)
                cur_at = None
            last_tc = b""
            blk_ok = False  # not a rule message: an open block is not one chain's rules
            if decls_end and kind != _MSG_NEWCHAIN:
                decls = None  # not a chain declaration: the open block of them is not kept
            if (mtype == _BLOCK_TYPE or mtype == _DECLS_TYPE) and length == 20:  # a block: as before?
                of_rules = mtype == _BLOCK_TYPE  # one chain's rules, else every chain declaration
                if of_rules:
                    marked = True
                    inline = False  # blocks stand for runs here (and a run ends at each marker anyway)
                pos += 20
                bend = pos + host_u32(data, mpos + 8)
                if pos < bend <= end:
                    h = blake2b(block_seed if of_rules else decls_seed, digest_size=16)
                    h.update(view[pos:bend])
                    bkey = BLOCK_PREFIX + h.digest()
                    text = memo.get(bkey) or previous.get(bkey) or shared.get(bkey)
                    if text is None:  # walked, and recorded at its end if it is what its marker says
                        if of_rules:
                            blk_end, blk_ok, blk_at, blk_key = bend, True, None, bkey
                        else:
                            decls_end, decls, decls_key = bend, [], bkey
                        continue
                    if of_rules:
                        bt, bc, body = text.split("\0", 2)
                        if bt in tables:  # else the walk would skip its rules too
                            rules.setdefault((bt, bc), []).extend(body.split("\n"))
                        runs_taken += 1
                    else:
                        _declare(tables, text)
                    memo[bkey] = text
                    pos = bend
                continue
            a = attrs(data, pos + 20, mend)
            if kind == _MSG_NEWTABLE:
                name = nl_str(a.get(1, b""))
                if name in _BUILTIN:
                    tables.setdefault(name, {})
            elif kind == _MSG_NEWCHAIN:
                declared = _chain(tables, a)
                if decls is not None:
                    if declared is None:
                        decls = None  # its table unknown here: the block means another thing elsewhere
                    else:
                        decls.append(declared)
            pos += (length + 3) & ~3
            continue
        if ahead and pos >= run_end:  # a run of one chain's rules starts: all of it as in an earlier dump?
            run_end, rtb, rcb, digest = _scan_run(data, view, pos, end, run_seed)
            key_run = RUN_PREFIX + digest
            rt = names.get(rtb) or names.setdefault(rtb, nl_str(rtb))
            rc = names.get(rcb) or names.setdefault(rcb, nl_str(rcb))
            text = (memo.get(key_run) or previous.get(key_run)) if digest else None
            if text is not None and rt in tables:
                taken = rules.setdefault((rt, rc), [])
                if blk_end and (blk_at is None or blk_at == (rt, rc)):
                    if blk_at is None:
                        blk_at, blk_first = (rt, rc), len(taken)
                elif blk_end:
                    blk_ok = False
                taken.extend(text.split("\n"))
                memo[key_run] = text
                runs_taken += 1
                pos = run_end
                continue
            run = (key_run, (rt, rc), len(rules.get((rt, rc), ()))) if rt in tables else None
        # a rule: table, chain, handle, expressions (and user data, which iptables 1.8 never writes).
        # The table and chain attributes come first, as the previous rule's did, for a chain's rules
        # after its first: compared in place, they are not read again
        if last_tc and pos + 20 + len(last_tc) <= mend and data.startswith(last_tc, pos + 20):
            p = pos + 20 + len(last_tc)
            same = True
        else:
            p = pos + 20
            same = False
            tb = cb = b""
            last_tc = _lead(data, p, mend)
        epos = eend = 0
        other = False
        named = 0  # table and chain attributes read here (the last of each kind counts)
        while p + 4 <= mend:
            n, k = attr(data, p)
            if n < 4 or p + n > mend:
                raise Untranslatable(f"a malformed rule message at offset {pos}")
            k &= 0x3FFF
            if k == 4:
                epos, eend = p + 4, p + n
            elif k == 1:
                tb = data[p + 4 : p + n]
                named += 1
            elif k == 2:
                cb = data[p + 4 : p + n]
                named += 1
            elif k == 7:
                other = True
            p += (n + 3) & ~3
        pos += (length + 3) & ~3
        if named > (0 if same else 2):
            last_tc = b""  # names again after the leading ones: that start does not tell the names
        if not same or named:
            same = False
            tname = names.get(tb) or names.setdefault(tb, nl_str(tb))
            cname = names.get(cb) or names.setdefault(cb, nl_str(cb))
            skip = tname not in tables
            if not skip:
                lines = rules.setdefault((tname, cname), [])
                head = f"-A {cname}"
        if decls_end:
            decls = None  # a rule among the declarations: that block is not kept
        if blk_end:
            if skip or (blk_at is not None and blk_at != (tname, cname)):
                blk_ok = False
            elif blk_at is None:
                blk_at, blk_first = (tname, cname), len(lines)
        if skip:
            continue
        if inline:  # the digest _scan_run would compute for this run, message by message
            if not same or cur_at is None:
                if cur_at is not None:
                    _record_run(memo, cur_h, rules[cur_at], cur_first)
                cur_h, cur_at = blake2b(run_seed, digest_size=16), (tname, cname)
                cur_first = len(lines)
            cur_h.update(b"%d:" % (length - 20))
            cur_h.update(view[mpos + 20 : mend])
        if other:
            raise Untranslatable(f"{where(data, mpos, length)}: the rule carries user data")
        # the counter iptables-nft writes (found by its bytes; a rule translated is checked to have it
        # there and nowhere else), then the rule's key: every byte of its expressions but the counter's
        # values (what the text depends on, and nothing else)
        x = find(cnt_head, epos, eend)
        while (
            x >= 0
            and not (  # nfnl.fast_counter(data, x - 4, eend), inlined: a call per rule costs 5%
                x >= epos + 4
                and x + 40 <= eend
                and data[x - 4 : x - 2] == b",\x00"
                and data[x + 28 : x + 32] == pkts
            )
        ):
            x = find(cnt_head, x + 1, eend)
        if x >= 0:
            by, pk = cnt_vals(data, x + 20)
            cnt = (pk, by)
            key = blake2b(b"%s%d:" % (fam_key, x - epos), digest_size=16)
            key.update(data[epos : x + 20])
            key.update(data[x + 28 : x + 32])
            key.update(data[x + 40 : eend])
        else:
            cnt = (0, 0)
            key = blake2b(fam_key + b"-:", digest_size=16)  # not a digit: never a key of the form above
            key.update(data[epos:eend])
        digest = key.digest()
        spec = memo.get(digest)
        if spec is None:
            spec = previous.get(digest) or shared.get(digest)
            if spec is None:
                spec, fast, odd = translate_rule(data, epos, eend, fam, cache, mpos, length)
                if odd is None and fast == ([x - 4] if x >= 0 else []):
                    memo[digest] = shared[digest] = spec
                else:  # counters in another layout or place: the last one counts, and no memo
                    cnt = (0, 0)
                    if fast:
                        by, pk = cnt_vals(data, fast[-1] + 24)
                        cnt = (pk, by)
                    if odd is not None and (not fast or odd[0] > fast[-1]):
                        cnt = odd[1]
            else:
                memo[digest] = spec
        lines.append(f"[{cnt[0]}:{cnt[1]}] {head}{spec}" if counters else f"{head}{spec}")
        if pos >= run_end and run is not None:  # the run translated: its lines, for the next dump
            memo[run[0]] = "\n".join(rules[run[1]][run[2] :])
            run = None
    if cur_at is not None:
        _record_run(memo, cur_h, rules[cur_at], cur_first)
    if blk_end and pos == blk_end and blk_ok and blk_at is not None:
        _record_block(memo, shared, blk_key, blk_at, rules[blk_at], blk_first)
    if decls_end and pos == decls_end and decls is not None:
        memo[decls_key] = shared[decls_key] = _decls_text(decls)
    if keep_runs and not marked:
        memo[RUN_PREFIX] = ""  # a marker: this memo holds runs (the next dump looks them up)
    if runs_taken and len(previous) <= 2 * sum(len(v) for v in rules.values()) + 64:
        # the rules of the runs taken whole were not keyed one by one this time: keep the earlier keys
        # (bounded: a memo at most about twice the ruleset), so a later change in one of those chains
        # translates only its changed rules
        for k, v in previous.items():
            memo.setdefault(k, v)
    return tables, rules


def _chain(tables: dict[str, dict[str, ChainInfo]], a: dict[int, bytes]) -> tuple[str, str, ChainInfo] | None:
    """Declare a chain of a ``NEWCHAIN`` message's attributes; what it declared, or None when its table
    is not an iptables table of the dump (nothing declared)."""
    tname, cname = nl_str(a.get(1, b"")), nl_str(a.get(3, b""))
    if tname not in tables:
        return None
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
    tables[tname][cname] = info = (policy, pk, by)
    return tname, cname, info
