"""The voters' position bias on the admin page: computed into each leaderboard snapshot from the stored
votes (SQLite and PostgreSQL), shown in the Leaderboards tab's status line."""

from __future__ import annotations

from analysis.voters import position_bias
from arena.snapshots import SnapshotService
from arena.ui.admin_leaderboards import status_text
from tests.arena.test_snapshots import Clock, Votes


def test_snapshot_payload_and_admin_status_show_position_bias(sessions) -> None:
    votes = Votes(sessions)
    votes.league()  # per pair: 8 votes for the left answer, 2 ties
    votes.add("alpha", "bravo", "model_b", count=4)
    votes.add("charlie", "delta", "model_a", count=3, mode="named")  # not in the anonymous views
    service = SnapshotService(sessions, refresh_s=60, now=Clock(), min_votes=10)
    assert service.refresh_once()

    bt = service.current("bt")
    assert bt is not None
    expected = position_bias(48, 4)  # 6 pairs x 8 left wins; 4 right wins
    assert bt.payload["position_bias"] == expected.as_dict()
    assert bt.payload["position_bias"]["share"] == 48 / 52
    text = status_text(bt)
    assert "Position bias: 92.3% of 52 decisive votes went to the left answer (A)" in text
    lower, upper = expected.ci_lower, expected.ci_upper
    assert lower is not None and upper is not None
    assert f"95% CI {lower:.1%} to {upper:.1%}" in text

    every_vote = service.current("bt-all")  # anonymous and named votes: the named ones count too
    assert every_vote is not None and every_vote.payload["position_bias"] == position_bias(51, 4).as_dict()
