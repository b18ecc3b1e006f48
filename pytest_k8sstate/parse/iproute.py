"""Normalise ``ip -j`` output (links, addresses, routes) into small comparable records (plain dicts).

What is kept — everything else (statistics, ``ifindex``/``link_index``/``link_netnsid`` numbers,
``qdisc``, ``txqlen``, ``group``, address lifetimes, ``-d`` detail noise such as ``promiscuity`` or
``gso_max_size``) is dropped because it changes without the node's configuration changing or is only
meaningful together with kernel-internal numbering:

* **link** (``ip -j -d link show``): ``ifname``, ``kind`` (``linkinfo.info_kind``: veth, dummy,
  bridge, … or None), ``link_type``, ``address`` (MAC), ``mtu``, ``flags`` (sorted), ``operstate``,
  ``master``, ``link`` (peer / parent name when printed).
* **addr** (``ip -j addr show``): one record per address — ``ifname``, ``family``, ``local``,
  ``prefixlen``, ``scope``, ``broadcast``, ``label``, ``peer`` (``address`` of a point-to-point peer).
* **route** (``ip -j route show table all``): ``table`` (``main`` when not printed), ``type``
  (``unicast`` when not printed), ``dst``, ``gateway``, ``dev``, ``protocol``, ``scope``, ``prefsrc``,
  ``metric``, ``flags`` (sorted). Routes are keyed by everything kept: ``expires``/``cache`` fields
  are dropped.

Absent fields are ``None`` so records of the same kind always have the same keys.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pytest_k8sstate.errors import ParseError

__all__ = ["ADDR_FIELDS", "LINK_FIELDS", "ROUTE_FIELDS", "parse_ip_json"]

Kind = Literal["link", "addr", "route"]
LINK_FIELDS = ("ifname", "kind", "link_type", "address", "mtu", "flags", "operstate", "master", "link")
ADDR_FIELDS = ("ifname", "family", "local", "prefixlen", "scope", "broadcast", "label", "peer")
ROUTE_FIELDS = ("table", "type", "dst", "gateway", "dev", "protocol", "scope", "prefsrc", "metric", "flags")
_SCALAR = (str, int, float, bool, type(None))


def _scalar(v: Any, source: str, path: str) -> Any:
    if isinstance(v, _SCALAR):
        return v
    raise ParseError(source, None, f"a plain value at {path}", json.dumps(v)[:80])


def _strlist(v: Any, source: str, path: str) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ParseError(source, None, f"a list of strings at {path}", json.dumps(v)[:80])
    return sorted(v)


def _link(d: dict[str, Any], source: str, path: str) -> dict[str, Any]:
    info = d.get("linkinfo")
    kind = info.get("info_kind") if isinstance(info, dict) else None
    rec: dict[str, Any] = {
        k: _scalar(d.get(k), source, f"{path}.{k}") for k in LINK_FIELDS if k not in ("kind", "flags")
    }
    rec["kind"] = _scalar(kind, source, f"{path}.linkinfo.info_kind")
    rec["flags"] = _strlist(d.get("flags"), source, f"{path}.flags")
    return {k: rec[k] for k in LINK_FIELDS}


def _addrs(d: dict[str, Any], source: str, path: str) -> list[dict[str, Any]]:
    infos = d.get("addr_info", [])
    if not isinstance(infos, list):
        raise ParseError(source, None, f"a list at {path}.addr_info", json.dumps(infos)[:80])
    out = []
    for j, a in enumerate(infos):
        p = f"{path}.addr_info[{j}]"
        if not isinstance(a, dict):
            raise ParseError(source, None, f"an object at {p}", json.dumps(a)[:80])
        if not a:
            continue  # ip prints {} for addresses filtered out
        rec = {
            "ifname": _scalar(d.get("ifname"), source, f"{path}.ifname"),
            "family": _scalar(a.get("family"), source, f"{p}.family"),
            "local": _scalar(a.get("local"), source, f"{p}.local"),
            "prefixlen": _scalar(a.get("prefixlen"), source, f"{p}.prefixlen"),
            "scope": _scalar(a.get("scope"), source, f"{p}.scope"),
            "broadcast": _scalar(a.get("broadcast"), source, f"{p}.broadcast"),
            "label": _scalar(a.get("label"), source, f"{p}.label"),
            "peer": _scalar(a.get("address"), source, f"{p}.address"),
        }
        if rec["local"] is None:
            raise ParseError(source, None, f"an address ('local') at {p}", json.dumps(a)[:80])
        out.append(rec)
    return out


def _route(d: dict[str, Any], source: str, path: str) -> dict[str, Any]:
    rec = {k: _scalar(d.get(k), source, f"{path}.{k}") for k in ROUTE_FIELDS if k != "flags"}
    rec["flags"] = _strlist(d.get("flags") or [], source, f"{path}.flags")
    if rec["table"] is None:
        rec["table"] = "main"
    if rec["type"] is None:
        rec["type"] = "unicast"
    if rec["dst"] is None:
        raise ParseError(source, None, f"a route destination ('dst') at {path}", json.dumps(d)[:80])
    return {k: rec[k] for k in ROUTE_FIELDS}


def parse_ip_json(
    text: str | bytes | list[Any], kind: Kind, source: str | None = None
) -> list[dict[str, Any]]:
    """``ip -j link|addr|route`` output → normalised records (see module doc for the fields)."""
    src = source or f"ip -j {kind}"
    if kind not in ("link", "addr", "route"):
        raise ParseError(src, None, "kind 'link', 'addr' or 'route'", str(kind))
    data: Any
    if isinstance(text, (str, bytes)):
        if not text.strip():
            return []  # ip prints nothing at all for an empty route table
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParseError(src, exc.lineno, f"valid JSON ({exc.msg}, column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:
            raise ParseError(src, None, "valid UTF-8 JSON", str(exc)) from exc
    else:
        data = text
    if not isinstance(data, list):
        raise ParseError(src, None, "a JSON list at the top level", json.dumps(data)[:80])
    out: list[dict[str, Any]] = []
    for i, d in enumerate(data):
        path = f"[{i}]"
        if not isinstance(d, dict):
            raise ParseError(src, None, f"an object at {path}", json.dumps(d)[:80])
        if kind == "link":
            if not isinstance(d.get("ifname"), str):
                raise ParseError(src, None, f"an interface name ('ifname') at {path}", json.dumps(d)[:80])
            out.append(_link(d, src, path))
        elif kind == "addr":
            out.extend(_addrs(d, src, path))
        else:
            out.append(_route(d, src, path))
    return out
