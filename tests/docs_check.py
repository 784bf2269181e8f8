"""Checks that keep README.md and docs/ true to the repository: relative links and images resolve (files, and
`#anchors` against the target's headings as GitHub slugs them); every `eaft ...` command line quoted in a code
block names a real command, real flags (each command's own argparse parser) and, for `eaft train`, real config
keys; repository paths quoted in the prose exist. Each check returns problems as `file:line: what`;
tests/test_docs.py runs them on the docs and on broken fixtures."""

from __future__ import annotations

import importlib
import re
import shlex
import unicodedata
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the text may hold one level of brackets and span lines
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
REPO_PATH = re.compile(r"`((?:src|tests|benchmarks|configs|scripts|docs)/[^`\s]*)`")
NOT_SHELL = {"python", "py", "yaml", "yml", "json", "toml", "jinja", "html", "text"}  # "text": output, trees
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", "(", ")", ";;"}
REDIRECTS = {">", ">>", "<", "<<", ">&", "<&", "&>"}
WRAPPERS = {"time", "/usr/bin/time", "nice", "command", "exec"}


@dataclass(frozen=True)
class Block:
    """A fenced code block: its info string, the line of its first content line, and its text."""

    lang: str
    line: int
    text: str


def doc_files(root: Path = REPO) -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def split_markdown(text: str) -> tuple[str, list[Block]]:
    """The text with fenced code blocks blanked (line numbers kept), and the blocks themselves."""
    prose, blocks, current, start, lang, fence = [], [], [], 0, "", None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, lang, start, current = match.group(1), match.group(2).lower(), number + 1, []
            prose.append("")
        elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append(Block(lang, start, "\n".join(current)))
            fence = None
            prose.append("")
        elif fence is not None:
            current.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").replace("<", "").replace(">", "")
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ " or unicodedata.category(c) == "Mn")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose.split("\n"):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        found.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return found


def link_problems(path: Path, root: Path = REPO) -> list[str]:
    """Relative links and images of `path` that name no file, or an anchor its target does not have."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    prose = INLINE_CODE.sub(lambda m: "x" * len(m.group(2).split("\n")[0]) + "\n" * m.group(2).count("\n"), prose)
    problems = []
    for match in LINK.finditer(prose):
        target = match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, data:
            continue
        where = f"{path.relative_to(root)}:{prose.count(chr(10), 0, match.start()) + 1}"
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: {target!r} names no file ({resolved.relative_to(root.resolve())})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: {target!r}: no heading of {resolved.name} has the anchor #{anchor}")
        elif anchor and resolved.suffix != ".md":
            problems.append(f"{where}: {target!r}: an anchor into a file that is not Markdown")
    return problems


def path_problems(path: Path, root: Path = REPO) -> list[str]:
    """Repository paths quoted in the prose (`src/...`, `tests/...`, `configs/...`, ...) that do not exist; a path
    with a placeholder (`<run>`, `*`, `...`) is not checked, a test id (`file.py::test`) is checked as its file."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    problems = []
    for match in REPO_PATH.finditer(prose):
        quoted = match.group(1).split("::")[0]
        if any(mark in quoted for mark in ("<", "*", "{", "...")) or (REPO / quoted).exists():
            continue
        line = prose.count("\n", 0, match.start()) + 1
        problems.append(f"{path.relative_to(root)}:{line}: `{quoted}` is no file or folder of the repository")
    return problems


def command_lines(block: Block) -> Iterator[tuple[int, list[str]]]:
    """(line, argv after `eaft`) for every eaft command in a shell block: `eaft CMD ...`, `.venv/bin/eaft CMD ...`
    and `... -m eaft.cli CMD ...`, after env assignments and wrappers, also after `&&`, `|`, `;`."""
    lines = block.text.split("\n")
    number = 0
    while number < len(lines):
        first, text = number, lines[number]
        while text.endswith("\\") and number + 1 < len(lines):  # a continued line
            number += 1
            text = text[:-1] + " " + lines[number]
        number += 1
        if not re.search(r"(^|[\s/;&|(])eaft(\.cli)?(\s|$)", text):
            continue
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        try:
            tokens = list(lexer)
        except ValueError:
            continue  # not shell (an output line), so not a command
        for command in _simple_commands(tokens):
            argv = _eaft_argv(command)
            if argv is not None:
                yield block.line + first, argv


def _simple_commands(tokens: list[str]) -> Iterator[list[str]]:
    current: list[str] = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in SHELL_OPERATORS:
            yield current
            current = []
        elif token in REDIRECTS:
            skip = True  # the redirection's file
        else:
            current.append(token)
    yield current


