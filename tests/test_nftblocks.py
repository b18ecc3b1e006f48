"""nfdump's blocks (node/nfdump.py): each chain's rule messages after a marker, looked up whole by the
translator (parse/iptnft.py, ``BLOCK_PREFIX``) — never a different text than without them.

Real dumps of kube-proxy rules loaded with ``iptables-nft-restore`` in a temporary network namespace
(root, the nf_tables iptables); the hostile variants are those dumps with markers moved, damaged, added
and removed.
"""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_k8sstate.node import iptfast, netns
from pytest_k8sstate.node.nfdump import BLOCK_TYPE, DECLS_TYPE
from pytest_k8sstate.parse import iptnft
from pytest_k8sstate.parse.iptnft import BLOCK_PREFIX, Untranslatable, netlink_to_iptables_save
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from tests.test_capture_nft import _DUMPER, _count_translations, _load, needs_nft, without_blocks


@pytest.fixture(scope="module")
def dumps() -> Iterator[tuple[bytes, bytes]]:
    """Two dumps of one namespace: kube-proxy rules, then the same with a rule added to one chain."""
    with netns.temporary("nftblocks") as n:
        _load(n, kube_proxy_iptables(make_services(12, 2, node_ports=2)))
        first = n.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
        n.run(
            ["iptables-nft", "-t", "nat", "-A", "KUBE-SERVICES", "-d", "10.0.0.1/32", "-j", "RETURN"],
            timeout=60,
        )
        second = n.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
        yield first, second


def _messages(raw: bytes) -> tuple[bytes, list[bytes]]:
    nl = raw.index(b"\n") + 1
    out, pos = [], nl
    while pos + 20 <= len(raw):
        (length,) = struct.unpack_from("=I", raw, pos)
        out.append(raw[pos : pos + length])
        pos += (length + 3) & ~3
    return raw[:nl], out


def _is_marker(m: bytes, kinds: tuple[int, ...] = (BLOCK_TYPE, DECLS_TYPE)) -> bool:
    return struct.unpack_from("=H", m, 4)[0] in kinds


def _marker(length: int, kind: int = BLOCK_TYPE) -> bytes:
    return struct.pack("=IHHII", 20, kind, 0, length & 0xFFFFFFFF, 0) + bytes(4)


@needs_nft
def test_the_dumper_marks_each_chain_s_rules_and_zeroes_their_ids(dumps: tuple[bytes, bytes]) -> None:
    _, msgs = _messages(dumps[0])
    markers = [i for i, m in enumerate(msgs) if _is_marker(m, (BLOCK_TYPE,))]
    decls = [i for i, m in enumerate(msgs) if _is_marker(m, (DECLS_TYPE,))]
    assert len(decls) == 1
    (length,) = struct.unpack_from("=I", msgs[decls[0]], 8)
    chains = [m for m in msgs if struct.unpack_from("=H", m, 4)[0] & 0xFF == 3]
    assert msgs[decls[0] + 1 : decls[0] + 1 + len(chains)] == chains  # every declaration, right after it
    assert length == sum((len(m) + 3) & ~3 for m in chains)
    assert len(markers) > 20
    for i in markers:
        (length,) = struct.unpack_from("=I", msgs[i], 8)
        size, j = 0, i + 1
        while size < length:
            assert msgs[j][8:16] == bytes(8)  # sequence number, port id
            assert msgs[j][18:20] == bytes(2)  # res_id: the generation's low bits
            size += (len(msgs[j]) + 3) & ~3
            j += 1
        assert size == length
        chains = {iptnft.where(m, 0, len(m)).rpartition(", rule")[0] for m in msgs[i + 1 : j]}
        assert len(chains) == 1  # one chain's rules


