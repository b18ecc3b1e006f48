"""The process's iptables rule translations, kept on disk for the next process (a first capture of a
large nf_tables ruleset takes its unchanged chains whole, or walks its rules, instead of decoding each one).

:func:`~pytest_k8sstate.parse.iptnft.netlink_translate` decodes each distinct rule once and files its text
under a key that is a digest of the address family and every byte of its expressions but its counter's
values (the text depends on nothing else), and the lines of each of nfdump's blocks (one chain's rule
messages, or every chain declaration, with the node's rule handles) under a digest of the block's bytes.
The nodes of a snapshot already shared those translations (``shared``); :func:`translations` returns one
dict that every snapshot of this process shares. It is filled from
``<cache dir>/iptnft/rules-<tag>.marshal`` in a background thread (:func:`prefetch`, called when a node
is about to dump a large family, so the read overlaps the dump; a translation waits for it with
:func:`ready`), and :func:`persist` writes it back when a capture added :data:`SAVE_MIN` entries.
``<tag>`` is a digest of the translator's own source files and the Python version, so an edited
translator or another interpreter never reads an older file (and removes it when it writes its own). The
file holds the text of rules the nodes of this machine showed; it is written with mode 0600.

Off with ``K8SSTATE_RULE_CACHE=0`` (each snapshot then starts from an empty dict, as before).
Never raises: an unreadable or malformed file is ignored (and replaced by the next write), a failed write
is logged at debug level (logger ``pytest_k8sstate.node.capture``).
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import sys
import threading
from hashlib import blake2b
from pathlib import Path

from pytest_k8sstate.parse.iptnft import BLOCK_PREFIX
from pytest_k8sstate.util.files import atomic_write_bytes, cache_dir

__all__ = [
    "ENV",
    "MAX_ENTRIES",
    "SAVE_MIN",
    "enabled",
    "path",
    "persist",
    "prefetch",
    "ready",
    "reset",
    "translations",
]

log = logging.getLogger("pytest_k8sstate.node.capture")

ENV = "K8SSTATE_RULE_CACHE"
SAVE_MIN = 500
"""A capture that added fewer new rule translations than this does not rewrite the file (a scale adds a
handful; a first capture of a large ruleset thousands)."""
MAX_ENTRIES = 300_000
"""About 50 MB in memory: beyond it the dict starts again empty (a session with that much churn)."""
_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = (
    "parse/iptnft.py",
    "parse/iptnft_rule.py",
    "parse/iptnft_ext.py",
    "parse/iptnft_runs.py",
    "parse/nfnl.py",
)

_lock = threading.Lock()
_held: dict[bytes, str] = {}  # the process's translations: one dict for the process's lifetime
_state = "new"  # "new": the file not asked for yet; "loading": read in the background; "loaded"
_loaded = threading.Event()
_round = 0  # bumped by reset(): a read started before it is dropped
_saved = 0  # len(_held) when the file was read or last written
_WAIT = 30.0
"""The longest a translation waits for the file to be read (then it goes on without what is left)."""


def enabled() -> bool:
    """False when ``$K8SSTATE_RULE_CACHE`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _tag() -> str:
    h = blake2b(b"%d %d.%d" % (marshal.version, *sys.version_info[:2]), digest_size=8)
    for rel in _SOURCES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes())
    return h.hexdigest()


def path() -> Path:
    """The file of this translator and interpreter."""
    return cache_dir() / "iptnft" / f"rules-{_tag()}.marshal"


def _load(file: Path) -> dict[bytes, str]:
    try:
        data = marshal.loads(file.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, EOFError, TypeError) as exc:
        log.debug("rule translation cache %s not read (%s): starting empty", file, exc)
        return {}
    if not (
        type(data) is dict
        and len(data) <= MAX_ENTRIES
        and all(type(k) is bytes and type(v) is str and _key(k) for k, v in data.items())
    ):
        log.debug("rule translation cache %s: not translation keys to texts; starting empty", file)
        return {}
    return data


def _key(k: bytes) -> bool:
    """A rule's key (a 16-byte digest) or a block's (:data:`~pytest_k8sstate.parse.iptnft.BLOCK_PREFIX`
    and a 16-byte digest)."""
    return len(k) == 16 or (len(k) == 20 and k.startswith(BLOCK_PREFIX))


def translations() -> dict[bytes, str]:
    """The dict a snapshot's nodes share their rule translations through (see the module doc): this
    process's (filled from the file once :func:`prefetch` or :func:`ready` asked for it); a new empty
    one each call when the cache is off."""
    global _saved
    if not enabled():
        return {}
    with _lock:
        if len(_held) > MAX_ENTRIES:
            _held.clear()
            _saved = 0
        return _held


def prefetch() -> None:
    """Start reading the file in the background (once per process): a capture calls this when a node
    is about to dump a large family, so the read overlaps the dump."""
    global _state
    if not enabled():
        return
    with _lock:
        if _state != "new":
            return
        _state = "loading"
        started = _round
    threading.Thread(target=_fill, args=(started,), name="k8sstate-rulecache", daemon=True).start()


def _fill(started: int) -> None:
    global _state, _saved
    data: dict[bytes, str] = {}
    try:
        data = _load(path())
    except OSError as exc:  # the cache dir or the translator's sources unreadable
        log.debug("rule translation cache not read (%s): starting empty", exc)
    finally:
        with _lock:
            if started == _round:
                _held.update(data)  # what was translated meanwhile has the same texts
                _saved = len(_held)
                _state = "loaded"
                _loaded.set()


def ready(shared: dict[bytes, str] | None) -> None:
    """Before translating with ``shared``: when it is the process's dict, the file read into it (waits
    for :func:`prefetch`'s read, or starts one). Never raises; after :data:`_WAIT` it goes on."""
    if shared is None or shared is not _held or not enabled():
        return
    prefetch()
    if not _loaded.wait(_WAIT):
        log.debug("rule translation cache still being read after %.0f s: translating without it", _WAIT)


def persist() -> None:
    """Write the process's translations when they grew by :data:`SAVE_MIN` since read or last written."""
    global _saved
    if not enabled():
        return
    with _lock:
        if _state != "loaded" or len(_held) - _saved < SAVE_MIN or len(_held) > MAX_ENTRIES:
            return
        try:
            data = marshal.dumps(dict(_held))  # a copy: a translation may add to it meanwhile (another lock)
            file = path()
            atomic_write_bytes(file, data, mode=0o600)
        except (OSError, ValueError) as exc:
            log.debug("rule translation cache not written (%s)", exc)
            return
        _saved = len(_held)
        for old in file.parent.glob("rules-*.marshal"):  # other translators' or interpreters' files
            if old != file:
                with contextlib.suppress(OSError):
                    old.unlink()


def reset() -> None:
    """Forget the process's translations (the next :func:`prefetch` or :func:`ready` reads the file
    again; a read under way is dropped)."""
    global _state, _saved, _round
    with _lock:
        _held.clear()
        _round += 1
        _state, _saved = "new", 0
        _loaded.clear()
