"""Dump the iptables-nft tables of a node as raw nf_tables netlink messages (the fast capture path).

``iptables-nft-save`` needs 80–140 s for 10,000 kube-proxy Services and ``nft list ruleset`` tens of
seconds; reading the same tables over one netlink socket takes well under a second. This module is
**run on the node** (``python3 -c SOURCE FAMILY``; stdlib only, no project imports): it writes a
header line ``K8SS-NFTNL 1 <family>\\n`` and then the kernel's ``NEWTABLE``/``NEWCHAIN``/``NEWRULE``
messages, read at one ruleset generation (retried when the ruleset changed meanwhile). Each chain's rule
messages come as one block after a **block marker**: a 20-byte message of type ``(10 << 8) | 255`` whose
sequence number is the block's length in bytes (a reader that does not know it skips it like any other
message it does not use); so do all the chain declarations, after a marker of type ``(10 << 8) | 254``.
In the block, each message's sequence number, port id and generation bits
(``nfgenmsg.res_id``) are zero: what stays is what ``iptables-save`` prints (names, expressions,
counters) and the rule handles, so the same rules of the same node give the same block in every dump,
which :mod:`pytest_k8sstate.parse.iptnft` looks up whole.
:mod:`pytest_k8sstate.parse.iptnft` turns them into what ``iptables-save`` prints.

Only the iptables table names (raw, mangle, filter, nat, security) of the family are dumped.
Arguments: FAMILY [MIN_CHAINS]. Exit codes: 0 ok, 3 no netlink/nf_tables access, 4 the ruleset kept
changing, 5 fewer than MIN_CHAINS chains (``iptables-save`` is about as fast there: the caller runs it).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

HEADER = b"K8SS-NFTNL 1 "

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_MSG = {"NEWTABLE": 0, "GETTABLE": 1, "NEWCHAIN": 3, "GETCHAIN": 4, "NEWRULE": 6, "GETRULE": 7, "NEWGEN": 15}
_GETGEN = 16
_NLM_F_REQUEST = 1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TABLES = (b"raw", b"mangle", b"filter", b"nat", b"security")
BLOCK_TYPE = (_NFNL_SUBSYS_NFTABLES << 8) | 255
"""The message type of a block marker (see the module doc)."""
DECLS_TYPE = (_NFNL_SUBSYS_NFTABLES << 8) | 254
"""The same for the one block of every chain declaration (``NEWCHAIN`` messages)."""
_ZERO_IDS = bytes(8)


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


class _Dumper:
    def __init__(self, family: int) -> None:
        self.family = family
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0
        # one reusable receive buffer (a dump batch is at most 32 KiB): a fresh 1 MiB bytes per recv
        # would be an mmap + munmap each, for every one of 40,000 chains
        self.buf = bytearray(1 << 18)
        self.view = memoryview(self.buf)

    def request(self, msg: int, attrs: bytes = b"", dump: bool = True) -> list[bytes]:
        """Send one request; return every reply message (without DONE); raise OSError on an error."""
        self.seq += 1
        kind = (_NFNL_SUBSYS_NFTABLES << 8) | msg
        flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
        body = struct.pack("=BBH", self.family, 0, 0) + attrs
        self.sock.send(struct.pack("=IHHII", 16 + len(body), kind, flags, self.seq, 0) + body)
        out: list[bytes] = []
        buf, view = self.buf, self.view
        while True:
            got = self.sock.recv_into(buf)
            data = bytes(view[:got])
            pos = 0
            while pos + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, pos)
                if length < 16:
                    raise OSError("malformed netlink message")
                if mtype == _NLMSG_DONE:
                    return out
                if mtype == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, pos + 16)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out  # an ACK
                out.append(data[pos : pos + length])
                pos += (length + 3) & ~3
            if not dump and out:
                return out

    def generation(self) -> bytes:
        msgs = self.request(_GETGEN, dump=False)
        return msgs[0][20:] if msgs else b""

    def snapshot(self, min_chains: int = 0, *, blocks: bool = False) -> list[bytes]:
        """Tables, chains, then each chain's rules (one dump per chain: a whole-table rule dump
        restarts its walk for every 32 KiB message batch and takes tens of seconds at 100k rules);
        ``blocks``: each chain's rules as one block after its marker (see the module doc)."""
        tables = [m for m in self.request(_MSG["GETTABLE"]) if _attr_value(m, 1) in _TABLES]
        names = {_attr_value(m, 1) for m in tables}
        chains = [m for m in self.request(_MSG["GETCHAIN"]) if _attr_value(m, 1) in names]
        if len(chains) < min_chains:
            raise _Small(len(chains))
        out = tables + (_block(DECLS_TYPE, chains) if blocks and chains else chains)
        for m in chains:
            sel = _attr(1, _attr_value(m, 1) + b"\0") + _attr(2, _attr_value(m, 3) + b"\0")
            rules = self.request(_MSG["GETRULE"], sel)
            out += _block(BLOCK_TYPE, rules) if blocks and rules else rules
        return out


def _block(kind: int, msgs: list[bytes]) -> list[bytes]:
    """``msgs`` as one block after its marker of type ``kind`` (see the module doc): each message's
    sequence number, port id and generation bits zeroed."""
    z = _ZERO_IDS
    block = b"".join([m[:8] + z + m[16:18] + b"\0\0" + m[20:] for m in msgs])
    return [struct.pack("=IHHII", 20, kind, 0, len(block), 0) + b"\0\0\0\0", block]


class _Small(Exception):
    """Fewer chains than asked for: iptables-save is about as fast there (exit 5, the caller runs it)."""


def _attr_value(msg: bytes, kind: int) -> bytes:
    """A top-level string attribute of an nf_tables message (without its NUL)."""
    return _attr_raw(msg, kind).rstrip(b"\0")


def _attr_raw(msg: bytes, kind: int) -> bytes:
    """A top-level attribute's payload of an nf_tables message (empty when it has none)."""
    pos = 20
    while pos + 4 <= len(msg):
        n, k = struct.unpack_from("=HH", msg, pos)
        if n < 4:
            break
        if k & 0x3FFF == kind:
            return msg[pos + 4 : pos + n]
        pos += (n + 3) & ~3
    return b""


def main(argv: list[str]) -> int:
    family = int(argv[1]) if len(argv) > 1 else socket.AF_INET
    min_chains = int(argv[2]) if len(argv) > 2 else 0
    try:
        d = _Dumper(family)
        for _ in range(5):
            gen = d.generation()
            msgs = d.snapshot(min_chains, blocks=True)
            if d.generation() == gen:
                break
        else:
            sys.stderr.write("the nf_tables ruleset changed during each of 5 dumps\n")
            return 4
    except OSError as exc:
        sys.stderr.write(f"nf_tables netlink dump failed: {exc}\n")
        return 3
    except _Small as exc:
        sys.stderr.write(f"only {exc} chains: iptables-save is about as fast\n")
        return 5
    out = sys.stdout.buffer
    out.write(HEADER + str(family).encode() + b"\n")
    out.write(b"".join(msgs))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
