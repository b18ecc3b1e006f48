"""Parse ``iptables-save`` (also ``-c``) output into tables → chains → rules.

Built for the size kube-proxy produces (10,000 services ≈ 110k rules, 16 MB), in three lazy layers:

1. ``parse_iptables_save`` reads and checks the structure — tables, chain declarations
   (policy, counters), which runs of ``-A CHAIN`` lines belong to which declared chain — with
   two compiled regexes that walk the text in C;
2. ``Chain.rules`` turns a chain's lines into :class:`Rule` objects (counters, :attr:`Rule.spec`:
   the canonical rule text without counters, the identity diffs use) on first access;
3. ``Rule.matches``/``target``/``target_args``/``goto`` tokenize the rule on first access.

:meth:`IptablesRuleset.validate` forces all of it. Unknown match modules, options and targets
are kept verbatim.

Malformed input raises :class:`~pytest_k8sstate.errors.ParseError` naming the source, the 1-based
line and what was expected — nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.parse.gcpause import gc_paused

__all__ = [
    "Chain",
    "IptablesRuleset",
    "Match",
    "Opt",
    "Rule",
    "Table",
    "parse_iptables_save",
    "split_spec",
    "unclosed_quote",
]

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}

# Built-in ("basic") matches: short and long spellings → the short one.
BASIC_OPTS: dict[str, str] = {
    "-s": "-s",
    "--source": "-s",
    "--src": "-s",
    "-d": "-d",
    "--destination": "-d",
    "--dst": "-d",
    "-p": "-p",
    "--protocol": "-p",
    "-i": "-i",
    "--in-interface": "-i",
    "-o": "-o",
    "--out-interface": "-o",
    "-f": "-f",
    "--fragment": "-f",
}
_BASIC_NO_VALUE = frozenset({"-f"})


def _arity(spec: str) -> dict[str, int]:
    """``"--a=1 --b=0"`` → ``{"--a": 1, "--b": 0}``."""
    return {k: int(v) for k, _, v in (item.partition("=") for item in spec.split())}


_PORTS = "--dport=1 --destination-port=1 --sport=1 --source-port=1"
# How many values each known option takes (strict parsing: a token past them that is not an option is
# an error, as in iptables-restore). Options missing here are kept verbatim with every value up to the
# next option.
MATCH_ARITY: dict[str, dict[str, int]] = {
    m: _arity(a)
    for m, a in {
        "tcp": _PORTS + " --syn=0 --tcp-flags=2 --tcp-option=1",
        "udp": _PORTS,
        "udplite": _PORTS,
        "sctp": _PORTS,
        "dccp": _PORTS,
        "multiport": "--dports=1 --destination-ports=1 --sports=1 --source-ports=1 --ports=1",
        "comment": "--comment=1",
        "statistic": "--mode=1 --probability=1 --every=1 --packet=1",
        "mark": "--mark=1",
        "connmark": "--mark=1",
        "conntrack": "--ctstate=1 --ctproto=1 --ctorigsrc=1 --ctorigdst=1 --ctreplsrc=1 --ctrepldst=1 "
        "--ctorigsrcport=1 --ctorigdstport=1 --ctreplsrcport=1 --ctrepldstport=1 --ctstatus=1 "
        "--ctexpire=1 --ctdir=1",
        "state": "--state=1",
        "addrtype": "--src-type=1 --dst-type=1 --limit-iface-in=0 --limit-iface-out=0",
        "physdev": "--physdev-in=1 --physdev-out=1 --physdev-is-in=0 --physdev-is-out=0 "
        "--physdev-is-bridged=0",
        "socket": "--transparent=0 --nowildcard=0 --restore-skmark=0",
        "rpfilter": "--loose=0 --validmark=0 --accept-local=0 --invert=0",
        "set": "--match-set=2 --return-nomatch=0 --update-counters=0 --update-subcounters=0 "
        "--packets-eq=1 --packets-lt=1 --packets-gt=1 --bytes-eq=1 --bytes-lt=1 --bytes-gt=1",
        "recent": "--name=1 --set=0 --rcheck=0 --update=0 --remove=0 --seconds=1 --hitcount=1 --reap=0 "
        "--rttl=0 --rsource=0 --rdest=0 --mask=1",
        "limit": "--limit=1 --limit-burst=1",
        "icmp": "--icmp-type=1",
        "icmp6": "--icmpv6-type=1",
        "iprange": "--src-range=1 --dst-range=1",
        "owner": "--uid-owner=1 --gid-owner=1 --socket-exists=0 --suppl-groups=0",
        "pkttype": "--pkt-type=1",
        "mac": "--mac-source=1",
        "length": "--length=1",
        "connlimit": "--connlimit-upto=1 --connlimit-above=1 --connlimit-mask=1 --connlimit-saddr=0 "
        "--connlimit-daddr=0",
        "bpf": "--bytecode=1",
        "u32": "--u32=1",
        "cgroup": "--path=1 --cgroup=1",
        "ipvs": "--ipvs=0 --vproto=1 --vaddr=1 --vport=1 --vdir=1 --vmethod=1 --vportctl=1",
        "nfacct": "--nfacct-name=1",
        "helper": "--helper=1",
        "ttl": "--ttl-eq=1 --ttl-gt=1 --ttl-lt=1",
        "hl": "--hl-eq=1 --hl-gt=1 --hl-lt=1",
    }.items()
}
TARGET_ARITY: dict[str, dict[str, int]] = {
    t: _arity(a)
    for t, a in {
        "DNAT": "--to-destination=1 --random=0 --persistent=0",
        "SNAT": "--to-source=1 --random=0 --random-fully=0 --persistent=0",
        "MASQUERADE": "--to-ports=1 --random=0 --random-fully=0",
        "REDIRECT": "--to-ports=1 --random=0",
        "MARK": "--set-xmark=1 --set-mark=1 --and-mark=1 --or-mark=1 --xor-mark=1",
        "CONNMARK": "--set-xmark=1 --set-mark=1 --and-mark=1 --or-mark=1 --xor-mark=1 --save-mark=0 "
        "--restore-mark=0 --nfmask=1 --ctmask=1 --mask=1",
        "REJECT": "--reject-with=1",
        "LOG": "--log-prefix=1 --log-level=1 --log-tcp-sequence=0 --log-tcp-options=0 --log-ip-options=0 "
        "--log-uid=0 --log-macdecode=0",
        "NFLOG": "--nflog-group=1 --nflog-prefix=1 --nflog-range=1 --nflog-size=1 --nflog-threshold=1",
        "CT": "--notrack=0 --zone=1 --zone-orig=1 --zone-reply=1 --helper=1 --ctevents=1 --expevents=1 "
        "--timeout=1",
        "TPROXY": "--on-port=1 --on-ip=1 --tproxy-mark=1",
        "TCPMSS": "--set-mss=1 --clamp-mss-to-pmtu=0",
        "CHECKSUM": "--checksum-fill=0",
        "SET": "--add-set=2 --del-set=2 --map-set=2 --exist=0 --timeout=1",
        "NFQUEUE": "--queue-num=1 --queue-balance=1 --queue-bypass=0 --fail-open=0 --queue-cpu-fanout=0",
    }.items()
}

# One token: a double-quoted string with backslash escapes, or a run of non-blanks (which may
# contain quoted parts, e.g. --log-prefix="a b"). Anything else (an unterminated quote) is an error.
_TOKEN_RE = re.compile(r'\s*(?:((?:[^\s"\\]|\\.|"(?:[^"\\]|\\.)*")+)|(\S))', re.S)
_UNQUOTE_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|\\(.)', re.S)
_CHAIN_NAME_RE = re.compile(r"[^\s]{1,128}")


def _unquote(tok: str) -> str:
    if "\\" not in tok:
        if '"' not in tok:
            return tok
        if tok[0] == '"' and tok[-1] == '"' and tok.count('"') == 2:
            return tok[1:-1]
    return _UNQUOTE_RE.sub(lambda m: _unescape(m.group(1)) if m.group(1) is not None else m.group(2), tok)


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s, flags=re.S) if "\\" in s else s


def split_spec(spec: str, *, source: str = "iptables-save", line: int | None = None) -> list[str]:
    """Split rule text into raw tokens (quotes kept) the way iptables-restore does.

    Raises ParseError on an unterminated quote or a dangling backslash.
    """
    if '"' not in spec:
        if "\\" not in spec:
            return spec.split()
    elif "\\" not in spec:
        # common case: quoted strings without escapes, each a whole token
        parts = spec.split('"')
        last = len(parts) - 1
        if last % 2:
            raise ParseError(source, line, "a closed double quote in the rule", spec)
        out: list[str] = []
        glued = False
        for i, part in enumerate(parts):
            if i % 2:
                out.append('"' + part + '"')
            else:
                if part:
                    if (i > 0 and not part[0].isspace()) or (i < last and not part[-1].isspace()):
                        glued = True  # a quote inside a token, e.g. --log-prefix="a b"
                        break
                elif 0 < i < last:
                    glued = True  # two quoted strings back to back
                    break
                out.extend(part.split())
        if not glued:
            return out
    out = []
    for m in _TOKEN_RE.finditer(spec):
        tok, bad = m.group(1), m.group(2)
        if bad is not None:
            raise ParseError(source, line, "a closed double quote in the rule", spec)
        if tok is not None:
            out.append(tok)
    return out


class Opt(NamedTuple):
    """One option of a match or target: ``name`` as written (``--dport``), values unquoted."""

    name: str
    values: tuple[str, ...] = ()
    negated: bool = False

    @property
    def value(self) -> str | None:
        return self.values[0] if self.values else None


class Match(NamedTuple):
    """A match: ``module`` is the ``-m`` name, ``""`` for the built-in matches (-s -d -p -i -o -f)."""

    module: str
    opts: tuple[Opt, ...] = ()

    def get(self, name: str) -> Opt | None:
        for o in self.opts:
            if o.name == name:
                return o
        return None


class _Parsed(NamedTuple):
    matches: tuple[Match, ...]
    target: str | None
    target_args: tuple[Opt, ...]
    goto: bool


def _parse_spec(spec: str, source: str, line: int | None) -> _Parsed:
    toks = split_spec(spec, source=source, line=line)
    basic: list[Opt] = []
    mods: list[tuple[str, list[Opt]]] = []
    cur: list[Opt] | None = None  # options of the current -m module
    target: str | None = None
    goto = False
    targs: list[Opt] = []
    in_target = False
    negate = False
    i, n = 0, len(toks)

    def err(expected: str, got: str) -> ParseError:
        return ParseError(source, line, expected, got)

    while i < n:
        raw = toks[i]
        i += 1
        if raw == "!":
            if negate:
                raise err("one '!' before an option", spec)
            negate = True
            continue
        if raw[0] != "-" or len(raw) < 2:
            raise err("an option starting with '-' (value without option? a stray token)", raw)
        name = raw
        if name in ("-m", "--match"):
            if negate:
                raise err("'!' before an option, not before -m", spec)
            if i >= n:
                raise err("a module name after -m", spec)
            mod = _unquote(toks[i])
            i += 1
            if in_target:
                raise err("matches before -j/-g", spec)
            cur = []
            mods.append((mod, cur))
            continue
        if name in ("-j", "--jump", "-g", "--goto"):
            if negate:
                raise err("no '!' before -j/-g", spec)
            if target is not None:
                raise err("one -j/-g per rule", spec)
            if i >= n or toks[i] == "!" or (toks[i][0] == "-" and len(toks[i]) > 1):
                raise err(f"a target name after {name}", spec)
            target = _unquote(toks[i])
            goto = name in ("-g", "--goto")
            i += 1
            in_target = True
            continue
        # option name, then its values up to the next option / '!'
        values: list[str] = []
        neg = negate
        negate = False
        if i < n and toks[i] == "!":
            # legacy form: "-s ! 10.0.0.0/8", "--mark ! 0x4000"
            if neg:
                raise err("one '!' per option", spec)
            neg = True
            i += 1
        short = BASIC_OPTS.get(name)
        if in_target:
            arity = _ARITY.get(("-j", target, name))
        elif short is not None:
            arity = None  # checked below, with its own message
        elif cur is not None:
            arity = _ARITY.get((mods[-1][0], name))
        else:
            implicit = next((o.values[0] for o in basic if o.name == "-p"), "")
            arity = _ARITY.get((implicit, name))
        if arity is not None:
            # a known option takes exactly its values (like getopt: even one starting with '-')
            if i + arity > n or "!" in toks[i : i + arity]:
                raise err(f"{arity} value(s) after {name}", spec)
            values = [_unquote(t) for t in toks[i : i + arity]]
            i += arity
            if i < n and toks[i] != "!" and not (toks[i][0] == "-" and len(toks[i]) > 1):
                raise err(
                    f"an option after {name}{''.join(' ' + v for v in values)} (a stray token; "
                    "iptables-restore rejects it)",
                    toks[i],
                )
        while arity is None and i < n:
            t = toks[i]
            if t == "!" or (t[0] == "-" and len(t) > 1 and not _is_number(t)):
                break
            values.append(_unquote(t))
            i += 1
        if in_target:
            if neg:
                raise err("no '!' in target options", spec)
            targs.append(Opt(name, tuple(values)))
        elif short is not None:
            if short in _BASIC_NO_VALUE:
                if values:
                    raise err(f"no value after {name}", spec)
            elif len(values) != 1:
                raise err(f"one value after {name}", spec)
            elif not values[0].isascii():
                raise err(f"an ASCII value after {name} (addresses and names are ASCII)", values[0])
            basic.append(Opt(short, tuple(values), neg))
        elif cur is not None:
            cur.append(Opt(name, tuple(values), neg))
        else:
            # e.g. "-p tcp --dport 80" without "-m tcp": the protocol's implicit match
            proto = next((o.values[0] for o in basic if o.name == "-p"), None)
            if proto is None:
                raise err(f"-m MODULE before {name}", spec)
            cur = []
            mods.append((proto, cur))
            cur.append(Opt(name, tuple(values), neg))
    if negate:
        raise err("an option after '!'", spec)
    matches: list[Match] = []
    if basic:
        matches.append(Match("", tuple(basic)))
    matches.extend(Match(m, tuple(o)) for m, o in mods)
    return _Parsed(tuple(matches), target, tuple(targs), goto)


_ARITY: dict[tuple[str | None, ...], int] = {
    **{(m, o): n for m, opts in MATCH_ARITY.items() for o, n in opts.items()},
    **{("-j", t, o): n for t, opts in TARGET_ARITY.items() for o, n in opts.items()},
}


def _is_number(t: str) -> bool:
    return t[1:].replace(".", "", 1).isdigit()


class Rule:
    """One ``-A CHAIN spec`` line. Identity (equality, diffs) is ``spec``: counters are not part of it.

    ``matches``/``target``/``target_args``/``goto`` are parsed from ``spec`` on first access.
    """

    __slots__ = ("_parsed", "chain", "counters", "line", "source", "spec")

    def __init__(
        self,
        chain: str,
        spec: str,
        line: int,
        counters: tuple[int, int] | None = None,
        source: str = "iptables-save",
    ) -> None:
        self.chain = chain
        self.spec = spec
        self.line = line
        self.counters = counters
        self.source = source
        self._parsed: _Parsed | None = None

    def _p(self) -> _Parsed:
        p = self._parsed
        if p is None:
            p = self._parsed = _parse_spec(self.spec, self.source, self.line)
        return p

    @property
    def matches(self) -> tuple[Match, ...]:
        return self._p().matches

    @property
    def target(self) -> str | None:
        return self._p().target

    @property
    def target_args(self) -> tuple[Opt, ...]:
        return self._p().target_args

    @property
    def goto(self) -> bool:
        return self._p().goto

    def basic(self, name: str) -> Opt | None:
        """The built-in match ``-s``/``-d``/``-p``/``-i``/``-o``/``-f`` (long spellings normalised)."""
        ms = self._p().matches
        if ms and ms[0].module == "":
            return ms[0].get(name)
        return None

    def target_arg(self, name: str) -> Opt | None:
        for o in self._p().target_args:
            if o.name == name:
                return o
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rule):
            return NotImplemented
        return (
            self.chain == other.chain
            and self.spec == other.spec
            and self.line == other.line
            and self.counters == other.counters
        )

    def __hash__(self) -> int:
        return hash((self.chain, self.spec))

    def __repr__(self) -> str:
        return f"Rule(-A {self.chain} {self.spec!s} @{self.line})"

    @property
    def text(self) -> str:
        """The rule as iptables-restore input (without counters)."""
        return f"-A {self.chain} {self.spec}" if self.spec else f"-A {self.chain}"


class Chain:
    """A chain: ``policy`` is None for user-defined chains; ``packets``/``bytes`` its policy counters.

    ``rules`` is built from the dump text on first access (ParseError for a bad rule line then).
    """

    __slots__ = (
        "_blocks",
        "_lines",
        "_rules",
        "_some",
        "_source",
        "bytes",
        "line",
        "name",
        "packets",
        "policy",
    )

    def __init__(
        self,
        name: str,
        policy: str | None,
        packets: int = 0,
        bytes: int = 0,
        rules: list[Rule] | None = None,
        line: int = 0,
        source: str = "iptables-save",
    ) -> None:
        self.name = name
        self.policy = policy
        self.packets = packets
        self.bytes = bytes
        self.line = line
        self._rules: list[Rule] = [] if rules is None else rules
        self._blocks: list[tuple[str, int]] = []  # (text of consecutive "-A NAME" lines, first line)
        self._lines: list[tuple[str, int]] | None = None  # the blocks' lines and numbers, when asked for
        self._some: dict[int, Rule] = {}  # rules built one by one (rule()) while the chain is not
        self._source = source

    @property
    def rules(self) -> list[Rule]:
        if self._blocks:
            self._materialize()
        return self._rules

    @rules.setter
    def rules(self, value: list[Rule]) -> None:
        self._blocks = []
        self._lines = None
        self._some = {}
        self._rules = value

    def add_lines(self, block: str, line: int) -> None:
        """Rule lines of this chain (``[P:B] -A NAME spec`` each, newline-terminated, in the shape
        :func:`parse_iptables_save` reads on its fast path), the first on dump line ``line``: what
        that parse keeps of them (each rule is built on first use)."""
        self._blocks.append((block, line))

    def unbuilt_lines(self) -> list[tuple[str, int]] | None:
        """Each rule's line as dumped (``[P:B] -A NAME spec`` or ``-A NAME spec``) and its number, while
        no rule is built but those :meth:`rule` built; None otherwise."""
        if not self._blocks or self._rules:
            return None
        if self._lines is None:
            if len(self._blocks) == 1:
                self._lines = list(_numbered(*self._blocks[0]))
            else:
                self._lines = [x for block, first in self._blocks for x in _numbered(block, first)]
        return self._lines

    def rule_getter(self) -> Callable[[int], Rule]:
        """``i`` → rule ``i``: :meth:`rule` while the chain is read line by line (after
        :meth:`unbuilt_lines`: a walk through a large chain's index builds only the rules it meets),
        else the built list's item."""
        if self._lines is not None and self._blocks and not self._rules:
            return self.rule
        return self.rules.__getitem__

    def rule(self, i: int) -> Rule:
        """``rules[i]``; while the chain is not built, that rule alone is (the same object the whole
        chain holds once built)."""
        lines = self.unbuilt_lines()
        if lines is None:
            return self.rules[i]
        r = self._some.get(i)
        if r is None:
            text, lineno = lines[i]
            # setdefault: two threads building rule i keep one object
            r = self._some.setdefault(i, self._line_rules([(text, lineno)])[0])
        return r

    def rules_text(self) -> str | None:
        """The rule lines as dumped (counters included) while the rules are not built; None once they are
        (equal texts: equal rules — a diff's cheap check, state/nodediff.py)."""
        if self._rules:
            return None
        return "".join(b for b, _ in self._blocks)

    def rule_count(self) -> int:
        """Number of rules without building them."""
        return len(self._rules) + sum(b.count("\n") for b, _ in self._blocks)

    def _materialize(self) -> None:
        with gc_paused():
            self._materialize_blocks()

    def rules_with(self, text: str) -> list[Rule]:
        """The rules whose spec contains ``text``; while the chain is not built, only the lines containing
        it are (a lookup of one Service's rules does not build 2,000 others)."""
        return [r for r in self._rules if text in r.spec] + self._block_rules(text)

    def _materialize_blocks(self) -> None:
        built = self._block_rules()
        for i, r in self._some.items():  # rule() built these already: the chain holds those objects
            built[i] = r
        self._rules.extend(built)
        self._blocks = []
        self._lines = None
        self._some = {}

    def _block_rules(self, only: str | None = None) -> list[Rule]:
        """Rules of the unbuilt blocks (``only``: just those whose spec contains it)."""
        out: list[Rule] = []
        for block, first in self._blocks:
            if only is not None and only not in block:
                continue
            numbered: Iterable[tuple[str, int]] = _numbered(block, first)
            if only is not None:
                numbered = [(t, n) for t, n in numbered if only in t]
            out.extend(self._line_rules(numbered, only))
        return out

    def _line_rules(self, lines: Iterable[tuple[str, int]], only: str | None = None) -> list[Rule]:
        """The rules of block lines ``(text, number)`` (``only``: just those whose spec contains it)."""
        # every block line has the shape _SECTION_RE checked: "[P:B] -A NAME spec" or "-A NAME spec"
        out: list[Rule] = []
        src = self._source
        name = self.name
        plen = len(name) + 4  # "-A NAME "
        for text, lineno in lines:
            if text[0] == "[":
                close = text.find("] ")
                cp, _, cb = text[1:close].partition(":")
                counters: tuple[int, int] | None = (int(cp), int(cb))
                spec = text[close + 2 + plen :]
            else:
                counters = None
                spec = text[plen:]
            if spec[-1:].isspace() or spec[:1].isspace():
                spec = spec.strip()
            if unclosed_quote(spec):
                raise ParseError(src, lineno, "a closed double quote in the rule", text)
            if spec.startswith("-c "):
                _, spec, c2 = _rule_line(f"-A {name} {spec}", lineno, src)
                counters = c2 or counters
            if only is None or only in spec:
                out.append(Rule(name, spec, lineno, counters, src))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chain):
            return NotImplemented
        return (
            self.name == other.name
            and self.policy == other.policy
            and self.packets == other.packets
            and self.bytes == other.bytes
            and self.line == other.line
            and self.rules == other.rules
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Chain({self.name!r}, {self.policy!r}, {self.packets}, {self.bytes}, {len(self.rules)} rules)"


@dataclass(eq=True, slots=True)
class Table:
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)


