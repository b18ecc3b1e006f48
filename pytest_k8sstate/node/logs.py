"""Component logs of a node: cursors at each snapshot, and the lines written between two cursors.

A :class:`LogSource` names where a component logs: a file glob (``/var/log/pods/kube-system_*/*/*.log``
on a kind node, ``<cluster dir>/logs/kube-proxy-n1.log`` for the ``local`` provider) or a systemd unit
(read with ``journalctl``). :func:`capture_cursors` records, in **one** ``sh`` per node, a
:class:`LogCursor` per matching file (inode + size in bytes) or unit (the journal cursor of its last
entry): cheap, it reads no log text. :func:`read_between` reads, again in one ``sh`` per node, only the
bytes between a *before* and an *after* cursor, at most ``max_bytes`` per source and ``max_lines`` lines
(a cut is said in :attr:`LogChunk.note`). Neither ever raises for an unreadable log: the error is recorded
and everything else is kept.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Self

from pytest_k8sstate.errors import CommandError, K8sStateError, ParseError
from pytest_k8sstate.node.exec import NodeExec

__all__ = [
    "KIND_SOURCES",
    "LogChunk",
    "LogCursor",
    "LogSource",
    "NodeLogCursors",
    "capture_cursors",
    "read_between",
]

_GLOB_RE = re.compile(r"^/[A-Za-z0-9_./*?\[\]+@=,:-]{1,1000}$")
_UNIT_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,256}$")
MAX_BYTES = 256 * 1024
MAX_LINES = 2000
_LINE_CHARS = 2000
_HEAD = 64  # bytes whose checksum identifies a file besides its inode
_REPLACED = "@@k8ss-log-replaced"
_HEAD_RE = re.compile(r"^[0-9]{1,3}:[0-9]{1,10}$")


@dataclass(frozen=True)
class LogSource:
    """Where a component logs. ``component`` may use ``{dir}`` (the file's parent directory name, the
    container of a ``/var/log/pods`` log) and ``{stem}`` (the file name without ``.log``)."""

    component: str
    path: str | None = None
    """An absolute file path or glob (``*``, ``?``, ``[...]``); no spaces or shell characters."""
    unit: str | None = None
    """A systemd unit, read with ``journalctl -u``."""

    def __post_init__(self) -> None:
        if (self.path is None) == (self.unit is None):
            raise K8sStateError(f"log source {self.component!r}: give exactly one of path= or unit=")
        if self.path is not None and not _GLOB_RE.match(self.path):
            raise K8sStateError(
                f"log source {self.component!r}: path {self.path!r} must be an absolute path/glob of "
                "letters, digits and _./*?[]+@=,:- (no spaces or shell characters)"
            )
        if self.unit is not None and not _UNIT_RE.match(self.unit):
            raise K8sStateError(f"log source {self.component!r}: unit {self.unit!r} is not a unit name")

    def name_for(self, path: str) -> str:
        p = PurePosixPath(path)
        stem = p.name[:-4] if p.name.endswith(".log") else p.name
        return self.component.replace("{dir}", p.parent.name).replace("{stem}", stem)


#: A kind node: kube-system (and kube-flannel) pod logs (control plane, kube-proxy, coredns, CNI
#: DaemonSets), the flanneld log and the node-routes agent's journal.
KIND_SOURCES: tuple[LogSource, ...] = (
    LogSource("{dir}", path="/var/log/pods/kube-system_*/*/*.log"),
    LogSource("{dir}", path="/var/log/pods/kube-flannel_*/*/*.log"),  # flannel's own manifest's namespace
    LogSource("flanneld", path="/var/log/k8sstate-flanneld.log"),
    LogSource("node-routes", unit="k8sstate-node-routes.service"),
)


@dataclass(frozen=True)
class LogCursor:
    """Where one log ended at a snapshot: a file's inode and size, or a unit's journal cursor."""

    component: str
    path: str | None = None
    inode: int | None = None
    size: int | None = None
    unit: str | None = None
    cursor: str | None = None
    """The journal cursor of the unit's last entry (None: no entry yet)."""
    head: str | None = None
    """``LEN:CKSUM``: POSIX ``cksum`` of the file's first LEN (≤ 64) bytes (a reused inode is not the same
    file when its first bytes differ)."""

    @property
    def key(self) -> str:
        return f"file:{self.path}" if self.path is not None else f"unit:{self.unit}"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"component": self.component}
        if self.path is not None:
            d.update(path=self.path, inode=self.inode, size=self.size, head=self.head)
        else:
            d.update(unit=self.unit, cursor=self.cursor)
        return d

    @classmethod
    def from_json(cls, d: Any) -> Self:
        if not isinstance(d, dict) or not isinstance(d.get("component"), str):
            raise ParseError("log cursor", None, "an object with a string 'component'", type(d).__name__)
        path, unit = d.get("path"), d.get("unit")
        if isinstance(path, str) and unit is None:
            inode, size = d.get("inode"), d.get("size")
            for name, v in (("inode", inode), ("size", size)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ParseError(f"log cursor {path}", None, f"a non-negative integer {name}", repr(v))
            head = d.get("head")
            if head is not None and not (isinstance(head, str) and _HEAD_RE.match(head)):
                raise ParseError(f"log cursor {path}", None, "'head': null or 'LEN:CKSUM'", repr(head)[:80])
            return cls(component=d["component"], path=path, inode=inode, size=size, head=head)
        cur = d.get("cursor")
        if isinstance(unit, str) and path is None and (cur is None or isinstance(cur, str)):
            return cls(component=d["component"], unit=unit, cursor=cur)
        raise ParseError("log cursor", None, "a string 'path' (file) or 'unit' (journal)", repr(d)[:200])


@dataclass
class NodeLogCursors:
    """A node's log cursors at one snapshot; ``errors`` per source (the others are kept)."""

    node: str
    cursors: list[LogCursor] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "cursors": [c.to_json() for c in self.cursors], "errors": self.errors}

    @classmethod
    def from_json(cls, d: Any) -> Self:
        if not isinstance(d, dict) or not isinstance(d.get("node"), str):
            raise ParseError("log cursors", None, "an object with a string 'node'", type(d).__name__)
        cursors = d.get("cursors") or []
        errors = d.get("errors") or {}
        if not isinstance(cursors, list) or not isinstance(errors, dict):
            raise ParseError(f"log cursors of {d['node']}", None, "a 'cursors' list and an 'errors' object")
        return cls(
            node=d["node"],
            cursors=[LogCursor.from_json(c) for c in cursors],
            errors={str(k): str(v) for k, v in errors.items()},
        )


