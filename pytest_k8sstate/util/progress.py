"""A live progress line for long waits (builds, downloads, cluster creation): never minutes of silence.

``with progress("building binaries", sink=log) as live: ... live.step("kube-apiserver") ...``

* On a terminal (the stream is a TTY and ``TERM`` is not ``dumb``) a background ticker rewrites one line
  (``\\r`` + erase) once a second: ``[k8sstate] <what>: <step> 1m05s``, cut to the terminal's width so it
  never wraps; the line is erased when the block ends (the caller prints its own "done" line).
* Elsewhere (CI logs, pipes) the ticker prints a plain line ``[k8sstate] <what>: <step> (still running,
  1m05s elapsed)`` whenever nothing was printed for ``$K8SSTATE_PROGRESS_INTERVAL`` seconds (default 30).
* ``$K8SSTATE_PROGRESS=0`` turns both off; the permanent lines (:meth:`LiveProgress.emit`) still go out.

Permanent lines go through ``sink`` (the caller's progress callback, which prints them with its own prefix)
or, without one, to the stream with the ``[k8sstate]`` prefix (:func:`prefixed` never doubles it); the live
line is cleared before and redrawn after each. A ``progress`` block inside another one (binaries built while a
cluster is created) reports into the outer block's line instead of starting a second ticker.

The live line goes to :func:`terminal` — ``sys.__stderr__`` unless an adapter chose another stream with
:func:`set_terminal` (the pytest plugin gives a duplicate of the terminal's file descriptor, which pytest's
output capture does not redirect, and a ``prepare`` callback that flushes the reporter and says whether its
line is unfinished — the first line this block writes itself then starts on a new line).
The ticker is a daemon thread stopped through an event, never a deadline, and joined when the block ends,
also on an exception or Ctrl-C. pytest-free.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO

from pytest_k8sstate.errors import ConfigError

__all__ = [
    "ENABLE_ENV",
    "INTERVAL_ENV",
    "PLAIN_INTERVAL",
    "PREFIX",
    "LiveProgress",
    "ProgressLine",
    "Terminal",
    "format_elapsed",
    "one_line",
    "plain_interval",
    "prefixed",
    "progress",
    "progress_enabled",
    "set_terminal",
    "terminal",
]

PREFIX = "[k8sstate]"
ENABLE_ENV = "K8SSTATE_PROGRESS"
INTERVAL_ENV = "K8SSTATE_PROGRESS_INTERVAL"
PLAIN_INTERVAL = 30.0
TTY_TICK = 1.0
MAX_STEP = 300  # characters of a step on a plain line (a multi-line reason is joined first)
_ERASE = "\r\x1b[K"

Sink = Callable[[str], None]
Clock = Callable[[], float]


def one_line(text: str, limit: int = MAX_STEP) -> str:
    """``text`` on one line (its lines joined with `` | ``), cut in the middle to at most ``limit``."""
    flat = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    if len(flat) > limit:
        half = (limit - 1) // 2
        flat = flat[:half] + "…" + flat[len(flat) - (limit - 1 - half) :]
    return flat


def prefixed(line: str) -> str:
    """``[k8sstate] line``, unless ``line`` already starts with that prefix."""
    return line if line.lstrip().startswith(PREFIX) else f"{PREFIX} {line}"


def progress_enabled(env: Mapping[str, str] | None = None) -> bool:
    """False when ``$K8SSTATE_PROGRESS`` is ``0`` / ``false`` / ``no`` / ``off`` (read now)."""
    value = (os.environ if env is None else env).get(ENABLE_ENV, "").strip().lower()
    return value not in ("0", "false", "no", "off")


def plain_interval(env: Mapping[str, str] | None = None) -> float:
    """Seconds of silence before a plain progress line: ``$K8SSTATE_PROGRESS_INTERVAL``, default 30."""
    raw = (os.environ if env is None else env).get(INTERVAL_ENV, "").strip()
    if not raw:
        return PLAIN_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.05 <= value <= 3600:  # also rejects nan
        raise ConfigError(
            f"{INTERVAL_ENV}={raw!r} is not a number of seconds between 0.05 and 3600; "
            f"unset it for the default ({PLAIN_INTERVAL:g})"
        )
    return value


def format_elapsed(seconds: float) -> str:
    """``7s``, ``3m05s``, ``1h02m03s``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


@dataclass(frozen=True)
class Terminal:
    """Where live lines go. ``prepare`` (if any) is called in the caller's thread when a block starts: it
    flushes the adapter's own output and returns True when that output left its line unfinished."""

    stream: TextIO | None
    prepare: Callable[[], bool] | None = None


class ProgressLine(Protocol):
    """What :func:`progress` yields."""

    def step(self, text: str) -> None: ...
    def emit(self, line: str) -> None: ...
    def elapsed(self) -> float: ...


_terminal: Terminal | None = None
_active: LiveProgress | None = None
_active_lock = threading.Lock()


def terminal() -> Terminal:
    """The adapter's :class:`Terminal`, else ``sys.__stderr__`` (read now)."""
    return _terminal if _terminal is not None else Terminal(sys.__stderr__)


def set_terminal(term: Terminal | None) -> Terminal | None:
    """Send live lines to ``term`` (``Terminal(None)``: nowhere; ``None``: back to stderr); returns the
    previous setting."""
    global _terminal
    previous, _terminal = _terminal, term
    return previous


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (OSError, ValueError):
        return False