@dataclass(eq=False)
class IptablesRuleset:
    """All tables of one ``iptables-save`` dump; ``tables`` and ``chains`` keep dump order."""

    tables: dict[str, Table]
    source: str = "iptables-save"
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Scratch space for derived indexes (the tracer caches its chain indexes here)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IptablesRuleset):
            return NotImplemented
        return self.tables == other.tables and self.source == other.source

    __hash__ = None  # type: ignore[assignment]

    def chain(self, table: str, chain: str) -> Chain | None:
        t = self.tables.get(table)
        return t.chains.get(chain) if t is not None else None

    def rules(self) -> Iterator[tuple[str, Rule]]:
        """Every rule as ``(table, rule)`` in dump order."""
        for t in self.tables.values():
            for c in t.chains.values():
                for r in c.rules:
                    yield t.name, r

    def rule_count(self) -> int:
        return sum(c.rule_count() for t in self.tables.values() for c in t.chains.values())

    def validate(self) -> None:
        """Parse every rule's matches and target now (ParseError on the first bad one)."""
        with gc_paused():
            for _, r in self.rules():
                r._p()

    def to_json(self) -> dict[str, Any]:
        with gc_paused():
            return self._to_json()

    def _to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tables": {
                t.name: {
                    c.name: {
                        "policy": c.policy,
                        "packets": c.packets,
                        "bytes": c.bytes,
                        "line": c.line,
                        "rules": [
                            [r.line, r.spec] if r.counters is None else [r.line, r.spec, *r.counters]
                            for r in c.rules
                        ],
                    }
                    for c in t.chains.values()
                }
                for t in self.tables.values()
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IptablesRuleset:
        try:
            with gc_paused():
                return cls._from_json(d)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ParseError(
                "iptables JSON", None, "an IptablesRuleset JSON object (to_json output)", repr(exc)
            ) from exc

    @classmethod
    def _from_json(cls, d: dict[str, Any]) -> IptablesRuleset:
        source = str(d.get("source", "iptables-save"))
        tables: dict[str, Table] = {}
        for tname, chains in d["tables"].items():
            t = Table(str(tname))
            for cname, c in chains.items():
                policy = c["policy"]
                if policy is not None and not isinstance(policy, str):
                    raise TypeError(f"policy of chain {cname}: {policy!r}")
                ch = Chain(
                    str(cname),
                    policy,
                    int(c["packets"]),
                    int(c["bytes"]),
                    line=int(c["line"]),
                    source=source,
                )
                rules = ch.rules
                for k, item in enumerate(c["rules"]):
                    if (
                        not isinstance(item, list)
                        or len(item) not in (2, 4)
                        or not isinstance(item[1], str)
                        or not all(type(x) is int and x >= 0 for x in item[:1] + item[2:])
                    ):
                        raise TypeError(f"tables.{tname}.{cname}.rules[{k}]: [line, spec(, packets, bytes)]")
                    counters = (int(item[2]), int(item[3])) if len(item) == 4 else None
                    rules.append(Rule(ch.name, str(item[1]), int(item[0]), counters, source))
                t.chains[ch.name] = ch
            tables[t.name] = t
        return cls(tables, source)