@dataclass
class LogChunk:
    """The lines one source wrote between two cursors (``note``: cut, rotated, unreadable …)."""

    component: str
    source: str
    lines: list[str] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"component": self.component, "source": self.source, "lines": self.lines, "note": self.note}

    @classmethod
    def from_json(cls, d: Any) -> Self:
        if not isinstance(d, dict):
            raise ParseError("log chunk", None, "an object", type(d).__name__)
        lines = d.get("lines") or []
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise ParseError("log chunk", None, "'lines': a list of strings")
        note = d.get("note")
        return cls(
            component=str(d.get("component", "")),
            source=str(d.get("source", "")),
            lines=list(lines),
            note=None if note is None else str(note),
        )


# -- running one script per node ------------------------------------------------------------------
def _run_script(exec: NodeExec, script: str, marker: str, timeout: float) -> dict[str, bytes] | str:
    """Run ``script`` in one ``sh``; output split at ``<marker> <id>`` lines, or an error message."""
    try:
        res = exec.run(["sh", "-c", script], timeout=timeout, check=False)
    except CommandError as exc:
        return str(exc)
    out: dict[str, bytes] = {}
    m = (marker + " ").encode()
    current: str | None = None
    buf: list[bytes] = []
    for line in res.stdout.splitlines(keepends=True):
        if line.startswith(m):
            if current is not None:
                out[current] = b"".join(buf)
            current, buf = line[len(m) :].decode("ascii", "replace").strip(), []
        elif current is not None:
            buf.append(line)
    if current is not None:
        out[current] = b"".join(buf)
    if not out and res.returncode != 0:
        tail = res.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"sh exited {res.returncode} on node {exec.node}: {tail[-1] if tail else '(no stderr)'}"
    return out


