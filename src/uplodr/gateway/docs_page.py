"""The /docs page: the OpenAPI document as HTML, its Markdown descriptions rendered.

OpenAPI says descriptions are CommonMark, and uplodr's use it (`code`, **bold**, lists); the
first /docs page put them in as plain text, so a reader saw the backticks. The page is now
rendered once, when the gateway starts, from the same document /openapi.json serves — by
markdown-it-py (the CommonMark reference port; rich already depends on it), with raw HTML in a
description escaped, not passed through, so nothing in the document can script the page. Every
other string goes through `html.escape`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False})

_STYLE = """
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 960px; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h2 { border-top: 1px solid #ddd; padding-top: 1rem; font-size: 1.1rem; }
  code, pre { font: 13px ui-monospace, monospace; background: #f5f5f5; border-radius: 4px; }
  code { padding: 0 .25rem; }
  pre { padding: .6rem; overflow: auto; max-height: 24rem; }
  .method { font-weight: bold; text-transform: uppercase; margin-right: .5rem; }
  table { border-collapse: collapse; margin: .3rem 0 .8rem; }
  td, th { text-align: left; padding: .15rem .6rem .15rem 0; vertical-align: top; font-size: .9rem; }
"""  # noqa: E501  (one CSS rule per line reads better than wrapped ones)


def markdown(text: str | None) -> str:
    """A description as HTML (block level: paragraphs, lists, code)."""
    rendered: str = _MARKDOWN.render(text or "")
    return rendered


def inline(text: str | None) -> str:
    """A one-line description as HTML without a paragraph around it (table cells)."""
    rendered: str = _MARKDOWN.renderInline(text or "")
    return rendered


def _parameters(parameters: list[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}{' *' if p.get('required') else ''}</code></td>"
        f"<td>{escape(p.get('in', ''))}</td><td>{inline(p.get('description'))}</td></tr>"
        for p in parameters
    )
    return f"<table><tr><th>parameter</th><th>in</th><th></th></tr>{rows}</table>"


def _responses(responses: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for status, response in responses.items():
        types = ", ".join(response.get("content", {}))
        headers = ", ".join(response.get("headers", {}))
        extra = (f" ({escape(types)})" if types else "") + (
            f"; headers: {escape(headers)}" if headers else ""
        )
        rows.append(
            f"<tr><td><code>{escape(status)}</code></td>"
            f"<td>{inline(response.get('description'))}{extra}</td></tr>"
        )
    return f"<table><tr><th>status</th><th>answer</th></tr>{''.join(rows)}</table>"


def _operation(path: str, method: str, op: Mapping[str, Any]) -> str:
    parts = [
        f'<h2><span class="method">{escape(method)}</span><code>{escape(path)}</code></h2>',
        f"<p>{escape(op.get('summary', ''))}</p>",
        markdown(op.get("description")),
    ]
    if op.get("parameters"):
        parts.append(_parameters(op["parameters"]))
    if op.get("requestBody"):
        kinds = " or ".join(op["requestBody"].get("content", {}))
        parts.append(f"<p>Body: {escape(kinds)}</p>")
    parts.append(_responses(op.get("responses", {})))
    return "\n".join(parts)


def docs_page(document: Mapping[str, Any]) -> str:
    """The whole page for this OpenAPI document."""
    info = document.get("info", {})
    operations = [
        _operation(path, method, op)
        for path, item in document.get("paths", {}).items()
        for method, op in item.items()
        if isinstance(op, Mapping)
    ]
    schemas = json.dumps(document.get("components", {}).get("schemas", {}), indent=2)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(info.get("title", "uplodr API"))}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>uplodr API</h1>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<div id="api">
{markdown(info.get("description"))}
{"".join(operations)}
<h2>Schemas</h2>
<pre>{escape(schemas)}</pre>
</div>
</body>
</html>
"""
