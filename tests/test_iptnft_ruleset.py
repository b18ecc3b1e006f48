"""``Translated.ruleset`` (parse/iptnft.py): the parsed ruleset of a translation without its text — the
same as ``parse_iptables_save(translation.text())``, line numbers included, or None (then the text is
parsed), never a different ruleset. Pure: translations built by hand, plain and hostile."""

from __future__ import annotations

import random

import pytest

from pytest_k8sstate.parse.iptables import IptablesRuleset, parse_iptables_save
from pytest_k8sstate.parse.iptnft import Translated, Untranslatable

SRC = "iptables-save -c (node n)"


def _parsed(tr: Translated) -> IptablesRuleset:
    return parse_iptables_save(tr.text().encode("utf-8", "surrogateescape"), SRC)


def _same(a: IptablesRuleset, b: IptablesRuleset) -> None:
    """Tables, chains (policy, counters, declaration line) in dump order and each chain's rule lines
    with their numbers, as kept to be built (a rule line the parse would refuse is refused alike)."""
    assert a.source == b.source
    assert list(a.tables) == list(b.tables)
    for t, ta in a.tables.items():
        tb = b.tables[t]
        assert list(ta.chains) == list(tb.chains)
        for c, ca in ta.chains.items():
            cb = tb.chains[c]
            assert (ca.policy, ca.packets, ca.bytes, ca.line) == (cb.policy, cb.packets, cb.bytes, cb.line)
            assert ca.unbuilt_lines() == cb.unbuilt_lines()


def _kube() -> Translated:
    tables = {
        "filter": {"INPUT": ("ACCEPT", 10, 900), "FORWARD": ("DROP", 0, 0), "KUBE-FIREWALL": (None, 0, 0)},
        "nat": {
            "PREROUTING": ("ACCEPT", 3, 180),
            "OUTPUT": ("ACCEPT", 0, 0),
            "KUBE-SERVICES": (None, 0, 0),
            "KUBE-SVC-AAAA": (None, 0, 0),
            "KUBE-SEP-BBBB": (None, 0, 0),
            "KUBE-MARK-MASQ": (None, 0, 0),
            "EMPTY": (None, 0, 0),
        },
        "mangle": {},
    }
    rules = {
        ("filter", "INPUT"): ["[5:300] -A INPUT -j KUBE-FIREWALL"],
        ("filter", "KUBE-FIREWALL"): ["[0:0] -A KUBE-FIREWALL -m mark --mark 0x8000/0x8000 -j DROP"],
        ("nat", "PREROUTING"): [
            '[1:60] -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        ],
        ("nat", "KUBE-SERVICES"): [
            "[0:0] -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j KUBE-SVC-AAAA",
            "[0:0] -A KUBE-SERVICES -d 10.96.0.11/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAAA",
        ],
        ("nat", "KUBE-SVC-AAAA"): ["[0:0] -A KUBE-SVC-AAAA -j KUBE-SEP-BBBB"],
        ("nat", "KUBE-SEP-BBBB"): [
            "[0:0] -A KUBE-SEP-BBBB -s 10.244.1.2/32 -j KUBE-MARK-MASQ",
            "[0:0] -A KUBE-SEP-BBBB -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:53",
        ],
        ("nat", "KUBE-MARK-MASQ"): ["[0:0] -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"],
        ("nat", "UNDECLARED"): ["[0:0] -A UNDECLARED -j RETURN"],  # not printed: not declared
        ("raw", "PREROUTING"): ["[0:0] -A PREROUTING -j ACCEPT"],  # no raw table: not printed
    }
    return Translated(tables, rules)


def test_a_translation_s_ruleset_is_its_text_s() -> None:
    tr = _kube()
    got = tr.ruleset(SRC)
    assert got is not None
    _same(got, _parsed(tr))
    assert got == _parsed(tr)  # every rule built: the same rules
    assert got.rule_count() == 9
    assert [r.line for r in got.tables["nat"].chains["KUBE-SEP-BBBB"].rules] == [
        r.line for r in _parsed(tr).tables["nat"].chains["KUBE-SEP-BBBB"].rules
    ]


def test_without_counters_too() -> None:
    tr = _kube()
    plain = Translated(tr.tables, {k: [x.split("] ", 1)[1] for x in v] for k, v in tr.rules.items()}, False)
    got = plain.ruleset(SRC)
    assert got is not None
    _same(got, _parsed(plain))


@pytest.mark.parametrize(
    ("chain", "line"),
    [
        ("WITH SPACE", None),
        ("WITH[BRACKET", None),
        ("UNICODE-É", None),
        ("X" * 129, None),
        ("SURROGATE-\udcff", None),
        ("TAB\tNAME", None),
        ("NBSP\u00a0NAME", None),
        (None, '[0:0] -A C -m comment --comment "a\rb" -j ACCEPT'),
        (None, '[0:0] -A C -m comment --comment "a\nb" -j ACCEPT'),
        (None, '[0:0] -A C -m comment --comment "é" -j ACCEPT'),
        (None, '[0:0] -A C -m comment --comment "\u2028" -j ACCEPT'),
        (None, '[0:0] -A C -m comment --comment "\udcff" -j ACCEPT'),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_what_the_fast_path_does_not_take_is_left_to_the_text(chain: str | None, line: str | None) -> None:
    name = chain or "C"
    tr = Translated(
        {"filter": {"INPUT": ("ACCEPT", 0, 0), name: (None, 0, 0)}},
        {("filter", name): [line or f"[0:0] -A {name} -j ACCEPT"]},
    )
    assert tr.ruleset(SRC) is None
    try:  # and the text path gives what it always gave (a ruleset, or the fallback's refusal)
        _parsed(tr)
    except (Untranslatable, Exception):
        pass


def test_random_translations_give_the_text_s_ruleset_or_none() -> None:
    """Random tables, chains, policies, counters and rule lines (some with spaces, brackets, quotes,
    CRs, newlines, non-ASCII): wherever ruleset() answers, it is the parse of the text."""
    rng = random.Random(1205)
    alphabet = "AZaz09-_.:[ \"'\\\t\r\n\u00e9\u2028!~"
    answered = 0
    for _ in range(400):
        tables: dict[str, dict[str, tuple[str | None, int, int]]] = {}
        rules: dict[tuple[str, str], list[str]] = {}
        for t in rng.sample(["filter", "nat", "mangle", "raw", "security"], rng.randint(1, 3)):
            chains: dict[str, tuple[str | None, int, int]] = {}
            for _ in range(rng.randint(0, 5)):
                odd = rng.random() < 0.2
                name = "".join(rng.choice(alphabet if odd else "ABCZ-_0") for _ in range(rng.randint(1, 8)))
                chains[name] = (None, 0, 0)
                n = rng.randint(0, 4)
                lines = []
                for _ in range(n):
                    spec = "".join(
                        rng.choice(alphabet if rng.random() < 0.2 else "abc -/0") for _ in range(6)
                    )
                    pk, by = rng.randint(0, 2**64 - 1), rng.randint(0, 9)
                    lines.append(f"[{pk}:{by}] -A {name} -m comment --comment x{spec}")
                if lines:
                    rules[(t, name)] = lines
            if rng.random() < 0.5:
                chains[rng.choice(["INPUT", "OUTPUT", "PREROUTING"])] = (rng.choice(["ACCEPT", "DROP"]), 1, 2)
            tables[t] = chains
        tr = Translated(tables, rules)
        got = tr.ruleset(SRC)
        if got is None:
            continue
        answered += 1
        _same(got, _parsed(tr))
    assert answered > 50