def _num(s: str) -> bool:
    """A counter: ASCII digits, at most 20 (u64)."""
    return 0 < len(s) <= 20 and s.isascii() and s.isdigit()


def _counters(s: str, source: str, lineno: int) -> tuple[int, int]:
    # "[123:4567]"
    p, sep, b = s[1:-1].partition(":")
    if not sep or s[0] != "[" or s[-1] != "]" or not _num(p) or not _num(b):
        raise ParseError(source, lineno, "counters like [packets:bytes]", s)
    return int(p), int(b)


def _slow_rule_prefix(line: str, source: str, lineno: int) -> tuple[str, tuple[int, int] | None]:
    """A rule line off the fast path: strip "[p:b]" counters, check "-A"; returns ("-A ...", counters)."""
    counters = None
    if line[:1] == "[":
        end = line.find("]")
        if end < 0:
            raise ParseError(source, lineno, "counters like [packets:bytes]", line)
        counters = _counters(line[: end + 1], source, lineno)
        line = line[end + 1 :].lstrip()
    if line.startswith(("-I ", "-D ", "-R ", "-N ", "-X ", "-F ", "-P ", "-Z ")):
        raise ParseError(source, lineno, "'-A CHAIN ...' (iptables-save output only appends)", line)
    if not line.startswith("-A") or (len(line) > 2 and not line[2].isspace()):
        raise ParseError(source, lineno, "'-A CHAIN ...'", line)
    return "-A " + line[2:].lstrip(), counters


