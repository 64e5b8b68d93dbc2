"""The leaderboard the arena shows is computed from the votes stored by real battles."""

from __future__ import annotations

import asyncio

from arena.leaderboard import COLUMNS, LeaderboardService


def _battle(service, winner_of):  # type: ignore[no-untyped-def]
    """Play one battle; ``winner_of(models)`` picks the FastChat winner from the hidden sides."""
    state = service.new_session()
    service.start_turn(state, "Which is better?", [])

    async def drain() -> None:
        async for _ in service.stream(state):
            pass

    asyncio.run(drain())
    service.vote(state, winner_of(state.models))


def test_leaderboard_ranks_models_by_stored_votes(make_service, sessions) -> None:  # type: ignore[no-untyped-def]
    board = LeaderboardService(sessions, bootstrap=50)
    empty = board.current()
    assert empty.table.empty and "No votes yet" in empty.note

    service = make_service(seed=4)

    def alpha_wins(models):  # type: ignore[no-untyped-def]
        if "alpha" in models.values():
            return "model_a" if models["a"] == "alpha" else "model_b"
        return "tie"

    for _ in range(30):
        _battle(service, alpha_wins)
    result = board.current()
    assert list(result.table.columns) == COLUMNS
    assert list(result.table["Model"])[0] == "Alpha Display"  # display names, not ids
    assert result.table["Votes"].sum() == 2 * 30
    assert result.table["Rank (UB)"].iloc[0] == 1
    assert "30 votes" in result.note and "Preliminary" in result.note
