"""The process's rule translations on disk (node/rulecache.py): read by the next process's first capture.

The file tests use a temporary ``$K8SSTATE_CACHE_DIR``; the capture tests run the real dumper and
``iptables-nft-restore`` in a temporary network namespace (root, the nf_tables iptables).
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_k8sstate.node import iptfast, netns, reuse, rulecache
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.iptnft import netlink_to_iptables_save
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.testing import kube_proxy_iptables, make_services
from tests.test_capture_nft import _DUMPER, _count_translations, _load, needs_nft


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("K8SSTATE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(rulecache.ENV, raising=False)
    rulecache.reset()
    yield tmp_path
    rulecache.reset()  # the next test's process state: read from its own cache dir


def _fill(n: int, start: int = 0) -> dict[bytes, str]:
    return {i.to_bytes(16, "big"): f" -j RULE{i}" for i in range(start, start + n)}


def _read() -> dict[bytes, str]:
    """The process's dict once the file was read into it (what a translation waits for)."""
    d = rulecache.translations()
    rulecache.ready(d)
    return d


def test_a_process_reads_what_the_last_one_wrote() -> None:
    d = _read()
    assert d == {}
    assert rulecache.translations() is d  # one dict for every snapshot of the process
    d.update(_fill(rulecache.SAVE_MIN))
    rulecache.persist()
    f = rulecache.path()
    assert f.is_file()
    assert f.stat().st_mode & 0o777 == 0o600
    rulecache.reset()  # as a new process
    assert rulecache.translations() == {}  # not read before a translation asks for it
    assert _read() == _fill(rulecache.SAVE_MIN)
    assert _read() is d


def test_a_read_in_the_background_keeps_what_was_translated_meanwhile() -> None:
    _read().update(_fill(rulecache.SAVE_MIN))
    rulecache.persist()
    rulecache.reset()
    d = rulecache.translations()
    d.update(_fill(2, start=50_000))  # translated while the file was still being read
    rulecache.prefetch()
    rulecache.ready(d)
    assert d == {**_fill(rulecache.SAVE_MIN), **_fill(2, start=50_000)}


def test_nothing_is_written_before_the_file_was_read() -> None:
    rulecache.translations().update(_fill(rulecache.SAVE_MIN))
    rulecache.persist()  # it could hold more than this process knows of
    assert not rulecache.path().exists()


def test_a_few_new_translations_do_not_rewrite_the_file() -> None:
    _read().update(_fill(rulecache.SAVE_MIN - 1))
    rulecache.persist()
    assert not rulecache.path().exists()
    rulecache.translations().update(_fill(1, start=rulecache.SAVE_MIN))
    rulecache.persist()
    written = rulecache.path().stat().st_mtime_ns
    rulecache.translations().update(_fill(rulecache.SAVE_MIN - 1, start=10_000))
    rulecache.persist()  # counted from the last write
    assert rulecache.path().stat().st_mtime_ns == written
    rulecache.reset()
    assert len(_read()) == rulecache.SAVE_MIN


@pytest.mark.parametrize(
    "content",
    [
        b"not marshal at all \x00\xff",
        marshal.dumps([1, 2, 3]),
        marshal.dumps({b"short": "x"}),
        marshal.dumps({bytes(16): 3}),
        marshal.dumps({"0123456789abcdef": "x"}),
        marshal.dumps(_fill(3))[:-5],  # cut off
    ],
    ids=["garbage", "a-list", "short-key", "not-a-text", "str-key", "truncated"],
)
def test_a_malformed_file_is_ignored_and_replaced(content: bytes) -> None:
    f = rulecache.path()
    f.parent.mkdir(parents=True)
    f.write_bytes(content)
    d = _read()
    assert d == {}
    d.update(_fill(rulecache.SAVE_MIN))
    rulecache.persist()
    rulecache.reset()
    assert _read() == _fill(rulecache.SAVE_MIN)


def test_an_unwritable_cache_dir_is_not_an_error(cache: Path) -> None:
    (cache / "iptnft").write_text("a file where the directory should be")
    _read().update(_fill(rulecache.SAVE_MIN))
    rulecache.persist()  # logged, not raised
    assert rulecache.translations() == _fill(rulecache.SAVE_MIN)