def _numbered(block: str, first: int) -> Iterator[tuple[str, int]]:
    """A rule block's lines (it ends with a newline and holds no empty line) with their numbers."""
    lines = block.split("\n")
    if not lines[-1]:
        lines.pop()
    return zip(lines, range(first, first + len(lines)), strict=True)


def unclosed_quote(spec: str, start: int = 0) -> bool:
    """``spec[start:]`` has an odd number of unescaped double quotes: a rule line iptables-save never
    prints (building its rule raises ParseError)."""
    if '"' not in spec:
        return False
    n = spec.count('"', start)
    if "\\" in spec:
        n -= spec.count('\\"', start)
    return n % 2 == 1


def _rule_line(line: str, lineno: int, source: str) -> tuple[str, str, tuple[int, int] | None]:
    """``[P:B] -A CHAIN spec`` → (chain, spec, counters)."""
    counters: tuple[int, int] | None = None
    start = -1
    if line[:1] == "[":
        close = line.find("] -A ")
        if close > 0:
            cp, sep, cb = line[1:close].partition(":")
            if not (sep and _num(cp) and _num(cb)):
                raise ParseError(source, lineno, "counters like [packets:bytes]", line)
            counters = (int(cp), int(cb))
            start = close + 5
    elif line.startswith("-A "):
        start = 3
    if start < 0:
        line, counters = _slow_rule_prefix(line, source, lineno)
        start = 3
    sp = line.find(" ", start)
    if sp < 0:
        cname, spec = line[start:].strip(), ""
    else:
        cname, spec = line[start:sp], line[sp + 1 :].strip()
    if not cname:
        raise ParseError(source, lineno, "a chain name after -A", line)
    if spec.startswith("-c "):
        # iptables-restore's other counter form: "-A CHAIN -c PKTS BYTES ..."
        parts = spec.split(None, 3)
        if len(parts) < 3 or not _num(parts[1]) or not _num(parts[2]):
            raise ParseError(source, lineno, "-c PACKETS BYTES", line)
        counters = (int(parts[1]), int(parts[2]))
        spec = parts[3] if len(parts) > 3 else ""
    if unclosed_quote(spec):  # cheap balance check; exact tokenizing happens when the rule is inspected
        raise ParseError(source, lineno, "a closed double quote in the rule", line)
    return cname, spec, counters


