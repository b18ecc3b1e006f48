"""The report's stylesheet (inlined into every page: the file is self-contained)."""

from __future__ import annotations

__all__ = ["CSS"]

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header,section,footer{margin:0 24px}
header{padding:16px 0 4px}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:17px;border-bottom:1px solid #d5d9e0;padding-bottom:4px;margin-top:24px}
h3{font-size:15px;margin:12px 0 4px;font-family:ui-monospace,Menlo,Consolas,monospace}
.meta,.note,.where,.counts,.count{color:#5b6475;font-size:12px;font-weight:normal}
.error{color:#a3161b}
.tree ul{list-style:none;margin:0;padding-left:18px;border-left:1px dotted #c3c9d3}
.tree>ul{border:0;padding-left:0}
.tree summary{cursor:pointer;font-family:ui-monospace,Menlo,Consolas,monospace}
.key{font-family:ui-monospace,Menlo,Consolas,monospace;margin:2px 0}
.key .mark{display:inline-block;width:1.2em;font-weight:bold;text-align:center}
.key.added .mark,.key.added>.name{color:#137333}
.key.removed .mark,.key.removed>.name{color:#a3161b}
.key.modified .mark,.key.modified>.name{color:#8a5a00}
.kind{color:#5b6475;font-size:12px;margin-left:6px}
table.fields{border-collapse:collapse;margin:2px 0 6px 1.2em;font-size:12px}
table.fields td{padding:1px 6px;vertical-align:top;word-break:break-all}
td.path{color:#33415c}
td.old{background:#fde8e8}
td.new{background:#e6f4ea}
td.arrow{color:#5b6475}
details.object{display:inline;margin-left:8px;font-size:12px;color:#5b6475}
details.object summary{display:inline;cursor:pointer}
details.object[open]{display:block;margin-left:1.2em}
details.object pre,#text pre{background:#fff;border:1px solid #d5d9e0;padding:8px;overflow:auto;
max-height:400px;font-size:12px}
.service{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:4px 12px 12px;margin:12px 0}
.summary{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;margin:0 0 8px}
.graphbox{overflow-x:auto}
svg.graph{max-width:100%;height:auto}
svg.graph text{font:12px ui-monospace,Menlo,Consolas,monospace;fill:#1d2330}
svg.graph .node rect{fill:#eef2f8;stroke:#6b7a99}
svg.graph .node.endpoint rect{fill:#e6f4ea;stroke:#2d7d46}
svg.graph .node.verdict rect{fill:#fde8e8;stroke:#a3161b}
svg.graph .node text.pod{fill:#2d7d46}
svg.graph .edge path{fill:none;stroke:#7f8aa3}
svg.graph .edge text{font-size:11px;fill:#33415c;paint-order:stroke;stroke:#fff;stroke-width:3px}
table.outcomes{border-collapse:collapse;margin:8px 0;font-size:12px}
table.outcomes caption{text-align:left;color:#5b6475;padding-bottom:2px}
table.outcomes th,table.outcomes td{border:1px solid #d5d9e0;padding:2px 8px;text-align:left}
table.outcomes th{background:#eef2f8}
footer{color:#8a93a6;font-size:11px;padding:24px 0}
"""
