"""Leaderboards from pair counts: the same answers as from the battles, from a file or a database."""

from __future__ import annotations

import json
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.cli import main
from analysis.io import battles_frame, load_battles_db, load_battles_file, load_pair_counts_db
from analysis.pairs import aggregated_from_counts, leaderboard_from_counts
from analysis.ratings import Aggregated, aggregate, ratings_table, validate_battles
from analysis.ties import tie_ratings_table
from storage import repo
from storage.schema import Battle, BattleTag, Vote, VoterSession
from tests.helpers import vote_records

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _same(a: Aggregated, b: Aggregated) -> None:
    assert a.models == b.models
    for x, y in zip(astuple(a)[1:], astuple(b)[1:], strict=True):
        np.testing.assert_array_equal(x, y)


def _count_rows(df: pd.DataFrame) -> list[tuple[str, str, str, int]]:
    """The battles as (model_a, model_b, winner, count) rows, as the database groups them."""
    grouped = df.groupby(["model_a", "model_b", "winner"], observed=True).size()
    return [(str(a), str(b), str(w), int(n)) for (a, b, w), n in grouped.items()]


def test_counts_aggregate_like_the_battles(sim_battles: pd.DataFrame) -> None:
    rows = _count_rows(sim_battles)
    assert {w for _, _, w, _ in rows} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    expected = aggregate(validate_battles(sim_battles))
    _same(aggregated_from_counts(rows), expected)
    # repeated (pair, winner) rows add up, zero counts are ignored, the row order does not matter
    split = [(a, b, w, n - n // 2) for a, b, w, n in rows] + [(a, b, w, n // 2) for a, b, w, n in rows[::-1]]
    _same(aggregated_from_counts([*split, ("m-alpha", "ghost", "tie", 0)]), expected)
    empty = aggregated_from_counts([])
    assert empty.models == [] and empty.n_battles == 0


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("a", "b", "A>>B", 1), "unknown winner"),
        (("a", "a", "tie", 2), "cannot battle itself"),
        (("a", "b", "tie", -1), "negative"),
    ],
)
def test_bad_count_rows_are_refused(row: tuple[str, str, str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregated_from_counts([("a", "b", "model_a", 3), row])


def test_leaderboard_matches_the_battle_functions(sim_battles: pd.DataFrame) -> None:
    agg = aggregated_from_counts(_count_rows(sim_battles))
    table, extras = leaderboard_from_counts(agg, ci="bootstrap", bootstrap=60, rng=np.random.default_rng(5))
    expected = ratings_table(sim_battles, bootstrap=60, rng=np.random.default_rng(5))
    pd.testing.assert_frame_equal(table, expected)
    assert extras == {"method": "bt", "ci": "bootstrap", "total_battles": len(sim_battles)}
    for model in ("davidson", "rao-kupper"):
        table, extras = leaderboard_from_counts(
            agg,
            method=model,
            ci="bootstrap",
            bootstrap=8,
            rng=np.random.default_rng(3),
            anchor=("m-echo", 990.0),
        )
        frame, info = tie_ratings_table(
            sim_battles, model=model, bootstrap=8, rng=np.random.default_rng(3), anchor=("m-echo", 990.0)
        )
        pd.testing.assert_frame_equal(table, frame)
        assert {k: extras[k] for k in info} == info


def test_interval_kinds(sim_battles: pd.DataFrame, true_ratings: dict[str, float]) -> None:
    agg = aggregated_from_counts(_count_rows(sim_battles))
    plain, _ = leaderboard_from_counts(agg, ci="none")
    assert (plain["ci_lower"] == plain["rating"]).all() and (plain["ci_upper"] == plain["rating"]).all()
    assert list(plain["rank_ub"]) == list(range(1, len(plain) + 1))
    sandwich, extras = leaderboard_from_counts(agg)  # sandwich is the default
    assert extras["ci"] == "sandwich"
    assert list(sandwich.columns) == ["model", "rating", "ci_lower", "ci_upper", "rank_ub", "num_battles"]
    assert np.allclose(sandwich["rating"], plain["rating"])
    assert (sandwich["ci_lower"] < sandwich["rating"]).all() and (
        sandwich["rating"] < sandwich["ci_upper"]
    ).all()
    assert list(sandwich["model"]) == sorted(true_ratings, key=true_ratings.__getitem__, reverse=True)
    assert sandwich["num_battles"].sum() == 2 * len(sim_battles)
    table, extras = leaderboard_from_counts(agg, method="rao-kupper")
    assert extras["tie_param_ci_lower"] < extras["tie_param"] < extras["tie_param_ci_upper"]
    assert (table["ci_lower"] < table["rating"]).all()


def test_leaderboard_errors(sim_battles: pd.DataFrame) -> None:
    agg = aggregated_from_counts(_count_rows(sim_battles))
    with pytest.raises(ValueError, match="unknown rating method"):
        leaderboard_from_counts(agg, method="elo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown interval method"):
        leaderboard_from_counts(agg, ci="jackknife")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Generator"):
        leaderboard_from_counts(agg, ci="bootstrap", bootstrap=5)
    with pytest.raises(ValueError, match="unknown anchor"):
        leaderboard_from_counts(agg, anchor=("nobody", 1000.0))
    with pytest.raises(ValueError, match="no battles"):
        leaderboard_from_counts(aggregated_from_counts([]))


# --------------------------------------------------------------------------------------------------
# From the database: counts aggregated in SQL, votes read column-wise, and the CLI
# --------------------------------------------------------------------------------------------------


def _fill(sessions) -> None:
    """80 battles among four models, with voters, tags, named, leaked, invalid and excluded ones."""
    rng = np.random.default_rng(9)
    names = ["alpha", "bravo", "charlie", "delta"]
    seeds = [repo.ModelSeed(n, n.title(), "", "scripted") for n in names]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, T0)
        for voter in ("good", "bot"):
            repo.ensure_voter_session(db, voter, "pytest", T0)
        for i in range(80):
            a, b = rng.choice(4, 2, replace=False)
            bid, now = f"b{i:02d}", T0 + timedelta(minutes=7 * i)
            voter = ["good", "bot", None][i % 3]
            repo.create_battle(
                db,
                battle_id=bid,
                model_a_id=ids[names[a]],
                model_b_id=ids[names[b]],
                session_id=voter,
                now=now,
                mode="named" if i % 11 == 0 else "anony",
            )
            for turn in range(1 + i % 2):
                repo.add_turn(db, battle_id=bid, index=turn, prompt="?", image_hashes=[], now=now)
            repo.set_battle_state(db, bid, "ready", now)
            winner = str(rng.choice(["model_a", "model_b", "tie", "tie (bothbad)"], p=[0.45, 0.3, 0.15, 0.1]))
            repo.record_vote(db, battle_id=bid, winner=winner, session_id=voter, now=now)
            if i % 4 == 0:
                db.add(BattleTag(battle_id=bid, tag="ocr"))
        db.execute(sa.update(VoterSession).where(VoterSession.id == "bot").values(banned=True))
        db.execute(sa.update(Battle).where(Battle.id == "b05").values(identity_leak=True))
        db.execute(sa.update(Battle).where(Battle.id == "b07").values(state="invalid", invalid_reason="x"))
        db.execute(sa.update(Battle).where(Battle.id.in_(["b08", "b10"])).values(excluded=True))
        db.execute(sa.update(Vote).where(Vote.battle_id == "b12").values(judge="imported-judge"))


FILTERS = [
    {},
    {"include_flagged": True},
    {"anony_only": False, "include_flagged": True},
    {"category": "ocr"},
    {"since": "2026-03-01T02:00:00", "until": T0 + timedelta(hours=6)},
]


def test_database_counts_and_columns_match_the_records(db_url: str, sessions) -> None:
    _fill(sessions)
    for flt in FILTERS:
        frame = load_battles_db(db_url, **flt)  # type: ignore[arg-type]
        bounds = {k: datetime.fromisoformat(v) if k == "since" else v for k, v in flt.items()}
        with sessions() as db:
            records = vote_records(db, **{"anony_only": True, **bounds}, include_invalid=False)
        pd.testing.assert_frame_equal(frame, battles_frame(records))
        assert not {"b05", "b07", "b08", "b10"} & set(frame["question_id"])
        _same(load_pair_counts_db(db_url, **flt), aggregate(validate_battles(frame)))  # type: ignore[arg-type]
    frame = load_battles_db(db_url, answers=True, categories=True)
    assert set(frame["category"]) == {"ocr", "untagged"} and (frame["answer_a"] == "").all()
    assert "imported-judge" in set(frame["judge"]) and "arena_user" in set(frame["judge"])
    assert set(frame["turn"]) == {1, 2}


def test_ratings_cli_gives_the_same_board_from_the_database_and_a_file(
    db_url: str, sessions, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(sessions)
    with sessions() as db:
        records = vote_records(db, include_flagged=True, include_invalid=False)
    path = tmp_path / "battles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for extra in (
        ["--bootstrap", "40", "--seed", "3"],
        ["--ci", "sandwich", "--anchor", "bravo=1100"],
        ["--method", "davidson", "--ci", "sandwich"],
        ["--method", "rao-kupper", "--bootstrap", "5"],
        ["--method", "elo", "--bootstrap", "10"],
    ):
        outputs = []
        for source in (["--db", db_url, "--include-flagged"], ["--battles", str(path)]):
            assert main(["ratings", *source, *extra, "--format", "json"]) == 0, extra
            outputs.append(capsys.readouterr().out)
        assert outputs[0] == outputs[1], extra
        rows = json.loads(outputs[0])
        assert {r["model"] for r in rows} == {"alpha", "bravo", "charlie", "delta"}
    assert main(["ratings", "--db", db_url, "--category", "none-such", "--ci", "sandwich"]) == 2
    assert "no battles" in capsys.readouterr().err


def test_reading_only_some_fields_of_a_file(sim_battles: pd.DataFrame, tmp_path: Path) -> None:
    df = sim_battles.assign(category=np.where(np.arange(len(sim_battles)) % 3 == 0, "ocr", "chart"))
    path = tmp_path / "battles.jsonl"
    df.to_json(path, orient="records", lines=True)
    full = load_battles_file(path)
    some = load_battles_file(path, fields=["anony", "tstamp", "category"])
    for column in ("model_a", "model_b", "winner", "anony", "tstamp", "category"):
        pd.testing.assert_series_equal(some[column], full[column])
    assert some["question_id"].isna().all() and some["judge"].isna().all()  # not read: defaults
    _same(aggregate(validate_battles(some)), aggregate(validate_battles(full)))
    # a field no record has stays absent; values of another type make it read the file in full
    plain = tmp_path / "plain.jsonl"
    df.drop(columns=["category"]).assign(anony="yes").to_json(plain, orient="records", lines=True)
    read = load_battles_file(plain, fields=["anony", "category"])
    assert "category" not in read.columns and read["anony"].all() and read["question_id"].notna().all()
    with pytest.raises(ValueError, match="not projectable"):
        load_battles_file(path, fields=["conversation_a"])