def test_another_translator_s_file_is_removed_when_this_one_writes() -> None:
    f = rulecache.path()
    f.parent.mkdir(parents=True)
    old = f.with_name("rules-0123456789abcdef.marshal")
    old.write_bytes(marshal.dumps(_fill(3)))
    assert _read() == {}  # not this translator's: not read
    rulecache.translations().update(_fill(rulecache.SAVE_MIN))
    rulecache.persist()
    assert sorted(p.name for p in f.parent.iterdir()) == [f.name]


def test_the_file_name_follows_the_translator_s_sources(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    here = rulecache.path()
    root = tmp_path / "src"
    for rel in rulecache._SOURCES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((Path(rulecache.__file__).parent.parent / rel).read_bytes())
    monkeypatch.setattr(rulecache, "_ROOT", root)
    assert rulecache.path() == here  # the same sources: the same file
    (root / rulecache._SOURCES[1]).write_bytes(b"# edited\n" + (root / rulecache._SOURCES[1]).read_bytes())
    assert rulecache.path() != here


def test_off_means_a_new_dict_per_snapshot_and_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rulecache.ENV, "0")
    d = _read()
    d.update(_fill(rulecache.SAVE_MIN))
    assert rulecache.translations() is not d
    rulecache.persist()
    assert not rulecache.path().exists()


# --- with real dumps -------------------------------------------------------------------------------


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetnsExec]:
    monkeypatch.setattr(iptfast, "MIN_CHAINS", 0)  # the fast path even for a small ruleset
    monkeypatch.setattr(reuse, "LARGE_CHAINS", 1)
    monkeypatch.setattr(rulecache, "SAVE_MIN", 1)
    with netns.temporary("rulecache") as n:
        yield n


_NEW_PROCESS = """
import sys
from pytest_k8sstate.node import rulecache
from pytest_k8sstate.parse import iptnft
calls = []
real = iptnft.translate_rule
iptnft.translate_rule = lambda *a: calls.append(1) or real(*a)
raw = sys.stdin.buffer.read()
shared = rulecache.translations()
rulecache.ready(shared)
text = iptnft.netlink_to_iptables_save(raw, shared=shared)
sys.stdout.write(f"{len(calls)}\\n{text}")
"""


def _in_a_new_process(raw: bytes) -> tuple[int, str]:
    """(rules decoded, text) of a new process that reads the cache file and translates ``raw``."""
    out = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", _NEW_PROCESS],
        input=raw,
        capture_output=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    ).stdout.decode()
    decoded, _, text = out.partition("\n")
    return int(decoded), text


@needs_nft
def test_a_new_process_translates_a_dump_without_decoding_its_rules(ns: NetnsExec) -> None:
    _load(ns, kube_proxy_iptables(make_services(20, 2, node_ports=3)))
    raw = ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
    text = netlink_to_iptables_save(raw, shared=_read(), memo={})
    rulecache.persist()
    assert _in_a_new_process(raw) == (0, text)
    # the same rules written again (new handles: no block is the same): every rule from the file
    ns.run(["iptables-nft", "-t", "nat", "-F"], timeout=60)
    _load(ns, kube_proxy_iptables(make_services(20, 2, node_ports=3)))
    again = ns.run([sys.executable, str(_DUMPER), "2"], timeout=120).stdout
    assert again != raw
    assert _in_a_new_process(again) == (0, text)
    rulecache.path().unlink()  # and without the file, every rule decoded
    decoded, same = _in_a_new_process(raw)
    assert same == text
    assert decoded > 100


@needs_nft
def test_a_first_snapshot_of_a_process_takes_the_rules_from_the_last_process(
    ns: NetnsExec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``Snapshot.capture``: the first snapshot decodes and writes; a new process's first
    snapshot (reuse's records dropped, the cache read again) decodes nothing and parses the same."""
    _load(ns, kube_proxy_iptables(make_services(20, 2, node_ports=3)))
    calls = _count_translations(monkeypatch)
    first = Snapshot.capture("first", nodes=[ns])
    assert not first.nodes[ns.node].errors
    assert first.nodes[ns.node].methods.get("iptables") == iptfast.NETLINK_METHOD
    assert len(calls) > 100
    assert rulecache.path().is_file()
    calls.clear()
    rulecache.reset()
    with monkeypatch.context() as m:
        m.setenv("K8SSTATE_NODE_REUSE", "0")  # nothing of the first capture but the file
        second = Snapshot.capture("second", nodes=[ns])
    assert calls == []
    assert second.nodes[ns.node].iptables == first.nodes[ns.node].iptables
