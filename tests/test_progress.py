"""The one progress bar (sim.progress.Progress): on stderr when enabled, silent when not,
with or without a known total."""

from __future__ import annotations

from sim.progress import Progress


def test_an_enabled_bar_draws_on_stderr(capsys):
    bar = Progress(4, "work", "item", enabled=True)
    assert bar.on
    for done in range(1, 5):
        bar.update(done)
    bar.describe(desc="work: last", postfix="item 4")
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""
    assert "work" in out.err and "4/4" in out.err and "item 4" in out.err


def test_a_disabled_bar_writes_nothing(capsys):
    for total in (4, None):
        bar = Progress(total, "work", "item", enabled=False)
        assert not bar.on
        bar.update(1)
        bar.advance()
        bar.describe(desc="work: more", postfix="x")
        bar.close()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_a_bar_of_unknown_length_counts_what_is_done(capsys):
    bar = Progress(None, "search", "run", enabled=True)
    assert bar.on
    bar.describe(desc="search: bracket")
    bar.advance()
    bar.advance(2)
    bar.describe(desc="search: bisect", postfix="12.5 req/s pass")
    bar.close()
    err = capsys.readouterr().err
    assert "search: bisect" in err and "3run" in err.replace(" ", "")
    assert "12.5 req/s pass" in err


def test_a_job_too_small_to_watch_draws_no_bar(capsys):
    bar = Progress(3, "work", "item", enabled=True, minimum=10)
    assert not bar.on
    bar.close()
    assert capsys.readouterr().err == ""