def capture_cursors(exec: NodeExec, sources: Sequence[LogSource], *, timeout: float = 30.0) -> NodeLogCursors:
    """Each source's current end on ``exec``'s node (one ``sh``); never raises for a source."""
    out = NodeLogCursors(exec.node)
    if not sources:
        return out
    marker = "@@k8ss-log-" + secrets.token_hex(6)
    lines = []
    for i, s in enumerate(sources):
        lines.append(f"printf '\\n%s\\n' '{marker} {i}'")  # each section ends with one extra newline
        if s.path is not None:
            # inode, size, mode, name; then the first bytes of all files (a reused inode is told apart by
            # them): two processes per source, whatever the number of files
            lines.append(
                f'set -- {s.path}; if [ -e "$1" ]; then stat -L -c "%i %s %f %n" -- "$@"; '
                f"printf '\\n%s\\n' '{marker} {i} head'; head -q -c {_HEAD} -- \"$@\"; fi 2>/dev/null"
            )
        else:
            unit = shlex.quote(s.unit or "")
            lines.append(
                f"if command -v journalctl >/dev/null; then journalctl -q -u {unit} -n 1 -o json --no-pager "
                "2>&1 | tail -n 1; else echo 'no journalctl'; fi"
            )
    got = _run_script(exec, "\n".join(lines) + "\necho\n", marker, timeout)
    if isinstance(got, str):
        out.errors["*"] = got
        return out
    got = {k: v[:-1] if v.endswith(b"\n") else v for k, v in got.items()}
    for i, s in enumerate(sources):
        raw = got.get(str(i))
        where = s.path or s.unit or ""
        if raw is None:
            out.errors[where] = f"no output for log source {where} on node {exec.node}"
            continue
        text = raw.decode("utf-8", "replace")
        if s.path is not None:
            out.cursors += _file_cursors(s, text, got.get(f"{i} head", b""))
            continue
        text = text.strip()
        if not text:
            out.cursors.append(LogCursor(s.name_for(s.unit or ""), unit=s.unit, cursor=None))
            continue
        try:
            entry = json.loads(text)
            cur = entry["__CURSOR"]
            if not isinstance(cur, str):
                raise TypeError(cur)
        except (ValueError, KeyError, TypeError):
            if "no journalctl" in text or "No entries" in text:
                if "no journalctl" in text:
                    out.errors[where] = f"journalctl not found on node {exec.node}"
                else:
                    out.cursors.append(LogCursor(s.name_for(s.unit or ""), unit=s.unit, cursor=None))
                continue
            out.errors[where] = f"journalctl -u {s.unit} on node {exec.node}: {text.splitlines()[-1][:300]}"
            continue
        out.cursors.append(LogCursor(s.name_for(s.unit or ""), unit=s.unit, cursor=cur))
    return out


