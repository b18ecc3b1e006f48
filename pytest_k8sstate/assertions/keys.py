"""Assertions on etcd keys of a diff: new, removed, modified (with fields), none new — with "did you mean".

Key patterns are globs (``*``/``?`` within a ``/`` segment, ``**`` across); a pattern without a leading
``/`` is relative to ``/registry/`` (see :mod:`pytest_k8sstate.state.keys`). Positive key assertions look
at every change; ``exact=True`` and ``assert_no_new_keys()`` without patterns ignore the diff's ignore
patterns (leases, events, …).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pytest_k8sstate.assertions._common import as_list, did_you_mean, fail, short
from pytest_k8sstate.state import KeyChange, StateDiff, key_matches

__all__ = ["assert_modified_keys", "assert_new_keys", "assert_no_new_keys", "assert_removed_keys"]


def _abs_pattern(p: str) -> str:
    return p if p.startswith("/") else "/registry/" + p


_CHANGE_WORD = {"added": "new", "removed": "removed", "modified": "modified"}


def _changes(diff: StateDiff, change: str, include_ignored: bool) -> list[KeyChange]:
    return {"added": diff.etcd_added, "removed": diff.etcd_removed, "modified": diff.etcd_modified}[change](
        include_ignored
    )


def _describe(c: KeyChange) -> str:
    return f"{c.key} ({c.kind})" if c.kind else c.key


def _assert_keys(
    diff: StateDiff,
    change: str,
    patterns: str | Iterable[str],
    exact: bool,
    verbose: bool | None,
    fields: Iterable[str] | None = None,
) -> list[KeyChange]:
    pats = as_list(patterns)
    if not pats:
        raise ValueError("pass at least one key pattern")
    items = _changes(diff, change, include_ignored=True)
    word = _CHANGE_WORD[change]
    problems: list[str] = []
    matched: list[KeyChange] = []
    for pat in pats:
        hits = [c for c in items if key_matches(pat, c.key)]
        if not hits:
            problems.append(_no_match_message(diff, change, pat))
            continue
        if fields is not None:
            wanted = list(fields)
            for c in hits:
                missing = [f for f in wanted if not _field_changed(f, c.changed_fields)]
                if missing:
                    got = (
                        "not decodable" if c.changed_fields is None else ", ".join(c.changed_fields) or "none"
                    )
                    problems.append(
                        f"{c.key} was modified but not in field(s) {', '.join(missing)} (changed: {got})"
                    )
        matched.extend(hits)
    if exact:
        extra = [
            c
            for c in _changes(diff, change, include_ignored=False)
            if not any(key_matches(p, c.key) for p in pats)
        ]
        if extra:
            problems.append(
                f"{len(extra)} unexpected {word} etcd key(s) (exact=True):\n"
                + short([_describe(c) for c in extra])
            )
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n" + "\n".join(problems)
        raise fail(head, diff.summary(full=True, limit=None), verbose)
    return matched


def _field_changed(field: str, changed: Sequence[str] | None) -> bool:
    if not changed:
        return False
    return any(
        c == field or c.startswith((field + ".", field + "[")) or field.startswith(c + ".") for c in changed
    )


def _no_match_message(diff: StateDiff, change: str, pattern: str) -> str:
    word = _CHANGE_WORD[change]
    items = _changes(diff, change, include_ignored=True)
    msg = f"no {word} etcd key matches {pattern!r}"
    # the key may be in the diff under another change type
    for other in ("added", "removed", "modified"):
        if other == change:
            continue
        hits = [c.key for c in _changes(diff, other, include_ignored=True) if key_matches(pattern, c.key)]
        if hits:
            msg += f"; it was {other}, not {change}: {hits[0]}" + (
                f" (+{len(hits) - 1})" if len(hits) > 1 else ""
            )
            break
    near = did_you_mean(_abs_pattern(pattern), [c.key for c in items])
    if near:
        msg += f"\ndid you mean {' or '.join(near)}?"
    if items:
        visible = _changes(diff, change, include_ignored=False)
        msg += f"\n{len(visible)} {word} key(s)" + (
            ":\n" + short([_describe(c) for c in visible]) if visible else ""
        )
    else:
        msg += f"\n(no key was {change} at all)"
    return msg


def assert_new_keys(
    diff: StateDiff, patterns: str | Iterable[str], exact: bool = False, *, verbose: bool | None = None
) -> list[KeyChange]:
    """Every pattern matches at least one added key; ``exact``: and no other (non-ignored) key was added.
    Returns the matched changes."""
    __tracebackhide__ = True
    return _assert_keys(diff, "added", patterns, exact, verbose)


def assert_removed_keys(
    diff: StateDiff, patterns: str | Iterable[str], exact: bool = False, *, verbose: bool | None = None
) -> list[KeyChange]:
    __tracebackhide__ = True
    return _assert_keys(diff, "removed", patterns, exact, verbose)


def assert_modified_keys(
    diff: StateDiff,
    patterns: str | Iterable[str],
    exact: bool = False,
    *,
    fields: Iterable[str] | None = None,
    verbose: bool | None = None,
) -> list[KeyChange]:
    """Every pattern matches a modified key; ``fields``: dotted paths (``spec.replicas``) that must be
    among (or contain) each matched key's ``changed_fields``."""
    __tracebackhide__ = True
    return _assert_keys(diff, "modified", patterns, exact, verbose, fields=fields)


def assert_no_new_keys(
    diff: StateDiff, patterns: str | Iterable[str] | None = None, *, verbose: bool | None = None
) -> None:
    """No key was added (``patterns=None``: no non-ignored key; else none matching the patterns)."""
    __tracebackhide__ = True
    pats = as_list(patterns)
    if pats:
        bad = [c for c in diff.etcd_added(include_ignored=True) if any(key_matches(p, c.key) for p in pats)]
        what = f"matching {', '.join(map(repr, pats))}"
    else:
        bad = diff.etcd_added()
        what = "(outside the ignore patterns)"
    if bad:
        raise fail(
            f"{len(bad)} new etcd key(s) {what}:\n" + short([_describe(c) for c in bad]),
            diff.summary(full=True, limit=None),
            verbose,
        )
