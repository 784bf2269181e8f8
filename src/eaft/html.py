"""Self-contained HTML pages: inline CSS and JavaScript, images as data: URIs, data as one inline JSON blob.

A page never loads anything: its Content-Security-Policy allows only inline scripts and styles and data: images,
so even a mistake in a page cannot reach the network.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def resource_text(name: str) -> str:
    """A file of `eaft/resources/html/` (the pages' CSS and JavaScript)."""
    return resources.files("eaft.resources").joinpath("html").joinpath(name).read_text(encoding="utf-8")


def data_uri(path: str | Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def json_script(obj, element_id: str) -> str:
    """`obj` as an inline JSON script element. `<` is escaped so that no string in it can end the element, and `/`
    so that text in the data (a URL in a token) never reads as a reference in the page's source."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace("/", "\\/")
    return f'<script type="application/json" id="{escape(element_id)}">{text}</script>'


def figure(path: str | Path, alt: str, caption: str) -> str:
    """An embedded PNG with its caption; empty when the file does not exist."""
    if not Path(path).is_file():
        return ""
    return (
        f'<figure><img src="{data_uri(path)}" alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def page(title: str, body: str, *, script: str = "", css: str | None = None) -> str:
    """A whole document: the shared stylesheet (or `css`), `body`, then `script` inline at the end."""
    style = resource_text("page.css") if css is None else css
    tail = f"<script>\n{script}\n</script>\n" if script else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>\n{style}\n</style>\n</head>\n"
        f"<body>\n{body}\n{tail}</body>\n</html>\n"
    )
