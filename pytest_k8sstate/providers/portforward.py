"""A userspace TCP forwarder from the root network namespace into a project network namespace.

The ``local`` provider runs the control plane inside the control-plane node's network namespace and
keeps the root namespace untouched (no veth, route or address there). The pytest process reaches the
apiserver and etcd through this forwarder instead: it listens on ``127.0.0.1:<port>`` in the namespace
it was started in, then enters the target namespace (``setns``) and opens every upstream connection
from there. Only loopback and the project's own namespaces carry traffic.

Run as a daemon process (stdlib only, so it runs from its file path without the package installed)::

    python portforward.py --netns k8ss-x-control-plane --ready-file F \
        --map 127.0.0.1:0=172.31.0.2:6443 --map 127.0.0.1:0=127.0.0.1:2379

Listening sockets are created before ``setns``, so they stay in the original namespace; every socket
created afterwards (the upstream side) belongs to the target namespace. Once all listeners are bound,
the chosen ports are written to ``--ready-file`` as JSON ``{"ports": [...]}`` (atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import threading
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000
_BUF = 256 * 1024
_CONNECT_TIMEOUT = 5.0


def setns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (``/run/netns/NAME``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class _Pair:
    """Both directions of one forwarded connection; the last pump to finish closes the sockets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 2


def _pump(src: socket.socket, dst: socket.socket, pair: _Pair) -> None:
    buf = bytearray(_BUF)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if n == 0:
                break
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with pair.lock:
            pair.running -= 1
            last = pair.running == 0
        if last:
            src.close()
            dst.close()


def _serve(client: socket.socket, target: tuple[str, int]) -> None:
    # This runs in the main thread, which already lives in the target namespace.
    try:
        upstream = socket.create_connection(target, timeout=_CONNECT_TIMEOUT)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    client.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pair = _Pair()
    threading.Thread(target=_pump, args=(client, upstream, pair), daemon=True).start()
    threading.Thread(target=_pump, args=(upstream, client, pair), daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--netns", required=True, help="target network namespace name (/run/netns/NAME)")
    ap.add_argument("--map", action="append", required=True, help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sel = selectors.DefaultSelector()
    ports: list[int] = []
    for spec in args.map:
        listen, _, target = spec.partition("=")
        lhost, lport = _parse_hostport(listen)
        thost, tport = _parse_hostport(target)
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((lhost, lport))
        ls.listen(128)
        ports.append(ls.getsockname()[1])
        sel.register(ls, selectors.EVENT_READ, (thost, tport))
    setns(os.path.join("/run/netns", args.netns))
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"ports": ports, "pid": os.getpid()}, fh)
    os.replace(tmp, args.ready_file)
    while True:
        for key, _ in sel.select():
            lsock = key.fileobj
            assert isinstance(lsock, socket.socket)
            try:
                client, _addr = lsock.accept()
            except OSError:
                continue
            _serve(client, key.data)


if __name__ == "__main__":
    sys.exit(main())
