"""A sweep's results table (SQLite, table `tasks`): one row per task, committed when
written, so a stopped sweep keeps every finished row and skips them when run again;
and the rows ranked, with their Pareto front against cost."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sim.errors import LlmsimError

TABLE = "tasks"

COLUMNS: tuple[tuple[str, str], ...] = (
    ("task_id", "TEXT PRIMARY KEY"),
    ("seq", "INTEGER"),
    ("sweep", "TEXT"),
    ("task", "TEXT"),
    ("label", "TEXT"),
    ("overrides", "TEXT"),
    ("status", "TEXT"),
    ("error", "TEXT"),
    ("note", "TEXT"),
    ("throughput_rps", "REAL"),
    ("goodput_rps", "REAL"),
    ("attainment", "REAL"),
    ("output_tokens_per_s", "REAL"),
    ("ttft_p50_s", "REAL"),
    ("ttft_p99_s", "REAL"),
    ("tpot_p50_s", "REAL"),
    ("tpot_p99_s", "REAL"),
    ("capacity_rps", "REAL"),
    ("capacity_lo_rps", "REAL"),
    ("capacity_hi_rps", "REAL"),
    ("capacity_converged", "INTEGER"),
    ("devices", "INTEGER"),
    ("usd_per_hour", "REAL"),
    ("usd_per_million_output_tokens", "REAL"),
    ("scenario_yaml", "TEXT"),
    ("wall_s", "REAL"),
    ("joules_per_output_token", "REAL"),  # last: added later, see ResultsTable
)


NAMES = tuple(name for name, _ in COLUMNS)


class ResultsTable:
    """The sweep's SQLite table: one row per task, each committed when written."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path))
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ({', '.join(f'{n} {t}' for n, t in COLUMNS)})"
            )
            self.conn.commit()
            have = tuple(r[1] for r in self.conn.execute(f"PRAGMA table_info({TABLE})"))
            if have == NAMES[:-1]:  # a table written before the energy column
                self.conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {' '.join(COLUMNS[-1])}")
                self.conn.commit()
                have = NAMES
        except (OSError, sqlite3.Error) as exc:
            raise LlmsimError(f"cannot open the results table: {exc}", file=str(path)) from None
        if have != NAMES:
            self.conn.close()
            raise LlmsimError(
                f"table {TABLE} has other columns than this llmsim writes; give another "
                "output path",
                file=str(path),
            )

    def done_ids(self, ok_only: bool = False) -> set[str]:
        where = " WHERE status = 'ok'" if ok_only else ""
        return {r[0] for r in self.conn.execute(f"SELECT task_id FROM {TABLE}{where}")}

    def write(self, row: dict[str, Any]) -> None:
        values = [row.get(name) for name in NAMES]
        marks = ", ".join("?" for _ in NAMES)
        self.conn.execute(f"INSERT OR REPLACE INTO {TABLE} VALUES ({marks})", values)
        self.conn.commit()

    def frame(self, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows (of `ids` only, when given), in sweep order."""
        frame = pd.read_sql_query(f"SELECT * FROM {TABLE} ORDER BY seq, task_id", self.conn)
        if ids is not None:
            frame = frame[frame["task_id"].isin(set(ids))].reset_index(drop=True)
        return frame

    def close(self) -> None:
        self.conn.close()


def ranked(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """ok rows by `metric`, highest first (missing last), then the error rows."""
    ok = rows[rows["status"] == "ok"].sort_values(
        [metric, "seq"], ascending=[False, True], na_position="last", kind="stable"
    )
    return pd.concat([ok, rows[rows["status"] != "ok"]], ignore_index=True)


def pareto_front(
    rows: pd.DataFrame,
    metric: str,
    cost: str = "usd_per_million_output_tokens",
    max_cost: float | None = None,
) -> pd.DataFrame:
    """The ok rows no other row beats on both counts: none has a higher (or equal)
    `metric` at a lower (or equal) `cost`, one of them strictly. Rows without either
    value, or with a cost above `max_cost`, are left out. Sorted by cost."""
    ok = rows[(rows["status"] == "ok") & rows[metric].notna() & rows[cost].notna()]
    if max_cost is not None:
        ok = ok[ok[cost] <= max_cost]
    ok = ok.sort_values([cost, metric, "seq"], ascending=[True, False, True], kind="stable")
    front, best = [], float("-inf")
    for idx, row in ok.iterrows():
        if row[metric] > best:
            front.append(idx)
            best = row[metric]
    return ok.loc[front].reset_index(drop=True)


def pareto_path(table: Path) -> Path:
    """Where the Pareto front is written: `<table stem>.pareto.csv` beside the table."""
    return table.with_name(f"{table.stem}.pareto.csv")


REPORT_COLUMNS = (
    "task_id",
    "label",
    "capacity_rps",
    "capacity_lo_rps",
    "capacity_hi_rps",
    "goodput_rps",
    "throughput_rps",
    "attainment",
    "ttft_p99_s",
    "tpot_p99_s",
    "devices",
    "usd_per_hour",
    "usd_per_million_output_tokens",
    "joules_per_output_token",
)


def write_pareto(front: pd.DataFrame, path: Path) -> Path:
    try:
        front.loc[:, list(REPORT_COLUMNS)].to_csv(path, index=False)
    except OSError as exc:
        raise LlmsimError(f"cannot write: {exc.strerror}", file=str(path)) from None
    return path
