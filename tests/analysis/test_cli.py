"""`eaft analyze`'s command line: every flag's help shows its default."""

from __future__ import annotations

import argparse

from eaft.analysis.cli import build_parser


def test_help_shows_each_flags_default():
    parser = build_parser()
    text = " ".join(parser.format_help().split())
    for shown in ("(default: 2048)", "(default: log)", "(default: topk)", "(default: --html)", "(default: 0.15)"):
        assert shown in text
    for action in parser._actions:
        if action.default not in (None, "", [], argparse.SUPPRESS):
            assert "default" in action.help.lower(), action.option_strings