def _file_cursors(s: LogSource, stat_out: str, heads: bytes) -> list[LogCursor]:
    files: list[tuple[int, int, str]] = []
    for ln in stat_out.splitlines():
        parts = ln.split(" ", 3)
        if len(parts) == 4 and parts[0].isdigit() and parts[1].isdigit():
            try:
                regular = int(parts[2], 16) & 0o170000 == 0o100000
            except ValueError:
                continue
            files.append((int(parts[0]), int(parts[1]) if regular else -1, parts[3]))
    lens = [min(size, _HEAD) if size >= 0 else 0 for _, size, _ in files]
    exact = sum(lens) == len(heads)  # else a file grew or went unreadable meanwhile: inode only
    out, pos = [], 0
    for (inode, size, path), n in zip(files, lens, strict=True):
        if size >= 0:
            head = f"{n}:{posix_cksum(heads[pos : pos + n])}" if exact else None
            out.append(LogCursor(s.name_for(path), path=path, inode=inode, size=size, head=head))
        pos += n
    return out


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def posix_cksum(data: bytes) -> int:
    """The CRC POSIX ``cksum`` prints for ``data`` (so the node's ``cksum`` can check it later)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ b) & 0xFF]
    n = len(data)
    while n:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ n) & 0xFF]
        n >>= 8
    return ~crc & 0xFFFFFFFF


def _cut_lines(data: bytes, max_lines: int) -> tuple[list[str], int]:
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    more = max(0, len(lines) - max_lines)
    return [ln if len(ln) <= _LINE_CHARS else ln[: _LINE_CHARS - 3] + "..." for ln in lines[:max_lines]], more


def read_between(
    exec: NodeExec,
    before: NodeLogCursors | None,
    after: NodeLogCursors,
    *,
    max_bytes: int = MAX_BYTES,
    max_lines: int = MAX_LINES,
    timeout: float = 60.0,
) -> list[LogChunk]:
    """The lines each source of ``after`` wrote since ``before`` (one ``sh`` on the node).

    A file new since ``before`` (a new pod) is read from its start; a file whose inode changed was rotated
    (its new file is read from the start, the note says lines may be missing); a file gone since
    ``before`` gets a note. At most ``max_bytes`` per source are read and ``max_lines`` kept."""
    old = {c.key: c for c in (before.cursors if before is not None else [])}
    chunks: list[LogChunk] = []
    jobs: list[tuple[LogChunk, str, str | None]] = []  # chunk, command, journal end cursor
    for cur in after.cursors:
        prev = old.pop(cur.key, None)
        chunk = LogChunk(cur.component, cur.path or f"journal:{cur.unit}")
        chunks.append(chunk)
        if cur.path is not None:
            start = 0
            if prev is not None and prev.inode == cur.inode and (prev.size or 0) <= (cur.size or 0):
                start = prev.size or 0
            elif prev is not None:
                chunk.note = "rotated or truncated since the first snapshot: read from its start"
            length = (cur.size or 0) - start
            if length <= 0:
                continue
            if length > max_bytes:
                chunk.note = f"cut: first {max_bytes} of {length} bytes"
                length = max_bytes
            q = shlex.quote(cur.path)
            cmd = f"tail -c +{start + 1} -- {q} | head -c {length}"
            if start and prev is not None and prev.head is not None:
                # same inode, but is it the same file? its first bytes must still be the ones seen before
                n, ck = prev.head.split(":")
                cmd = (
                    f'if [ "$(head -c {n} -- {q} | cksum)" = "{ck} {n}" ]; then {cmd}; '
                    f"else echo {_REPLACED}; head -c {min(cur.size or 0, max_bytes)} -- {q}; fi"
                )
            jobs.append((chunk, cmd, None))
        else:
            if cur.cursor is None or (prev is not None and prev.cursor == cur.cursor):
                continue
            since = (
                f"--after-cursor={shlex.quote(prev.cursor)}"
                if prev is not None and prev.cursor is not None
                else ""
            )
            cmd = (
                f"journalctl -q -u {shlex.quote(cur.unit or '')} {since} -o json --no-pager 2>&1 "
                f"| head -n {max_lines + 1} | head -c {max_bytes * 4}"
            )
            jobs.append((chunk, cmd, cur.cursor))
    for gone in old.values():
        chunks.append(LogChunk(gone.component, gone.path or f"journal:{gone.unit}", note="gone since before"))
    if not jobs:
        return chunks
    marker = "@@k8ss-log-" + secrets.token_hex(6)
    script = "".join(f"echo '{marker} {i}'\n{cmd}\necho\n" for i, (_, cmd, _) in enumerate(jobs))
    got = _run_script(exec, script, marker, timeout)
    for i, (chunk, _, end_cursor) in enumerate(jobs):
        if isinstance(got, str):
            chunk.note = f"unreadable: {got[:300]}"
            continue
        raw = got.get(str(i), b"")[:-1]  # the trailing echo
        if end_cursor is None:
            if raw.startswith(_REPLACED.encode() + b"\n"):
                raw = raw[len(_REPLACED) + 1 :]
                chunk.note = "replaced since the first snapshot (same inode, other file): read from its start"
            chunk.lines, more = _cut_lines(raw, max_lines)
            if more:
                chunk.note = f"cut: first {max_lines} lines, {more} more"
            continue
        chunk.lines, chunk.note = _journal_lines(raw, end_cursor, max_lines)
    return chunks


def _journal_lines(raw: bytes, end_cursor: str, max_lines: int) -> tuple[list[str], str | None]:
    lines: list[str] = []
    for ln in raw.decode("utf-8", "replace").splitlines():
        if not ln.strip():
            continue
        try:
            e = json.loads(ln)
        except ValueError:
            return lines, f"unreadable journal output: {ln[:200]}"
        if not isinstance(e, Mapping):
            continue
        msg = e.get("MESSAGE")
        if isinstance(msg, list):  # binary message: journald gives bytes
            msg = bytes(x for x in msg if isinstance(x, int) and 0 <= x < 256).decode("utf-8", "replace")
        lines.append(str(msg)[:_LINE_CHARS])
        if e.get("__CURSOR") == end_cursor:
            return lines, None
        if len(lines) >= max_lines:
            return lines, f"cut: first {max_lines} lines"
    return lines, None
