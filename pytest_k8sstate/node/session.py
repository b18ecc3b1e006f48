"""One long-lived ``sh`` per node container, fed scripts on stdin (kind/minikube snapshot latency).

Every ``docker exec`` costs tens of milliseconds (the CLI starts, the engine creates and starts an exec
instance, streams attach) — more than the commands a snapshot runs in a small node. A
:class:`ShellSession` keeps one ``docker exec -i <container> sh`` open per node and runs each script in
a subshell of it (``( script ) </dev/null``: no state leaks from one script to the next; the script's
stdin is empty, as with ``docker exec -i`` and no input).

Framing: after the script the shell prints ``\\n<marker> <rc>\\n`` on stdout and ``\\n<marker>\\n`` on
stderr, with a random marker per script; everything before it is the script's output, byte for byte.
Every read has a deadline: a script that does not finish in time kills the session (the ``docker
exec`` client; the shell in the node then reads EOF and exits) and raises
:class:`~pytest_k8sstate.errors.CommandTimeout`; the next script starts a new session. One script at a
time per session: a caller that finds it busy gets None and runs its own ``docker exec`` (two long
commands on one node never wait for each other).

Sessions are closed by :func:`close_sessions` (the kind provider calls it when a cluster is deleted),
at interpreter exit, and by Ctrl-C (the ``docker exec`` client is in the caller's process group).
``K8SSTATE_NODE_SESSION=0`` turns sessions off (every script is its own ``docker exec``).
"""

from __future__ import annotations

import atexit
import os
import secrets
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from pytest_k8sstate.errors import CommandError, CommandTimeout

__all__ = ["ENV", "ShellSession", "close_sessions", "enabled", "get_session", "is_alive", "run_script"]

ENV = "K8SSTATE_NODE_SESSION"


def enabled() -> bool:
    """False when ``$K8SSTATE_NODE_SESSION`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class ShellSession:
    """``argv`` (e.g. ``docker exec -i C sh``) kept running; :meth:`run` sends one script at a time."""

    def __init__(self, argv: Sequence[str], where: str) -> None:
        self.argv = [str(a) for a in argv]
        self.where = where
        self.lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError as exc:
            raise CommandError(f"{self.where}: cannot start {self.argv[0]!r}: {exc}") from exc
        os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
        os.set_blocking(proc.stderr.fileno(), False)  # type: ignore[union-attr]
        self._proc = proc
        return proc

    def close(self) -> None:
        """End the session (idempotent): close its stdin (the node's shell exits), then kill the client."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()

    def run(self, script: str, timeout: float) -> tuple[int, bytes, bytes]:
        """``(rc, stdout, stderr)`` of ``script`` run by ``sh`` in the node; the caller holds :attr:`lock`.

        Raises :class:`CommandTimeout` (session killed) or :class:`CommandError` (the session died:
        container gone, engine restarted — the next call starts a new one)."""
        proc = self._proc if self.alive else None
        if proc is None:
            self.close()
            proc = self._start()
        marker = "@@k8ss-sess-" + secrets.token_hex(8)
        frame = (
            f"(\n{script}\n) </dev/null; printf '\\n{marker} %s\\n' $?; printf '\\n{marker}\\n' >&2\n"
        ).encode("utf-8", "surrogateescape")
        deadline = time.monotonic() + timeout
        try:
            assert proc.stdin is not None
            proc.stdin.write(frame)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.close()
            raise CommandError(f"{self.where}: the node's shell session ended ({exc})") from exc
        out, err = bytearray(), bytearray()
        out_end = b"\n" + marker.encode() + b" "
        err_end = b"\n" + marker.encode() + b"\n"
        rc: int | None = None
        err_done = False
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        assert proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        try:
            while rc is None or not err_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise CommandTimeout(f"{self.where}: script did not finish within {timeout:g}s")
                events = sel.select(timeout=min(left, 1.0))
                for key, _ in events:
                    try:
                        chunk = os.read(key.fd, 1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        self.close()
                        raise CommandError(
                            f"{self.where}: the node's shell session ended (container stopped?)"
                        )
                    if key.data == "out":
                        out += chunk
                        i = out.find(out_end, max(0, len(out) - len(chunk) - len(out_end)))
                        if i >= 0:
                            j = out.find(b"\n", i + len(out_end))
                            if j >= 0:
                                rc = int(out[i + len(out_end) : j])
                                del out[i:]
                    else:
                        err += chunk
                        i = err.find(err_end, max(0, len(err) - len(chunk) - len(err_end)))
                        if i >= 0:
                            del err[i:]
                            err_done = True
                if not events and not self.alive:
                    self.close()
                    raise CommandError(f"{self.where}: the node's shell session ended")
        except BaseException:
            if rc is None or not err_done:
                self.close()  # Ctrl-C / error mid-script: the stream is out of step, never reuse it
            raise
        finally:
            sel.close()
        return rc, bytes(out), bytes(err)


_lock = threading.Lock()
_sessions: dict[tuple[str, ...], ShellSession] = {}


def get_session(argv: Sequence[str], where: str) -> ShellSession:
    """The session running ``argv`` (one per distinct argv in this process)."""
    key = tuple(str(a) for a in argv)
    with _lock:
        s = _sessions.get(key)
        if s is None:
            s = _sessions[key] = ShellSession(key, where)
        return s


def run_script(
    argv: Sequence[str], where: str, script: str, timeout: float
) -> tuple[int, bytes, bytes] | None:
    """Run ``script`` in the session of ``argv``; None when sessions are off or it is busy (then run
    it another way). Starting the session counts against ``timeout``."""
    if not enabled():
        return None
    s = get_session(argv, where)
    if not s.lock.acquire(blocking=False):
        return None
    try:
        return s.run(script, timeout)
    finally:
        s.lock.release()


def is_alive(argv: Sequence[str]) -> bool:
    """Whether the session of ``argv`` is running (its container ran it a moment ago)."""
    with _lock:
        s = _sessions.get(tuple(str(a) for a in argv))
    return s is not None and s.alive


def close_sessions(match: Callable[[tuple[str, ...]], bool] | None = None) -> int:
    """Close the sessions whose argv ``match`` accepts (every one when None); how many were closed."""
    with _lock:
        keys = [k for k in _sessions if match is None or match(k)]
        gone = [_sessions.pop(k) for k in keys]
    for s in gone:
        with s.lock:
            s.close()
    return len(gone)


atexit.register(close_sessions)