def _eaft_argv(command: list[str]) -> list[str] | None:
    """The arguments after `eaft` when `command` runs eaft, else None."""
    rest = list(command)
    while rest and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", rest[0]) or rest[0] in WRAPPERS):
        rest.pop(0)
    if rest and Path(rest[0]).name == "eaft":
        return rest[1:]
    if "-m" in rest and rest.index("-m") + 1 < len(rest) and rest[rest.index("-m") + 1] == "eaft.cli":
        return rest[rest.index("-m") + 2 :]
    return None


def command_problems(path: Path, root: Path = REPO) -> list[str]:
    """Every eaft command line in the shell blocks of `path` that the real command line would refuse."""
    _, blocks = split_markdown(path.read_text(encoding="utf-8"))
    problems = []
    for block in blocks:
        if block.lang in NOT_SHELL:
            continue
        for line, argv in command_lines(block):
            for problem in check_command(argv):
                problems.append(f"{path.relative_to(root)}:{line}: eaft {' '.join(argv)}: {problem}")
    return problems


def check_command(argv: list[str]) -> list[str]:
    """What is wrong with `eaft <argv>`: an unknown command, flag or key, a bad value, a missing configs/ file."""
    from eaft.cli import COMMANDS

    argv = [a for a in argv if a not in ("--debug", "...")]  # --debug: eaft's own; '...': elided arguments
    if not argv or argv[0] not in COMMANDS:
        return [f"no such command (known: {', '.join(COMMANDS)})"]
    name, args = argv[0], argv[1:]
    problems = [f"{value} does not exist" for value in _values(args) if _missing_config(value)]
    if name == "train":
        return problems + train_problems(args)
    parser = importlib.import_module(COMMANDS[name][0]).build_parser()

    def refuse(message: str):
        raise ValueError(message)

    parser.error = refuse
    parser.allow_abbrev = False  # eaft takes a prefix of a flag; the docs spell flags whole
    try:
        with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            parsed = parser.parse_args(args)
    except ValueError as err:
        return [*problems, str(err)]
    except SystemExit as err:  # --help
        return problems if err.code in (0, None) else [*problems, f"exit {err.code}"]
    for kind, value in (
        ("suites", getattr(parsed, "suite", None)),
        ("experiments", getattr(parsed, "experiment", None)),
    ):
        problems += _unknown_shipped(value, kind)
    return problems


def _values(args: list[str]) -> Iterator[str]:
    for arg in args:
        yield arg.partition("=")[2] if "=" in arg and not arg.startswith("-") else arg


def _missing_config(value: str) -> bool:
    """A `configs/...` path the repository does not hold (what a wheel ships is the same folder)."""
    return value.startswith("configs/") and not (REPO / value).exists()


def _unknown_shipped(value: str | None, kind: str) -> list[str]:
    """A bare name (no folder, no .yaml) that no shipped file of `kind` has."""
    from eaft.shipped import shipped_names

    if value is None or "/" in value or value.endswith((".yaml", ".yml")) or value.startswith("$"):
        return []
    names = shipped_names(kind)
    return [] if value in names else [f"{value!r} is no shipped {kind[:-1]} (shipped: {', '.join(names)})"]


def train_problems(args: list[str]) -> list[str]:
    """`eaft train [CONFIG | NAME] [key=value ...]`: the config's name and every key, as eaft.train.config reads
    them (an unknown key, a refused one, an objective or its parameter that does not exist)."""
    from eaft.objectives import objective_names, objective_params
    from eaft.train.cli import REFUSED_TRAINING_KEYS
    from eaft.train.config import our_fields, training_fields, unknown_key_error

    if any(a in ("-h", "--help") for a in args):
        return []
    problems = []
    if args and "=" not in args[0]:
        problems += _unknown_shipped(args[0], "train")
        args = args[1:]
    settings = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            problems.append(f"{arg!r} is not key=value")
            continue
        settings[key.strip().lstrip("-")] = value
    known = set(our_fields()) | set(training_fields())
    objective = settings.get("objective")
    if objective is not None and objective not in objective_names():
        problems.append(f"objective={objective} is no registered objective (known: {', '.join(objective_names())})")
        objective = None
    params = set(objective_params(objective)) if objective else set().union(*map(objective_params, objective_names()))
    for key in settings:
        head, dot, sub = key.partition(".")
        if dot and (head != "objective_args" or sub not in params):
            problems.append(f"{key}: no such objective parameter" + (f" of {objective}" if objective else ""))
        elif not dot and key in REFUSED_TRAINING_KEYS:
            problems.append(f"{key}: refused by eaft train")
        elif not dot and key not in known:
            problems.append(str(unknown_key_error(key, "command line")))
    return problems
