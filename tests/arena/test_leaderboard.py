"""The public Leaderboard tab shows the stored snapshots of votes cast in real battles; it never fits."""

from __future__ import annotations

import asyncio
import csv
import itertools

import sqlalchemy as sa

from arena.snapshots import SnapshotService
from arena.ui.leaderboard import ALL, COLUMNS, COMPUTING, CSV_COLUMNS, LeaderboardPage
from arena.views import MINUS
from storage.schema import Battle, BattleTag, ModelRow


def _battle(service, winner_of):
    """Play one battle; ``winner_of(models)`` picks the FastChat winner from the hidden sides."""
    state = service.new_session()
    service.start_turn(state, "Which is better?", [])

    async def drain() -> None:
        async for _ in service.stream(state):
            pass

    asyncio.run(drain())
    service.vote(state, winner_of(state.models))
    return state


def _play(service, n: int) -> None:
    """``n`` battles where alpha wins two of three of its battles; other pairs alternate."""
    turn = itertools.count()

    def winner(models):
        k = next(turn)
        if "alpha" in models.values():
            alpha_side = "model_a" if models["a"] == "alpha" else "model_b"
            other = "model_b" if alpha_side == "model_a" else "model_a"
            return alpha_side if k % 3 else other
        return ("model_a", "model_b", "tie")[k % 3]

    for _ in range(n):
        _battle(service, winner)


def test_tab_shows_the_snapshot_and_never_computes(make_service, sessions, tmp_path) -> None:
    snapshots = SnapshotService(sessions, refresh_s=60, min_votes=8)
    page = LeaderboardPage(snapshots, files_dir=tmp_path)

    before = page.show(ALL, False)
    assert before.updated == COMPUTING and before.table.empty and before.csv_path is None
    assert before.figure is None and before.categories == [ALL]
    assert snapshots.computations == {}, "opening the tab started no computation"

    _play(make_service(seed=4), 36)
    with sessions.begin() as db:
        db.execute(sa.update(ModelRow).values(license="apache-2.0", link="https://example.org/m"))
        ids = db.scalars(sa.select(Battle.id).order_by(Battle.id)).all()
        db.add_all(BattleTag(battle_id=i, tag="ocr") for i in ids[:30])
    assert page.show(ALL, False).updated == COMPUTING, "still nothing until the snapshot is computed"
    snapshots.refresh_once()
    computed = dict(snapshots.computations)

    board = page.show(ALL, False)
    for _ in range(10):
        page.show(ALL, False)
    assert dict(snapshots.computations) == computed, "ten more opens: still no computation"

    table = board.table
    assert list(table.columns) == COLUMNS
    assert table["Model"].iloc[0] == "Alpha Display"  # display names, not ids
    assert table["Votes"].sum() == 2 * 36 and table["Rank (UB)"].iloc[0] == 1
    assert set(table["License"]) == {"apache-2.0"}
    assert set(table["Link"]) == {"[link](https://example.org/m)"}
    for interval in table["95% CI"]:
        plus, minus = interval.split(" / ")
        assert plus[0] == "+" and plus[1:].isdigit() and minus[0] == MINUS and minus[1:].isdigit()
    assert board.updated.startswith("Last updated ") and board.updated.endswith(" UTC")
    assert "36 votes" in board.note and "sandwich" in board.note
    assert board.pending == ""
    assert list(board.figure.data[0].x) == list(table["Model"])

    with open(board.csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == CSV_COLUMNS and len(rows) == 1 + len(table)
    assert [r[1] for r in rows[1:]] == list(table["Model"])
    assert [r[3] for r in rows[1:]] == list(table["95% CI"])
    assert all(r[-1] == "https://example.org/m" for r in rows[1:])
    assert float(rows[1][4]) < float(rows[1][2]) < float(rows[1][5])  # CI lower < rating < CI upper

    # the category selector offers the tagged votes' own leaderboard
    assert board.categories == [ALL, "ocr"]
    ocr = page.show("ocr", False)
    assert ocr.category == "ocr" and ocr.table["Votes"].sum() == 2 * 30
    assert "category “ocr”" in ocr.note
    assert page.show("no-such-tag", False).category == ALL

    # the style toggle shows the style-controlled view (answer lengths of the real battles)
    styled = page.show(ALL, True)
    assert "Style-controlled" in styled.note and "bootstrap" in styled.note
    assert sorted(styled.table["Model"]) == sorted(table["Model"])
    assert "all votes only" in page.show("ocr", True).note


def test_few_votes_and_a_stale_snapshot_are_said_plainly(make_service, sessions, tmp_path) -> None:
    snapshots = SnapshotService(sessions, refresh_s=60, min_votes=30)
    page = LeaderboardPage(snapshots, files_dir=tmp_path)
    service = make_service(seed=1)
    _battle(service, lambda models: "model_a")
    snapshots.refresh_once()
    board = page.show(ALL, False)
    assert board.table.empty and board.csv_path is None, "one vote: no rating (it showed 2235 / −235)"
    assert "Not enough votes yet" in board.pending and "(1 vote)" in board.pending
    assert "no model has enough votes" in board.note

    _battle(service, lambda models: "tie")
    engine = sessions.kw["bind"]
    with engine.begin() as conn:  # the next computation fails
        conn.exec_driver_sql("ALTER TABLE models RENAME TO models_away")
    try:
        snapshots.refresh_once()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE models_away RENAME TO models")
    stale = page.show(ALL, False)
    assert snapshots.current("bt").stale and snapshots.current("bt").error
    assert "stale" in stale.updated and "(1 vote)" in stale.pending, "the last good snapshot, marked stale"
    shown = " ".join([stale.updated, stale.pending, stale.note])
    assert "models_away" not in shown and "Error" not in shown, "the error stays off the public page"
