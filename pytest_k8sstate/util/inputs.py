"""Reading an input file (a dump, a snapshot) in bounded time and memory.

* only regular files are opened (a FIFO with no writer would block forever, ``/dev/zero`` never ends); the
  file is opened non-blocking and checked with ``fstat``, so a FIFO is refused without waiting for a writer.
  ``-`` reads standard input (pipes included) — that is how to feed a FIFO or a device on purpose;
* at most :func:`max_input_bytes` are read (default 1 GiB; ``$K8SSTATE_MAX_INPUT_BYTES`` lifts or lowers it,
  with an optional ``K``/``M``/``G`` suffix); gzip data is decompressed under the same cap.

Every failure is a :class:`ConfigError` (cannot read, not a regular file, too large, stdin closed) or a
:class:`ParseError` (corrupt gzip) whose message names the file.
"""

from __future__ import annotations

import os
import stat
import sys
import zlib

from pytest_k8sstate.errors import ConfigError, ParseError

__all__ = ["DEFAULT_MAX_INPUT_BYTES", "MAX_INPUT_ENV", "gunzip_bounded", "max_input_bytes", "read_input"]

MAX_INPUT_ENV = "K8SSTATE_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT_BYTES = 1 << 30
_CHUNK = 1 << 20
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def max_input_bytes() -> int:
    """The input size cap: ``$K8SSTATE_MAX_INPUT_BYTES`` (e.g. ``4G``), else 1 GiB. Read at call time."""
    raw = os.environ.get(MAX_INPUT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_INPUT_BYTES
    num, suffix = raw.upper().removesuffix("B"), ""
    if num[-1:] in _SUFFIX and not num[-1:].isdigit():
        num, suffix = num[:-1], num[-1]
    if not (num.isascii() and num.isdigit() and 0 < len(num) <= 15) or int(num) == 0:
        raise ConfigError(f"${MAX_INPUT_ENV}={raw!r}: expected a positive number of bytes such as 2G or 500M")
    return int(num) * _SUFFIX[suffix]


def _too_large(name: str, limit: int) -> ConfigError:
    return ConfigError(
        f"{name}: larger than the input limit of {limit} bytes; "
        f"set {MAX_INPUT_ENV} (e.g. {MAX_INPUT_ENV}=4G) to read it"
    )


def _read_stream(fd: int, name: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_large(name, limit)


def read_input(path: str, what: str, *, limit: int | None = None) -> bytes:
    """The bytes of ``path`` (``-``: standard input). ``what`` names the content in messages
    (``"snapshot"``: ``x.json: cannot read snapshot: No such file or directory``)."""
    cap = max_input_bytes() if limit is None else limit
    if path == "-":
        stdin = sys.stdin
        try:
            fd = stdin.fileno() if stdin is not None and not stdin.closed else -1
            if fd >= 0:
                os.fstat(fd)
        except (OSError, ValueError, AttributeError):
            fd = -1
        if fd < 0:
            raise ConfigError(f"-: standard input is closed; pipe the {what} into it or give a file name")
        try:
            return _read_stream(fd, "<stdin>", cap)
        except OSError as exc:
            raise ConfigError(f"<stdin>: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "not a regular file"
            )
            raise ConfigError(
                f"{path}: is {kind}, not a regular file (expected the {what}); to read it anyway, "
                f"give '-' and redirect it to standard input (< {path})"
            )
        if st.st_size > cap:
            raise _too_large(path, cap)
        return _read_stream(fd, path, cap)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def gunzip_bounded(data: bytes, source: str, *, limit: int | None = None) -> bytes:
    """Decompress gzip ``data`` (concatenated members too) to at most ``limit`` bytes (ConfigError beyond);
    ParseError naming ``source`` if it is corrupt or truncated."""
    cap = max_input_bytes() if limit is None else limit
    out: list[bytes] = []
    total = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            buf = rest
            while buf:
                chunk = d.decompress(buf, cap + 1 - total)
                total += len(chunk)
                out.append(chunk)
                if total > cap:
                    raise _too_large(f"{source} (decompressed)", cap)
                buf = d.unconsumed_tail
                if d.eof:
                    break
            if not d.eof:
                tail = d.flush()
                total += len(tail)
                if total > cap:
                    raise _too_large(f"{source} (decompressed)", cap)
                raise ParseError(source, None, "a complete gzip file", "the stream ends early")
            rest = d.unused_data.lstrip(b"\0")
    except zlib.error as exc:
        raise ParseError(source, None, "a valid gzip file", f"corrupt data ({exc})") from exc
    return b"".join(out)
