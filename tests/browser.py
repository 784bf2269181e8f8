"""Headless Chromium for the HTML report tests: find it (skip without it, fail under CI), and read its DOM dump."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser

import pytest

from eaft.browser import find_chromium

# What a page could fetch: any absolute or protocol-relative URL, and the target of every src/href/url().
ABSOLUTE_URL = re.compile(r"(?:https?|wss?|ftp)://|(?:src|href|action)\s*=\s*[\"']?//", re.IGNORECASE)
REFERENCE = re.compile(r"""(?:\b(?:src|href|srcset|action|poster)\s*=\s*["']?|url\(\s*["']?)([^"')\s>]+)""")


def require_chromium() -> str:
    """The chromium binary; skips the test without one, except under CI=true, where a missing browser fails."""
    binary = find_chromium()
    if binary is None:
        message = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: CI must check the HTML reports in a real browser (.ci/run installs it)")
        pytest.skip(message)
    return binary


def references(document: str) -> list[str]:
    """Every src/href/url() target in `document`."""
    return REFERENCE.findall(document)


def external_references(document: str) -> list[str]:
    """What in `document` points outside it: absolute URLs anywhere, and references that are neither data: URIs,
    in-page anchors nor relative file paths."""
    outside = [m.group(0) for m in ABSOLUTE_URL.finditer(document)]
    for ref in references(document):
        has_scheme = re.match(r"^[a-z][a-z0-9+.-]*:", ref, re.IGNORECASE) is not None
        if ref.startswith("//") or (has_scheme and not ref.startswith("data:")):
            outside.append(ref)
    return outside


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Element | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element | str] = []  # elements and text, in document order

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def find(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[Element]:
        return [
            e
            for e in self.walk()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(e.attrs.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, element_id: str) -> Element:
        found = [e for e in self.walk() if e.attrs.get("id") == element_id]
        assert len(found) == 1, f"expected one element #{element_id}, found {len(found)}"
        return found[0]

    def text_content(self) -> str:
        return "".join(c if isinstance(c, str) else c.text_content() for c in self.children)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse_dom(document: str) -> Element:
    """A small tree of the serialized DOM (Chromium's --dump-dom output is well formed)."""
    builder = _Builder()
    builder.feed(document)
    builder.close()
    return builder.root
