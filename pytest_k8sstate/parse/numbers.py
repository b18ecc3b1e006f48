"""Strict number parsing shared by the parsers and tracers: ASCII only, bounded size.

Python's ``int()`` accepts ``"+80"``, ``" 80"``, ``"8_0"`` and non-ASCII digits (``"٨٠"``);
``Fraction("1e-30000000")`` builds a 30-million-digit integer. Rule dumps and command lines are
ASCII, so these helpers accept exactly what iptables/nft print and return ``None`` (or raise
``ValueError`` with the reason) for anything else; callers turn that into their own error naming
the input.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "MAX_PROBABILITY_DIGITS",
    "MAX_PROBABILITY_EXPONENT",
    "parse_port",
    "parse_probability",
    "parse_uint",
]

MAX_PROBABILITY_DIGITS = 64
"""At most this many digits in a probability's mantissa (iptables-save prints 11 decimals)."""
MAX_PROBABILITY_EXPONENT = 64
"""A probability's exponent (``1e-5``) must be within ±this."""

_DEC_RE = re.compile(r"([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]{1,32}")
_DEC_INT_RE = re.compile(r"[0-9]{1,40}")


def parse_uint(text: str, *, hex_ok: bool = True) -> int | None:
    """ASCII decimal (or ``0x`` hex) unsigned integer of at most 40 digits; None otherwise."""
    if _DEC_INT_RE.fullmatch(text):
        return int(text)
    if hex_ok and _HEX_RE.fullmatch(text):
        return int(text, 16)
    return None


def parse_port(text: str) -> int | None:
    """A port 0..65535 in ASCII decimal (no sign, blank or underscore); None otherwise."""
    if 0 < len(text) <= 5 and text.isascii() and text.isdigit():
        p = int(text)
        return p if p <= 65535 else None
    return None


def parse_probability(text: str) -> Fraction:
    """The exact value of a decimal probability in [0, 1] (``0.3333333333``, ``1e-3``).

    Raises ValueError saying what is accepted: ASCII digits, at most
    ``MAX_PROBABILITY_DIGITS`` of them, an exponent within ±``MAX_PROBABILITY_EXPONENT``.
    """
    shown = text if len(text) <= 40 else text[:37] + "..."
    m = _DEC_RE.fullmatch(text)
    whole, frac, exp = (m.group(1), m.group(2) or "", m.group(3)) if m else ("", "", None)
    if m is None or not (whole or frac):
        raise ValueError(f"probability {shown!r} is not a decimal number such as 0.25")
    if len(whole) + len(frac) > MAX_PROBABILITY_DIGITS:
        raise ValueError(f"probability {shown!r} has more than {MAX_PROBABILITY_DIGITS} digits")
    e = int(exp) if exp is not None and len(exp) <= 8 else (0 if exp is None else 10**9)
    if abs(e) > MAX_PROBABILITY_EXPONENT:
        raise ValueError(f"probability {shown!r}: exponent outside ±{MAX_PROBABILITY_EXPONENT}")
    e -= len(frac)
    mant = int(whole + frac)
    p = Fraction(mant * 10**e) if e >= 0 else Fraction(mant, 10**-e)
    if p > 1:
        raise ValueError(f"probability {shown!r} is outside [0, 1]")
    return p
