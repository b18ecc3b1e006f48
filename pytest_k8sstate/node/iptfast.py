"""The nf_tables fast path of the iptables/ip6tables capture (see :mod:`pytest_k8sstate.node.capture`).

On a node whose ``iptables -V`` says ``(nf_tables)``, :mod:`~pytest_k8sstate.node.nfdump` (stdlib only)
runs there with ``python -c`` and prints the iptables tables as raw netlink messages;
:func:`~pytest_k8sstate.parse.iptnft.netlink_to_iptables_save` turns them into the exact
``iptables-save -c`` text. Every step that cannot give that exact text falls back to the real
``iptables-save -c``: no Python on the node (sh runs ``iptables-save -c`` instead), a netlink error
(likewise), or a rule the translator does not know (:func:`translate_or_fallback` runs it again).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from pytest_k8sstate.errors import CommandError
from pytest_k8sstate.node import rulecache
from pytest_k8sstate.node.exec import LocalExec, NetnsExec, NodeExec
from pytest_k8sstate.parse.iptables import IptablesRuleset
from pytest_k8sstate.parse.iptnft import HEADER, Translated, Untranslatable, netlink_translate

__all__ = [
    "FAMILY",
    "NETLINK_METHOD",
    "enabled",
    "node_python",
    "shell_command",
    "single_command",
    "translate_or_fallback",
]

log = logging.getLogger("pytest_k8sstate.node.capture")

FAMILY = {"iptables": 2, "ip6tables": 10}  # AF_INET, AF_INET6
NETLINK_METHOD = "nf_tables netlink"
"""``NodeState.methods`` of a family read exactly over netlink (the fast path)."""
_SAVE = {"iptables": "iptables-save", "ip6tables": "ip6tables-save"}
ENV = "K8SSTATE_IPTABLES_FAST"
MIN_CHAINS = 6000
"""Below this many chains in a family's iptables tables (about 1,400 kube-proxy Services) the node runs
``iptables-save`` itself: it costs no more CPU there (measured at 1,000 Services / 4,200 chains: 0.55 s
vs 0.7 s for the fast path; at 10,000 / 42,000: 28–35 s vs 4.7–5 s)."""


_ONE_AT_A_TIME = threading.Lock()
"""Translations run one at a time: they are CPU-bound under one GIL anyway, and the nodes of a snapshot
share their rule translations (``shared``), which a node translating at the same moment as another could
not use yet (a full read of three 2,000-Service nodes: 1.44 s instead of 1.54 s, medians of 6)."""

_FLAGS = ("-S", "-E")
"""The dumper needs only the standard library: no ``site`` (half an interpreter's start, ~10 ms of
CPU per run, two runs per node and capture) and no ``PYTHON*`` variables of the node's environment."""


@cache
def _dumper_source() -> str:
    return (Path(__file__).with_name("nfdump.py")).read_text(encoding="utf-8")


def enabled() -> bool:
    """False when ``$K8SSTATE_IPTABLES_FAST`` is ``0``/``false``/``no``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def node_python(exec: NodeExec) -> str:
    """The interpreter to run the dumper with: this one for the host and its netns, else ``python3``."""
    if isinstance(exec, NetnsExec) or type(exec) is LocalExec:
        return sys.executable
    return "python3"


def shell_command(part: str, python: str) -> str:
    """The ``sh`` text that prints the fast dump, or ``iptables-save -c`` output where it cannot."""
    save = f"{_SAVE[part]} -c"
    argv = (python, *_FLAGS, "-c", _dumper_source(), str(FAMILY[part]), str(MIN_CHAINS))
    dump = " ".join(shlex.quote(a) for a in argv)
    return (
        f'case "$({part} -V 2>/dev/null)" in *nf_tables*) {dump} 2>/dev/null || {save} ;; *) {save} ;; esac'
    )


def single_command(exec: NodeExec, part: str, timeout: float) -> bytes | None:
    """Without ``sh``: the fast dump's output, or None (then run ``iptables-save -c`` as usual)."""
    try:
        v = exec.run([part, "-V"], timeout=timeout, check=False)
        if v.returncode != 0 or b"nf_tables" not in v.stdout:
            return None
        res = exec.run(
            [node_python(exec), *_FLAGS, "-c", _dumper_source(), str(FAMILY[part]), str(MIN_CHAINS)],
            timeout=timeout,
            check=False,
        )
    except CommandError:
        return None
    return res.stdout if res.returncode == 0 and res.stdout.startswith(HEADER) else None


def translate_or_fallback(
    exec: NodeExec,
    part: str,
    output: bytes,
    timeout: float,
    *,
    previous: Mapping[bytes, str] | None = None,
    memo: dict[bytes, str] | None = None,
    shared: dict[bytes, str] | None = None,
    source: str | None = None,
) -> tuple[bytes, str | None, Translated | None, IptablesRuleset | None]:
    """``(iptables-save -c text, method, translation, ruleset)`` for a part's output (fast dump or already
    iptables-save).

    ``method`` is ``"nf_tables netlink"`` when the fast dump was used (``translation`` is then what the
    text was rendered from), ``"iptables-save (...)"`` when it had to fall back (with the reason), None
    when the node printed ``iptables-save`` output itself.
    ``previous``/``memo``/``shared``: the translations of the node's last capture / filled with this
    one's / shared with the other nodes of a snapshot (see
    :func:`~pytest_k8sstate.parse.iptnft.netlink_to_iptables_save`).
    ``source``: build the parsed ruleset (named so) from the translation where it can be
    (:meth:`~pytest_k8sstate.parse.iptnft.Translated.ruleset`); the text is then not rendered (empty).
    Otherwise ``ruleset`` is None and the text is to be parsed.
    A failing fallback raises :class:`~pytest_k8sstate.errors.CommandError`.
    """
    if not output.startswith(HEADER):
        return output, None, None, None
    rulecache.ready(shared)
    try:
        with _ONE_AT_A_TIME:
            tr = netlink_translate(output, previous=previous, memo=memo, shared=shared)
        built = tr.ruleset(source) if source is not None else None
        if built is not None:  # its names are plain ASCII: the text would render too
            return b"", NETLINK_METHOD, tr, built
        return tr.text().encode("utf-8", "surrogateescape"), NETLINK_METHOD, tr, None
    except Untranslatable as exc:
        reason = str(exc)
    log.debug("node %s: %s fast path not exact (%s); running %s -c", exec.node, part, reason, _SAVE[part])
    res = exec.run([_SAVE[part], "-c"], timeout=timeout, check=True)
    return res.stdout, f"{_SAVE[part]} -c (fast path not exact: {reason})", None, None
