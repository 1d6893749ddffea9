"""Every command output the README and docs/ show is what the code prints now
(tests/doc_blocks.py: `python -m tests.doc_blocks` rewrites them from fresh runs)."""

from __future__ import annotations

import pytest

from tests.doc_blocks import DOCS, matches, run, sessions

SESSIONS = [s for path in DOCS for s in sessions(path)]


def test_the_docs_show_command_outputs():
    assert len(SESSIONS) >= 5


@pytest.mark.parametrize("session", SESSIONS, ids=[s.where for s in SESSIONS])
def test_shown_output_is_the_real_output(session):
    actual = run(session.command)
    assert matches(session.shown, actual), (
        f"{session.where}: `{session.command}` prints\n"
        + "\n".join(actual)
        + "\n(run `python -m tests.doc_blocks` to update the docs)"
    )


def test_elisions_match_what_they_stand_for():
    assert matches(["a ... c", "...", "z"], ["a b c", "x", "y", "z"])
    assert not matches(["a ... c"], ["a b d"])
    assert matches(["..."], [])
    assert not matches(["a"], ["a", "b"])
