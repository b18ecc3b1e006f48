"""Incremental nft parsing (parse/nftmemo.py): rules unchanged since the previous capture are taken from it,
and the result is always what a plain parse of the same output gives."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pytest_k8sstate.node import compact
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.parse.nftmemo import fresh_rules


def _rule(chain: str, handle: int, ip: str, packets: int = 0, comment: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"family": "ip", "table": "nat", "chain": chain, "handle": handle}
    if comment is not None:
        body["comment"] = comment
    body["expr"] = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": ip}},
        {"counter": {"packets": packets, "bytes": packets * 60}},
        {"jump": {"target": "KUBE-SVC-" + ip.replace(".", "")}},
    ]
    return {"rule": body}


def _dump(rules: list[dict[str, Any]], *, compact_json: bool = False) -> bytes:
    items = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "nat", "handle": 1}},
        {"chain": {"family": "ip", "table": "nat", "name": "KUBE-SERVICES", "handle": 1}},
        {"chain": {"family": "ip", "table": "nat", "name": 'ÜBER "x"', "handle": 2}},
        *rules,
    ]
    seps = (",", ":") if compact_json else (", ", ": ")
    return json.dumps({"nftables": items}, separators=seps, ensure_ascii=False).encode()


def _rules(n: int, first_handle: int = 10, **changed: Any) -> list[dict[str, Any]]:
    out = [_rule("KUBE-SERVICES", first_handle + i, f"10.96.0.{i}") for i in range(n)]
    out.append(_rule('ÜBER "x"', first_handle + n, "10.96.1.1", comment='a "quoted" comment'))
    for i, packets in changed.get("packets", {}).items():
        out[i] = _rule("KUBE-SERVICES", first_handle + i, f"10.96.0.{i}", packets=packets)
    return out


def _flat(rs: NftRuleset) -> list[Any]:
    return [r for t in rs.tables.values() for c in t.chains.values() for r in c.rules]


def test_unchanged_rules_are_taken_from_the_previous_parse_whatever_their_handles() -> None:
    first = parse_nft_json(_dump(_rules(50)), index=True)
    assert len(fresh_rules(first) or []) == 51
    data = _dump(_rules(50, first_handle=500, packets={7: 3}))  # new handles; one counter moved
    again = parse_nft_json(data, previous=first, index=True)
    assert again == parse_nft_json(data), "an incremental parse must equal a plain one"
    fresh = fresh_rules(again)
    assert fresh is not None
    assert [(r.chain, r.handle) for r in fresh] == [("KUBE-SERVICES", 507)]
    old, new = _flat(first), _flat(again)
    assert [r.handle for r in new][:2] == [500, 501]
    taken = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if b.expr is a.expr]
    assert taken == [i for i in range(51) if i != 7], "the non-ASCII, quoted chain's rule too"


def test_without_previous_or_index_every_rule_is_parsed() -> None:
    data = _dump(_rules(5))
    plain = parse_nft_json(data)
    assert fresh_rules(plain) is None
    indexed = parse_nft_json(data, index=True)
    again = parse_nft_json(data, previous=plain, index=True)  # plain: no keys recorded
    assert again == indexed == plain
    assert len(fresh_rules(again) or []) == 6


@pytest.mark.parametrize("variant", ["compact-json", "field-order"])
def test_output_not_shaped_as_expected_is_parsed_not_guessed(variant: str) -> None:
    """Another spacing or field order (another nft version): no key is taken, the rule is parsed."""
    first = parse_nft_json(_dump(_rules(5)), index=True)
    data = _dump(_rules(5, packets={2: 1}), compact_json=variant == "compact-json")
    if variant == "field-order":
        data = re.sub(
            rb'"chain": "KUBE-SERVICES", "handle": ([0-9]+), ',
            rb'"handle": \1, "chain": "KUBE-SERVICES", ',
            data,
        )
    again = parse_nft_json(data, previous=first, index=True)
    assert again == parse_nft_json(data)
    # field-order: the other chain's rule still has the expected shape, unchanged: taken
    assert len(fresh_rules(again) or []) == (6 if variant == "compact-json" else 5)


def test_a_rule_start_inside_a_rule_turns_the_memo_off() -> None:
    """``{"rule": {`` twice for one rule object (not nft's schema): the index would be misaligned."""
    rules = _rules(3)
    rules[1]["rule"]["expr"].append({"rule": {"x": 1}})
    first = parse_nft_json(_dump(rules), index=True)
    again = parse_nft_json(_dump(rules), previous=first, index=True)
    assert len(fresh_rules(again) or []) == 4
    assert again == first


def test_sharing_only_the_fresh_rules_keeps_the_content() -> None:
    rules = _rules(30)
    first = parse_nft_json(_dump(rules), index=True)
    assert compact.share_equal_expressions(first, min_rules=10, only=fresh_rules(first))
    data = _dump(_rules(30, first_handle=90, packets={0: 5, 29: 9}))
    again = parse_nft_json(data, previous=first, index=True)
    fresh = fresh_rules(again)
    assert fresh is not None
    assert len(fresh) == 2
    assert compact.share_equal_expressions(again, min_rules=10, only=fresh)
    assert again.to_json() == parse_nft_json(data).to_json()


def _crafted(first_rule_expr: str) -> bytes:
    """Rule 0 printed without spaces (no ``{"rule": {`` match) and another item holding a nested
    ``{"rule": {`` that looks like rule 0: the counts of the two alone would line up."""
    head = '"family": "ip", "table": "nat", "chain": "C", "handle"'
    compact_head = '"family":"ip","table":"nat","chain":"C","handle"'
    items = [
        '{"table": {"family": "ip", "name": "nat", "handle": 1}}',
        '{"chain": {"family": "ip", "table": "nat", "name": "C", "handle": 2}}',
        '{"rule":{' + compact_head + ':7,"expr":[{"' + first_rule_expr + '": null}]}}',
        '{"x": {"rule": {' + head + ': 7, "expr": [{"accept": null}]}}}',
        '{"rule": {' + head + ': 8, "expr": [{"return": null}]}}',
    ]
    return ('{"nftables": [' + ", ".join(items) + "]}").encode()


def test_a_document_whose_rule_starts_do_not_line_up_gets_no_rule_from_the_memo() -> None:
    first = parse_nft_json(_crafted("accept"), index=True)
    data = _crafted("drop")
    again = parse_nft_json(data, previous=first, index=True)
    assert again == parse_nft_json(data)
    assert [t for *_, t in again.rule_texts()] == ["drop", "return"]


def test_a_name_with_a_lone_surrogate_is_parsed_not_keyed() -> None:
    data = _dump(_rules(2)).replace("ÜBER".encode(), b"\\ud800BER")
    first = parse_nft_json(data, index=True)
    assert first == parse_nft_json(data)
    again = parse_nft_json(data, previous=first, index=True)
    assert again == first
    assert len(fresh_rules(again) or []) == 1  # that chain's rule; the two others were taken
