"""The live progress line (util/progress.py): plain lines with a fake clock, a real pty for the TTY line.

No timed asserts: the plain-mode tests drive :meth:`LiveProgress.tick` with a fake clock (named
``FakeClock``); the pty and thread tests only wait (with a deadline) for output that must appear.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.util import progress as prog
from pytest_k8sstate.util.progress import LiveProgress, Terminal, progress


class FakeClock:
    """A fake monotonic clock: the tests move it by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(prog.ENABLE_ENV, raising=False)
    monkeypatch.delenv(prog.INTERVAL_ENV, raising=False)
    previous = prog.set_terminal(None)
    yield
    prog.set_terminal(previous)


def _no_ticker_left() -> bool:
    return not any(t.name == "k8sstate-progress" for t in threading.enumerate())


def test_the_prefix_is_never_doubled() -> None:
    assert prog.prefixed("building") == "[k8sstate] building"
    assert prog.prefixed("[k8sstate] building") == "[k8sstate] building"
    out = io.StringIO()
    live = LiveProgress("[k8sstate] binaries", out, tty=False, interval=30, clock=FakeClock(), enabled=True)
    live.emit("[k8sstate] kind v0.33.0: cache hit")
    live.emit("kwok v0.8.0: cache hit")
    assert out.getvalue().splitlines() == [
        "[k8sstate] kind v0.33.0: cache hit",
        "[k8sstate] kwok v0.8.0: cache hit",
    ]
    live.clock.now += 31  # type: ignore[attr-defined]
    live.tick()
    assert "[k8sstate] [k8sstate]" not in out.getvalue()


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (7.9, "7s"), (60, "1m00s"), (185, "3m05s"), (3723, "1h02m03s")]
)
def test_elapsed_time_format(seconds: float, text: str) -> None:
    assert prog.format_elapsed(seconds) == text


def test_plain_mode_prints_a_line_after_each_interval_of_silence() -> None:
    clock = FakeClock()
    out = io.StringIO()
    sunk: list[str] = []
    live = LiveProgress("binaries", out, sink=sunk.append, tty=False, interval=30, clock=clock, enabled=True)
    live.emit("kube-apiserver v1.37.1: building from the Go module proxy…")
    assert sunk == ["kube-apiserver v1.37.1: building from the Go module proxy…"]
    clock.now += 29
    live.tick()
    assert out.getvalue() == ""  # 29 s of silence: nothing yet
    clock.now += 1
    live.tick()
    assert out.getvalue() == (
        "[k8sstate] binaries: kube-apiserver v1.37.1: building from the Go module proxy… "
        "(still running, 30s elapsed)\n"
    )
    clock.now += 20
    live.emit("kube-apiserver v1.37.1: done")  # a permanent line resets the silence
    clock.now += 29
    live.tick()
    assert live.lines == 1
    clock.now += 1
    live.step("kubectl v1.37.1: linking")  # a step alone prints nothing in plain mode…
    assert live.lines == 1
    live.tick()  # …but is what the next line shows
    assert out.getvalue().splitlines()[-1] == (
        "[k8sstate] binaries: kubectl v1.37.1: linking (still running, 1m20s elapsed)"
    )
    assert "\r" not in out.getvalue()
    assert "\x1b" not in out.getvalue()


def test_k8sstate_progress_0_silences_the_live_line_but_not_the_permanent_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(prog.ENABLE_ENV, "0")
    clock = FakeClock()
    out = io.StringIO()
    sunk: list[str] = []
    with progress("binaries", out, sink=sunk.append, tty=True, clock=clock) as line:
        assert isinstance(line, LiveProgress)
        assert not line.enabled
        line.step("compiling")
        line.emit("kind v0.33.0: cache hit")
        clock.now += 3600
        line.tick()
    assert out.getvalue() == ""
    assert sunk == ["kind v0.33.0: cache hit"]
    assert _no_ticker_left()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon", "1e9"])
