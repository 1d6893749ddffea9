"""Command outputs shown in the README and docs/, run and compared with what they show.

A fenced block whose lines start with `$ llmsim ...` is a session: each command is run
(in this process, through `sim.cli.main.main`, stdout and stderr together, from the
repository root) and the lines after it, up to the next `$` line or the fence, must be
what it prints. A command may end in `| head -N` or `| tail -N` to show part of its
output. A shown line may contain `...` for text left out (it then matches any text
there); a shown line that is only `...` stands for any number of lines.

    python -m tests.doc_blocks            # rewrite every shown output from a fresh run
    python -m tests.doc_blocks --check    # say which differ (what tests/test_docs.py does)

The updater keeps a shown output's `...` elisions where they still match, and writes the
fresh output in full otherwise.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
ELLIPSIS = "..."


@dataclass
class Session:
    """One `$ llmsim ...` command in a document and the output shown after it."""

    path: Path
    line: int  # 1-based line of the `$` line
    command: str
    shown: list[str]

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def sessions(path: Path) -> list[Session]:
    out: list[Session] = []
    fenced = False
    current: Session | None = None
    for i, line in enumerate(path.read_text().split("\n"), start=1):
        if line.startswith("```"):
            fenced = not fenced
            current = None
            continue
        if not fenced:
            continue
        if line.startswith("$ llmsim "):
            current = Session(path, i, line[2:], [])
            out.append(current)
        elif line.startswith("$ "):
            current = None
        elif current is not None:
            current.shown.append(line)
    return out


def run(command: str) -> list[str]:
    """What a shown command prints (stdout and stderr), its `| head/tail -N` applied."""
    from sim.cli.main import main

    pipe = None
    text = command
    m = re.fullmatch(r"(.*?)\s*\|\s*(head|tail)\s+-n?\s*(\d+)", command)
    if m:
        text, pipe = m.group(1), (m.group(2), int(m.group(3)))
    argv = shlex.split(text)
    assert argv[0] == "llmsim", command
    buf = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            main(argv[1:])
    finally:
        os.chdir(cwd)
    lines = buf.getvalue().rstrip("\n").split("\n")
    lines = [ln.rstrip() for ln in lines]
    if pipe is not None:
        kind, n = pipe
        lines = lines[:n] if kind == "head" else lines[-n:]
    return lines


def _line_matches(shown: str, actual: str) -> bool:
    if ELLIPSIS not in shown:
        return shown.rstrip() == actual
    parts = [re.escape(p) for p in shown.rstrip().split(ELLIPSIS)]
    return re.fullmatch(".*".join(parts), actual) is not None


def matches(shown: list[str], actual: list[str]) -> bool:
    """Whether the shown lines describe the actual ones (see the module docstring)."""
    if not shown:
        return not actual or actual == [""]
    head, *rest = shown
    if head.strip() == ELLIPSIS:
        return any(matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and _line_matches(head, actual[0]) and matches(rest, actual[1:])


def update(path: Path) -> int:
    """Rewrite the shown outputs of `path` that no longer match; return how many."""
    lines = path.read_text().split("\n")
    changed = 0
    for s in reversed(sessions(path)):
        actual = run(s.command)
        if matches(s.shown, actual):
            continue
        start = s.line  # index of the first output line (0-based: s.line)
        lines[start : start + len(s.shown)] = actual
        changed += 1
    if changed:
        path.write_text("\n".join(lines))
    return changed


def main() -> int:
    check = "--check" in sys.argv[1:]
    bad = 0
    for path in DOCS:
        if check:
            for s in sessions(path):
                if not matches(s.shown, run(s.command)):
                    print(f"{s.where}: {s.command}: output differs")
                    bad += 1
        else:
            n = update(path)
            if n:
                print(f"{path.relative_to(ROOT)}: {n} output(s) rewritten")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