# A well-formed chain declaration line (anything else goes through _Reader.declare).
_DECL_RE = re.compile(r"^:([^\s\[]+) (ACCEPT|DROP|QUEUE|RETURN|-) \[([0-9]{1,20}):([0-9]{1,20})\]$", re.M)

# A run of consecutive rule lines of one chain ("[P:B] -A NAME ..." or "-A NAME ..."), matched in C.
_RULE_START = r"(?:\[[0-9]{1,20}:[0-9]{1,20}\] )?-A "
_BLOCK = _RULE_START + r"(\S+)(?: .*)?\n(?:" + _RULE_START + r"\{n}(?: .*)?\n)*"
# A block starts only at a line start: finditer tries each position once and fails at once unless the
# line starts with "-A " or "[", so finding every block is linear; the text between blocks is other lines.
_BLOCK_RE = re.compile(r"^" + _BLOCK.replace("{n}", "1"), re.M)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tables: dict[str, Table] = {}
        self.table: Table | None = None
        self.chains: dict[str, Chain] = {}

    def add_block(self, cname: str, block: str, lineno: int, first_line: str) -> None:
        if self.table is None:
            raise ParseError(self.source, lineno, "a '*table' line before rules", first_line)
        ch = self.chains.get(cname)
        if ch is None:
            raise ParseError(
                self.source,
                lineno,
                f"a ':{cname}' declaration in table {self.table.name} before its rules",
                first_line,
            )
        ch._blocks.append((block, lineno))

    def other_lines(self, text: str, lineno: int) -> None:
        """Lines that are not part of a rule block: tables, chain declarations, COMMIT, comments."""
        pos = 0
        source = self.source
        chains = self.chains
        for m in _DECL_RE.finditer(text):
            b0 = m.start()
            if b0 > pos:
                seg = text[pos : b0 - 1]
                self.lines(seg, lineno)
                lineno += seg.count("\n") + 1
                chains = self.chains
            name, policy, pk, by = m.groups()
            if self.table is None or name in chains or len(name) > 128:
                self.declare(m.group(0), lineno)  # raises the right error
            else:
                chains[name] = Chain(
                    name, None if policy == "-" else policy, int(pk), int(by), line=lineno, source=source
                )
            lineno += 1
            pos = m.end() + 1
        if pos <= len(text):
            self.lines(text[pos:], lineno)

    def lines(self, text: str, lineno: int) -> None:
        source = self.source
        for line in text.split("\n"):
            c0 = line[:1]
            if c0 == ":":
                self.declare(line, lineno)
            elif c0 == "-" or c0 == "[":
                # off the regex's fast path: check it, store it in the canonical block shape
                cname, spec, counters = _rule_line(line, lineno, source)
                canon = f"-A {cname} {spec}" if spec else f"-A {cname}"
                if counters is not None:
                    canon = f"[{counters[0]}:{counters[1]}] {canon}"
                self.add_block(cname, canon + "\n", lineno, line)
            elif c0 == "*":
                if self.table is not None:
                    raise ParseError(source, lineno, f"COMMIT ending table {self.table.name}", line)
                name = line[1:].strip()
                if not name or not _CHAIN_NAME_RE.fullmatch(name):
                    raise ParseError(source, lineno, "'*TABLE'", line)
                if name in self.tables:
                    raise ParseError(source, lineno, f"table {name} once per dump", line)
                self.table = Table(name)
                self.chains = self.table.chains
            elif c0 == "C" and line.rstrip() == "COMMIT":
                if self.table is None:
                    raise ParseError(source, lineno, "a '*table' line before COMMIT", line)
                self.tables[self.table.name] = self.table
                self.table = None
                self.chains = {}
            elif c0 == "#" or not line.strip():
                pass
            else:
                raise ParseError(
                    source, lineno, "an iptables-save line (*table, :CHAIN, -A, COMMIT, # comment)", line
                )
            lineno += 1

    def declare(self, line: str, lineno: int) -> None:
        source = self.source
        if self.table is None:
            raise ParseError(source, lineno, "a '*table' line before chain declarations", line)
        parts = line[1:].split()
        if not parts or len(parts) > 3 or not _CHAIN_NAME_RE.fullmatch(parts[0]):
            raise ParseError(source, lineno, "':CHAIN POLICY [packets:bytes]'", line)
        name = parts[0]
        policy = parts[1] if len(parts) > 1 else "-"
        if name in self.chains:
            raise ParseError(source, lineno, f"chain {name} declared once in table {self.table.name}", line)
        pk = by = 0
        if len(parts) == 3:
            pk, by = _counters(parts[2], source, lineno)
        if policy not in ("-", "ACCEPT", "DROP", "QUEUE", "RETURN"):
            raise ParseError(source, lineno, "a chain policy ACCEPT, DROP or '-'", line)
        self.chains[name] = Chain(name, None if policy == "-" else policy, pk, by, line=lineno, source=source)