def test_a_bad_interval_names_the_variable_and_the_fix(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(prog.INTERVAL_ENV, bad)
    with pytest.raises(ConfigError, match=rf"K8SSTATE_PROGRESS_INTERVAL='{re.escape(bad)}' .* unset it"):
        prog.plain_interval()
    assert prog.plain_interval({prog.INTERVAL_ENV: "2.5"}) == 2.5
    assert prog.plain_interval({}) == prog.PLAIN_INTERVAL


def test_the_ticker_prints_by_itself_and_is_joined_on_ctrl_c() -> None:
    out = io.StringIO()

    def interrupted_wait() -> None:
        with progress("cluster 'a'", out, tty=False, interval=0.05) as line:
            line.step("waiting for nodes Ready")
            deadline = time.monotonic() + 30
            while "still running" not in out.getvalue():
                assert time.monotonic() < deadline, "no plain progress line within 30 s"
                time.sleep(0.01)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_wait()
    assert _no_ticker_left()
    assert out.getvalue().startswith("[k8sstate] cluster 'a': waiting for nodes Ready (still running, ")
    with pytest.raises(RuntimeError, match="boom"), progress("x", io.StringIO(), tty=False, interval=0.05):
        raise RuntimeError("boom")
    assert _no_ticker_left()


def test_a_nested_block_reports_into_the_outer_line() -> None:
    clock = FakeClock()
    out = io.StringIO()
    with progress("cluster 'a'", out, tty=False, interval=30, clock=clock) as outer:
        assert isinstance(outer, LiveProgress)
        outer.step("creating")
        with progress("binaries") as inner:  # no stream: joins the running block, no second ticker
            assert not isinstance(inner, LiveProgress)
            inner.step("kube-apiserver: building")
            assert outer.current == "binaries: kube-apiserver: building"
            assert sum(t.name == "k8sstate-progress" for t in threading.enumerate()) == 1
            clock.now += 30
            outer.tick()
        assert outer.current == "creating"
    assert out.getvalue() == (
        "[k8sstate] cluster 'a': binaries: kube-apiserver: building (still running, 30s elapsed)\n"
    )


def test_an_adapters_unfinished_line_is_ended_before_the_first_progress_line() -> None:
    out = io.StringIO()
    out.write("..")  # pytest -q's dots
    prog.set_terminal(Terminal(out, lambda: out.getvalue()[-1:] not in ("", "\n")))
    clock = FakeClock()
    sunk: list[str] = []
    with progress("cluster 'a'", sink=sunk.append, tty=False, interval=30, clock=clock) as line:
        assert isinstance(line, LiveProgress)
        line.emit("a line that went elsewhere")  # the sink did not end the adapter's line: still asked
        assert sunk == ["a line that went elsewhere"]
        clock.now += 30
        line.tick()
        clock.now += 30
        line.tick()
    assert out.getvalue().splitlines() == [
        "..",
        "[k8sstate] cluster 'a': a line that went elsewhere (still running, 30s elapsed)",
        "[k8sstate] cluster 'a': a line that went elsewhere (still running, 1m00s elapsed)",
    ]


# --- a real terminal: a pty ---
def _read_until(fd: int, want: str, deadline: float, count: int = 1) -> str:
    got = b""
    while got.decode(errors="replace").count(want) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{want!r} not written to the pty; got {got!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            got += os.read(fd, 65536)
    return got.decode(errors="replace")


def test_on_a_tty_one_line_is_rewritten_in_place_cut_to_the_width_and_erased_at_the_end() -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 50, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no \n -> \r\n translation: the test sees exactly what was written
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    stream = open(slave, "w", encoding="utf-8", closefd=True)
    try:
        deadline = time.monotonic() + 30
        with progress("binaries", stream) as line:
            assert isinstance(line, LiveProgress)
            assert line.tty
            line.step("kube-apiserver v1.37.1: building from the Go module proxy (log: /x/y.log)")
            # drawn at once by step(), then redrawn by the ticker
            seen = _read_until(master, "\r\x1b[K[k8sstate] binaries: kube-apiserver", deadline, count=2)
            line.emit("kube-apiserver v1.37.1: done (3.0s)")  # a permanent line between two draws
            seen += _read_until(master, "done (3.0s)\n", deadline)
        seen += (
            os.read(master, 65536).decode(errors="replace") if select.select([master], [], [], 1)[0] else ""
        )
    finally:
        stream.close()
        os.close(master)
    assert _no_ticker_left()
    assert seen.endswith("\r\x1b[K")  # erased at the end: the caller's next line starts clean
    draws = [d for d in seen.split("\r\x1b[K") if d and "\n" not in d]
    assert draws, seen
    for d in draws:
        assert len(d) <= 49, d  # never wraps on a 50-column terminal
        assert re.search(r" \d+s$", d), d  # ends with the elapsed time
    assert "[k8sstate] kube-apiserver v1.37.1: done (3.0s)\n" in seen


def test_a_multi_line_reason_becomes_one_bounded_line() -> None:
    clock = FakeClock()
    out = io.StringIO()
    live = LiveProgress("cluster 'a'", out, tty=False, interval=30, clock=clock, enabled=True)
    live.step(
        "waiting for kube-apiserver /readyz: /readyz returned 500: [+]ping ok\n"
        "[-]etcd failed\n\nreadyz check failed"
    )
    clock.now += 30
    live.tick()
    assert out.getvalue() == (
        "[k8sstate] cluster 'a': waiting for kube-apiserver /readyz: /readyz returned 500: [+]ping ok | "
        "[-]etcd failed | readyz check failed (still running, 30s elapsed)\n"
    )
    long = prog.one_line("x" * 1000 + "\n" + "y" * 1000)
    assert len(long) == prog.MAX_STEP
    assert long.startswith("x")
    assert "…" in long
    assert long.endswith("y")


def test_a_closed_stream_stops_the_progress_but_not_the_work() -> None:
    out = io.StringIO()
    sunk: list[str] = []
    with progress("binaries", out, sink=sunk.append, tty=True, interval=30) as line:
        line.step("building")
        out.close()
        line.step("linking")  # the draw fails: progress turns itself off
        line.emit("kube-proxy v1.37.1: done")
        assert isinstance(line, LiveProgress)
        assert not line.enabled
    assert sunk == ["kube-proxy v1.37.1: done"]
    assert _no_ticker_left()