def _width(stream: TextIO) -> int:
    """The terminal's columns; 80 when it does not say (a pty whose size was never set reports 0)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = shutil.get_terminal_size().columns
    return columns if columns > 0 else 80


class LiveProgress:
    """One live line: ``what``, the current step and the elapsed time (see the module doc)."""

    def __init__(
        self,
        what: str,
        stream: TextIO | None,
        *,
        sink: Sink | None = None,
        tty: bool | None = None,
        interval: float | None = None,
        clock: Clock = time.monotonic,
        enabled: bool | None = None,
    ) -> None:
        self.what = what
        self.stream = stream
        self.sink = sink
        self.enabled = (progress_enabled() if enabled is None else enabled) and stream is not None
        self.tty = bool(stream is not None and (_is_tty(stream) if tty is None else tty))
        self.interval = plain_interval() if interval is None else interval
        self.clock = clock
        self.started = clock()
        self.last_output = self.started
        self.current = ""
        self.lines = 0  # plain progress lines written (tests read it)
        self._drawn = False
        self.midline = False  # the adapter's output left its line unfinished: start ours on a new one
        self.prepare: Callable[[], bool] | None = None  # the adapter's (Terminal.prepare)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the caller's side ---
    def step(self, text: str) -> None:
        """The step now running (shown on the live line; no line of its own)."""
        text = one_line(text)
        with self._lock:
            changed, self.current = text != self.current, text
            if changed and self.tty and self.enabled:
                self._draw()

    def emit(self, line: str) -> None:
        """A permanent line (through ``sink``, else prefixed to the stream); it also becomes the step."""
        with self._lock:
            self._clear()
            if self.sink is not None:
                self.sink(line)
                if self.prepare is not None:  # did the sink end the adapter's line? (this is its thread)
                    self.midline = self.prepare()
            elif self.stream is not None:
                self._write(prefixed(line) + "\n")
            self.current = one_line(line)
            self.last_output = self.clock()
            if self.tty and self.enabled:
                self._draw()

    def elapsed(self) -> float:
        return self.clock() - self.started

    # --- the ticker's side ---
    def tick(self) -> None:
        """Redraw the live line (TTY), or print a plain line after ``interval`` seconds of silence."""
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                self._draw()
                return
            now = self.clock()
            if now - self.last_output >= self.interval:
                step = f": {self.current}" if self.current else ""
                spent = format_elapsed(now - self.started)
                self._write(f"{prefixed(self.what)}{step} (still running, {spent} elapsed)\n")
                self.last_output = now
                self.lines += 1

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        period = TTY_TICK if self.tty else min(TTY_TICK, self.interval)
        self._thread = threading.Thread(
            target=self._run, args=(period,), name="k8sstate-progress", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the ticker; erase the live line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            self._clear()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period) and self.enabled:
            self.tick()

    # --- output ---
    def _line(self) -> str:
        step = f": {self.current}" if self.current else ""
        text = f"{prefixed(self.what)}{step}"
        stamp = f" {format_elapsed(self.elapsed())}"
        width = max(20, _width(self.stream) - 1) if self.stream is not None else 80
        if len(text) + len(stamp) > width:
            text = text[: max(0, width - len(stamp) - 1)] + "…"
        return text + stamp

    def _draw(self) -> None:
        self._write(_ERASE + self._line())
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self._write(_ERASE)
            self._drawn = False

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        if self.midline:
            text = "\n" + text
            self.midline = False
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream went away (closed pipe): progress never fails the work
            self.stream, self.enabled = None, False


class _Nested:
    """A block inside another one: its steps and lines go to the outer block's line."""

    def __init__(self, outer: LiveProgress, what: str) -> None:
        self.outer = outer
        self.what = what
        self.saved = outer.current

    def step(self, text: str) -> None:
        self.outer.step(f"{self.what}: {text}" if text else self.what)

    def emit(self, line: str) -> None:
        self.outer.emit(line)

    def elapsed(self) -> float:
        return self.outer.elapsed()


@contextmanager
def progress(
    what: str,
    stream: TextIO | None = None,
    *,
    sink: Sink | None = None,
    tty: bool | None = None,
    interval: float | None = None,
    clock: Clock = time.monotonic,
    enabled: bool | None = None,
) -> Iterator[ProgressLine]:
    """A live progress line for the block (see the module doc); yields an object with ``step(text)`` and
    ``emit(line)``. ``stream`` defaults to :func:`terminal`'s."""
    global _active
    with _active_lock:
        outer = _active
    if outer is not None and stream is None:
        nested = _Nested(outer, what)
        nested.step("")
        try:
            yield nested
        finally:
            outer.step(nested.saved)
        return
    term = terminal() if stream is None else Terminal(stream)
    live = LiveProgress(
        what, term.stream, sink=sink, tty=tty, interval=interval, clock=clock, enabled=enabled
    )
    if live.enabled and term.prepare is not None:
        live.prepare = term.prepare
        live.midline = term.prepare()
    with _active_lock:
        mine = _active is None
        if mine:
            _active = live
    try:
        live.start()
        yield live
    finally:
        live.stop()
        if mine:
            with _active_lock:
                _active = None