def parse_iptables_save(text: str | bytes, source: str = "iptables-save") -> IptablesRuleset:
    """Parse a whole ``iptables-save [-c]`` dump (every table).

    The structure (tables, chains, policies, which rule lines belong to which chain) is read and
    checked now; each chain's rule lines become :class:`Rule` objects on first access of
    ``Chain.rules`` and each rule's matches/target on first access of those — both raise
    ParseError for malformed text then. :meth:`IptablesRuleset.validate` forces everything.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    with gc_paused():
        return _read(text, source)


def _read(text: str, source: str) -> IptablesRuleset:
    rd = _Reader(source)
    lineno = 1
    done = 0  # characters consumed: the gap before each block, then the block
    chains = rd.chains
    for m in _BLOCK_RE.finditer(text):
        start = m.start()
        if start > done:
            gap = text[done:start]
            rd.other_lines(gap[:-1], lineno)
            lineno += gap.count("\n")
            chains = rd.chains
        block, cname = m.group(0), m.group(1)
        ch = chains.get(cname)
        if ch is None:
            rd.add_block(cname, block, lineno, block[: block.find("\n")])  # raises the right error
        else:
            ch._blocks.append((block, lineno))
        lineno += block.count("\n")
        done = m.end()
    if done < len(text):
        tail = text[done:-1]
        rd.other_lines(tail, lineno)
        lineno += tail.count("\n") + 1
    if rd.table is not None:
        raise ParseError(source, lineno, f"COMMIT ending table {rd.table.name}", "end of input")
    return IptablesRuleset(rd.tables, source)
