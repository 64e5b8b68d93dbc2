"""One vote per battle, decided by the database; votes only on battles whose answers are complete."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from storage import repo
from storage.schema import Battle, Vote
from storage.sql import as_utc
from tests.helpers import vote_records

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _battle(sessions, battle_id: str = "b1", state: str = "ready") -> None:
    seeds = [repo.ModelSeed(n, n.upper(), "org", "scripted") for n in ("m1", "m2", "m3")]
    with sessions.begin() as db:
        ids = repo.sync_models(db, seeds, NOW)
        repo.ensure_voter_session(db, "s1", "pytest", NOW)
        repo.create_battle(
            db, battle_id=battle_id, model_a_id=ids["m1"], model_b_id=ids["m2"], session_id="s1", now=NOW
        )
        repo.add_turn(db, battle_id=battle_id, index=0, prompt="hi", image_hashes=[], now=NOW)
        repo.set_battle_state(db, battle_id, state, NOW)


def _count(sessions, table) -> int:
    with sessions() as db:
        return db.scalar(sa.select(sa.func.count()).select_from(table))


def test_vote_is_recorded_and_battle_marked_voted(sessions) -> None:
    _battle(sessions)
    with sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_b", session_id="s1", now=NOW)
    with sessions() as db:
        assert db.get(Battle, "b1").state == "voted"
        [record] = vote_records(db)
    assert record == {
        "question_id": "b1",
        "model_a": "m1",
        "model_b": "m2",
        "winner": "model_b",
        "judge": "s1",
        "turn": 1,
        "anony": True,
        "tstamp": NOW.timestamp(),
    }


def test_second_vote_is_refused(sessions) -> None:
    _battle(sessions)
    with sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="tie", session_id="s1", now=NOW)
    with pytest.raises(repo.VoteRejected, match="already been voted"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_a", session_id="s1", now=NOW)
    assert _count(sessions, Vote) == 1


def test_unique_constraint_refuses_a_duplicate_written_behind_the_repository(sessions) -> None:
    """Even a writer that skips every check (another replica, a script) cannot add a second vote."""
    _battle(sessions)
    with sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="tie", session_id="s1", now=NOW)
    with pytest.raises(IntegrityError), sessions.begin() as db:
        db.add(Vote(battle_id="b1", winner="model_a", session_id="s1", created_at=NOW))
    assert _count(sessions, Vote) == 1


def test_stale_state_check_is_backed_by_the_constraint(sessions) -> None:
    """A race where both writers saw 'ready': the second insert still fails, as VoteRejected."""
    _battle(sessions)
    with sessions.begin() as db:
        db.add(Vote(battle_id="b1", winner="tie", session_id="s1", created_at=NOW))  # battle still 'ready'
    with pytest.raises(repo.VoteRejected, match="already been voted"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_a", session_id="s1", now=NOW)
    assert _count(sessions, Vote) == 1


@pytest.mark.parametrize("state", ["generating", "invalid"])
def test_vote_refused_unless_ready(sessions, state: str) -> None:
    _battle(sessions, state=state)
    with pytest.raises(repo.VoteRejected, match=f"while it is {state}"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_a", session_id="s1", now=NOW)
    assert _count(sessions, Vote) == 0


def test_bad_votes_leave_the_database_unchanged(sessions) -> None:
    _battle(sessions)
    with pytest.raises(repo.VoteRejected, match="unknown winner"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_c", session_id="s1", now=NOW)
    with pytest.raises(repo.VoteRejected, match="unknown battle"), sessions.begin() as db:
        repo.record_vote(db, battle_id="nope", winner="tie", session_id="s1", now=NOW)
    assert _count(sessions, Vote) == 0
    with sessions() as db:
        assert db.get(Battle, "b1").state == "ready"


def test_database_refuses_bad_rows(sessions) -> None:
    _battle(sessions)
    with pytest.raises(IntegrityError), sessions.begin() as db:
        db.add(Vote(battle_id="b1", winner="model_c", created_at=NOW))
    with pytest.raises(IntegrityError), sessions.begin() as db:
        repo.create_battle(db, battle_id="b2", model_a_id=1, model_b_id=1, session_id=None, now=NOW)


def test_sync_models_keeps_operator_edits(sessions) -> None:
    with sessions.begin() as db:
        repo.sync_models(db, [repo.ModelSeed("m1", "M1", "org", "hf")], NOW)
        db.execute(sa.text("UPDATE models SET display_name = 'Edited' WHERE name = 'm1'"))
    with sessions.begin() as db:
        ids = repo.sync_models(
            db, [repo.ModelSeed("m1", "M1", "org", "hf"), repo.ModelSeed("m2", "M2", "", "hf")], NOW
        )
        assert set(ids) == {"m1", "m2"}
        assert [m.display_name for m in repo.list_models(db)] == ["Edited", "M2"]


def test_images_are_recorded_once(sessions, tmp_path) -> None:
    from PIL import Image

    from storage.images import ImageStore
    from storage.schema import Image as ImageRow
    from tests.helpers import image_bytes

    stored = ImageStore(tmp_path).put(image_bytes(Image.new("RGB", (5, 5), "red")))
    for _ in range(2):
        with sessions.begin() as db:
            repo.add_images(db, [stored, stored], NOW)
    assert _count(sessions, ImageRow) == 1


def test_retry_with_the_same_client_token_is_idempotent(sessions) -> None:
    _battle(sessions)
    with sessions.begin() as db:
        first = repo.record_vote(
            db,
            battle_id="b1",
            winner="model_a",
            session_id="s1",
            now=NOW,
            reason="sharper",
            client_token="t-1",
        )
        first_id = first.id
    later = NOW.replace(hour=9)
    with sessions.begin() as db:  # the acknowledgement was lost; the client sends the same vote again
        again = repo.record_vote(
            db,
            battle_id="b1",
            winner="model_a",
            session_id="s1",
            now=later,
            reason="sharper",
            client_token="t-1",
        )
        assert (again.id, again.winner, as_utc(again.created_at)) == (first_id, "model_a", NOW)
    with pytest.raises(repo.VoteRejected, match="different choice"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_b", session_id="s1", now=later, client_token="t-1")
    with pytest.raises(repo.VoteRejected, match="already been voted"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="model_a", session_id="s1", now=later, client_token="t-2")
    with sessions() as db:
        [vote] = db.scalars(sa.select(Vote)).all()
        assert (vote.winner, vote.reason, vote.client_token) == ("model_a", "sharper", "t-1")


def test_oversized_reason_and_token_are_refused(sessions) -> None:
    _battle(sessions)
    with pytest.raises(repo.VoteRejected, match="longer than 2000"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="tie", session_id="s1", now=NOW, reason="x" * 2001)
    with pytest.raises(repo.VoteRejected, match="client token"), sessions.begin() as db:
        repo.record_vote(db, battle_id="b1", winner="tie", session_id="s1", now=NOW, client_token="t" * 65)
    assert _count(sessions, Vote) == 0


def test_direct_chats_have_one_model_and_take_no_vote(sessions) -> None:
    _battle(sessions)
    with sessions.begin() as db:
        repo.create_battle(
            db, battle_id="d1", model_a_id=1, model_b_id=None, session_id="s1", now=NOW, mode="direct"
        )
        repo.set_battle_state(db, "d1", "ready", NOW)
    with pytest.raises(repo.VoteRejected, match="direct chat"), sessions.begin() as db:
        repo.record_vote(db, battle_id="d1", winner="model_a", session_id="s1", now=NOW)
    # The database itself refuses a direct chat with two models and a battle with one.
    with pytest.raises(IntegrityError), sessions.begin() as db:
        repo.create_battle(
            db, battle_id="d2", model_a_id=1, model_b_id=2, session_id=None, now=NOW, mode="direct"
        )
    with pytest.raises(IntegrityError), sessions.begin() as db:
        repo.create_battle(db, battle_id="d3", model_a_id=1, model_b_id=None, session_id=None, now=NOW)
    with sessions() as db:
        assert vote_records(db) == []


def test_ratings_leave_out_identity_leaks_and_flagged_voters(sessions) -> None:
    _battle(sessions, "b1")
    _battle(sessions, "b2")
    _battle(sessions, "b3")
    with sessions.begin() as db:
        repo.ensure_voter_session(db, "bad", "bot", NOW)
        for bid, voter in (("b1", "s1"), ("b2", "s1"), ("b3", "bad")):
            repo.record_vote(db, battle_id=bid, winner="model_a", session_id=voter, now=NOW)
        db.execute(sa.update(Battle).where(Battle.id == "b2").values(identity_leak=True))
        db.execute(sa.text("UPDATE voter_sessions SET banned = TRUE WHERE id = 'bad'"))
    with sessions() as db:
        assert [r["question_id"] for r in vote_records(db)] == ["b1"]
        assert {r["question_id"] for r in vote_records(db, include_flagged=True)} == {"b1", "b2", "b3"}
