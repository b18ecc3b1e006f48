"""Equal nft expression sub-trees shared (node/compact.py): same content, fewer objects."""

from __future__ import annotations

import json

from pytest_k8sstate.node.compact import share_equal_expressions
from pytest_k8sstate.parse.nft import parse_nft_json


def _ruleset(n: int) -> bytes:
    items: list[dict[str, object]] = [
        {"metainfo": {"version": "1.0.9", "release_name": "x", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": "t", "handle": 1}},
        {"chain": {"family": "ip", "table": "t", "name": "c", "handle": 2}},
    ]
    for i in range(n):
        expr = [
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": f"10.0.{i // 250}.{i % 250}",
                }
            },
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1 if i % 2 else True}},
            {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1.0}},
            {"counter": {"packets": 0, "bytes": 0}},
            {"accept": None},
        ]
        items.append(
            {
                "rule": {
                    "family": "ip",
                    "table": "t",
                    "chain": "c",
                    "handle": 10 + i,
                    "expr": expr,
                    "comment": "same",
                }
            }
        )
    return json.dumps({"nftables": items}).encode()


def test_shared_subtrees_keep_the_content() -> None:
    rs = parse_nft_json(_ruleset(40), source="test")
    before = json.dumps(rs.to_json())
    assert share_equal_expressions(rs, min_rules=10)
    assert json.dumps(rs.to_json()) == before
    rules = rs.tables[("ip", "t")].chains["c"].rules
    a, b, c = rules[0].expr, rules[2].expr, rules[1].expr
    assert a[3] is b[3]  # the same counter object
    assert a[0]["match"]["left"] is b[0]["match"]["left"]
    assert a[0] is not b[0]  # different addresses
    assert a is not b
    # 1, True and 1.0 compare equal in Python but are different JSON: never merged
    assert a[1]["match"]["right"] is True
    assert c[1]["match"]["right"] == 1
    assert c[1]["match"]["right"] is not True
    assert type(a[2]["match"]["right"]) is float
    assert a[1] is not c[1]
    assert rules[0].comment is rules[1].comment


def test_small_rulesets_are_left_alone() -> None:
    rs = parse_nft_json(_ruleset(5), source="test")
    rules = rs.tables[("ip", "t")].chains["c"].rules
    assert not share_equal_expressions(rs, min_rules=10)
    assert rules[0].expr[3] is not rules[2].expr[3]