@needs_nft
def test_blocks_give_the_text_of_the_messages_alone(
    dumps: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = dumps[0]
    text = netlink_to_iptables_save(without_blocks(raw))
    memo: dict[bytes, str] = {}
    assert netlink_to_iptables_save(raw, memo=memo) == text
    blocks = {k: v for k, v in memo.items() if k.startswith(BLOCK_PREFIX)}
    assert len(blocks) > 20
    calls = _count_translations(monkeypatch)
    again: dict[bytes, str] = {}
    assert netlink_to_iptables_save(raw, previous=blocks, memo=again) == text
    assert calls == []  # no rule key in ``blocks``: every chain came whole
    assert set(blocks) <= set(again)
    shared: dict[bytes, str] = {}
    netlink_to_iptables_save(raw, memo={}, shared=shared)
    assert {k for k in shared if k.startswith(BLOCK_PREFIX)} == set(blocks)  # for the next process too


@needs_nft
def test_a_changed_chain_is_walked_and_the_others_are_taken(
    dumps: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = dumps
    memo: dict[bytes, str] = {}
    netlink_to_iptables_save(first, memo=memo)
    blocks = {k: v for k, v in memo.items() if k.startswith(BLOCK_PREFIX)}
    ref = netlink_to_iptables_save(without_blocks(second))
    calls = _count_translations(monkeypatch)
    assert netlink_to_iptables_save(second, previous=blocks, memo={}) == ref
    walked = len(calls)
    calls.clear()
    netlink_to_iptables_save(without_blocks(second))
    assert 0 < walked < len(calls) // 2  # the changed chains' rules only (of the measured run above)


def _hostile(raw: bytes, rng: random.Random) -> bytes:
    """``raw`` with markers damaged, moved, added (anywhere between messages) and removed."""
    head, msgs = _messages(raw)
    out: list[bytes] = []
    for m in msgs:
        r = rng.random()
        if _is_marker(m):
            (length,) = struct.unpack_from("=I", m, 8)
            if r < 0.15:
                continue  # removed
            if r < 0.45:
                sizes = [0, 4, 20, length - 4, length + 4, length * 2, 1 << 31, rng.randrange(1 << 16)]
                m = _marker(rng.choice(sizes), rng.choice([BLOCK_TYPE, DECLS_TYPE]))
        elif r < 0.08:
            size = rng.choice([len(m), ((len(m) + 3) & ~3) * 2, rng.randrange(4, 4096, 4)])
            out.append(_marker(size, rng.choice([BLOCK_TYPE, DECLS_TYPE])))
        out.append(m + bytes(-len(m) % 4))
    return head + b"".join(out)


@needs_nft
def test_hostile_markers_never_change_the_text(dumps: tuple[bytes, bytes]) -> None:
    """Markers whose length falls inside a message, past the end, across chains, over a chain
    declaration, nested, duplicated or missing: the text is always that of the messages alone, also when
    the blocks recorded from one damaged dump are looked up in another."""
    rng = random.Random(20261205)
    refs = [netlink_to_iptables_save(without_blocks(d)) for d in dumps]
    carried: dict[bytes, str] = {}
    for _ in range(60):
        which = rng.randrange(2)
        variant = _hostile(dumps[which], rng)
        memo: dict[bytes, str] = {}
        got = _translate(variant, memo=memo)
        assert got == refs[which]
        assert _translate(variant, previous=memo, memo={}) == refs[which]
        assert _translate(variant, previous=carried, memo={}) == refs[which]
        carried.update({k: v for k, v in memo.items() if k.startswith(BLOCK_PREFIX)})


@needs_nft
def test_a_block_over_a_chain_declaration_is_walked_every_time(dumps: tuple[bytes, bytes]) -> None:
    """A marker whose block holds the last chain declaration and the first chain's rules: not one chain's
    rules only, so never recorded (taken whole, the declaration would be lost)."""
    head, msgs = _messages(without_blocks(dumps[0]))
    kinds = [struct.unpack_from("=H", m, 4)[0] & 0xFF for m in msgs]
    last_chain = max(i for i, k in enumerate(kinds) if k == 3)
    first_rule = kinds.index(6)
    assert first_rule == last_chain + 1
    end = first_rule
    while (
        end < len(msgs)
        and msgs[end][20:]
        and iptnft.where(msgs[end], 0, len(msgs[end])).split(", rule")[0]
        == iptnft.where(msgs[first_rule], 0, len(msgs[first_rule])).split(", rule")[0]
    ):
        end += 1
    block = b"".join(msgs[last_chain:end])
    raw = head + b"".join(msgs[:last_chain]) + _marker(len(block)) + block + b"".join(msgs[end:])
    ref = netlink_to_iptables_save(without_blocks(dumps[0]))
    memo: dict[bytes, str] = {}
    assert netlink_to_iptables_save(raw, memo=memo) == ref
    assert netlink_to_iptables_save(raw, previous=memo, memo={}) == ref


@needs_nft
def test_a_declarations_block_is_replayed_only_where_it_means_the_same(dumps: tuple[bytes, bytes]) -> None:
    """The declarations' block taken whole declares what its messages would: also in a dump without
    one of its tables (those chains are not declared there either); a block with a table message or a
    rule in it is never kept."""
    raw = dumps[0]
    memo: dict[bytes, str] = {}
    ref = netlink_to_iptables_save(raw, memo=memo)
    head, msgs = _messages(raw)
    nat = next(m for m in msgs if struct.unpack_from("=H", m, 4)[0] & 0xFF == 0 and b"nat\0" in m[20:])
    no_nat = head + b"".join(m + bytes(-len(m) % 4) for m in msgs if m != nat)
    assert "*nat" not in netlink_to_iptables_save(no_nat, previous=memo)
    assert netlink_to_iptables_save(no_nat, previous=memo) == netlink_to_iptables_save(without_blocks(no_nat))
    # a declarations' marker over a table message too: walked, never kept
    plain_head, plain = _messages(without_blocks(raw))
    kinds = [struct.unpack_from("=H", m, 4)[0] & 0xFF for m in plain]
    first_chain, last_chain = kinds.index(3), max(i for i, k in enumerate(kinds) if k == 3)
    assert kinds[first_chain - 1] == 0
    covered = b"".join(plain[first_chain - 1 : last_chain + 1])  # a table message, then the declarations
    odd = plain_head + b"".join(plain[: first_chain - 1]) + _marker(len(covered), DECLS_TYPE) + covered
    odd += b"".join(plain[last_chain + 1 :])
    kept: dict[bytes, str] = {}
    assert netlink_to_iptables_save(odd, memo=kept) == ref
    assert netlink_to_iptables_save(odd, previous=kept) == ref
    # ... or over the declarations and the first chain's rules
    first_rule = kinds.index(6)
    end = first_rule + 1
    while end < len(plain) and kinds[end] == 6 and _chain_of(plain[end]) == _chain_of(plain[first_rule]):
        end += 1
    covered = b"".join(plain[first_chain:end])
    odd = plain_head + b"".join(plain[:first_chain]) + _marker(len(covered), DECLS_TYPE) + covered
    odd += b"".join(plain[end:])
    kept = {}
    assert netlink_to_iptables_save(odd, memo=kept) == ref
    assert netlink_to_iptables_save(odd, previous=kept) == ref
    # a block walked where a table was missing (its chains declared nothing) is not kept for elsewhere
    kept = {}
    netlink_to_iptables_save(no_nat, memo=kept)
    assert netlink_to_iptables_save(raw, previous=kept) == ref


def _chain_of(m: bytes) -> str:
    return iptnft.where(m, 0, len(m)).rpartition(", rule")[0]


def _translate(raw: bytes, **kw: Any) -> str:
    try:
        return netlink_to_iptables_save(raw, **kw)
    except Untranslatable as exc:  # a marker cannot make a dump untranslatable: report it as a text
        return f"refused: {exc}"


@needs_nft
def test_a_capture_takes_the_node_s_unchanged_chains_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through collect_node with reuse off (every part read again): the second capture walks no rule."""
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 0)
    monkeypatch.setenv("K8SSTATE_NODE_REUSE", "0")
    from pytest_k8sstate.node.capture import collect_node

    with netns.temporary("nftblocks2") as n:
        _load(n, kube_proxy_iptables(make_services(12, 2, node_ports=2)))
        shared: dict[bytes, str] = {}
        first = collect_node(n, parts=["iptables"], shared=shared)
        assert first.methods.get("iptables") == iptfast.NETLINK_METHOD
        calls = _count_translations(monkeypatch)
        only_blocks = {k: v for k, v in shared.items() if k.startswith(BLOCK_PREFIX)}
        second = collect_node(n, parts=["iptables"], shared=only_blocks)
        assert calls == []
        assert second.iptables == first.iptables
        assert not second.errors
