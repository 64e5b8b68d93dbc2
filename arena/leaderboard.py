"""The leaderboard service: Bradley–Terry ratings with bootstrap intervals from the stored votes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from analysis.ratings import ratings_table
from storage import repo

#: Below this many votes for some model, the leaderboard says its ratings are preliminary.
PRELIMINARY_VOTES = 50
COLUMNS = ["Rank (UB)", "Model", "Arena rating", "95% CI", "Votes", "Organization"]


@dataclass(frozen=True)
class Leaderboard:
    table: pd.DataFrame
    note: str


class LeaderboardService:
    """Computes the public leaderboard from anonymous battles' votes on request."""

    def __init__(self, sessions: sessionmaker[Session], *, bootstrap: int = 200, seed: int = 0) -> None:
        self.sessions = sessions
        self.bootstrap = bootstrap
        self.seed = seed

    def current(self) -> Leaderboard:
        with self.sessions() as db:
            records = repo.vote_records(db, anony_only=True)
            models = {m.name: m for m in repo.list_models(db)}
        if not records:
            return Leaderboard(pd.DataFrame(columns=COLUMNS), "No votes yet: play a battle and vote.")
        try:
            ratings = ratings_table(
                pd.DataFrame.from_records(records),
                method="bt",
                bootstrap=self.bootstrap,
                rng=np.random.default_rng(self.seed),
            )
        except ValueError as exc:
            return Leaderboard(pd.DataFrame(columns=COLUMNS), f"Ratings are not available yet: {exc}")
        rows = []
        for row in ratings.itertuples(index=False):
            info = models.get(row.model)
            rows.append(
                {
                    "Rank (UB)": int(row.rank_ub),
                    "Model": info.display_name if info else row.model,
                    "Arena rating": round(float(row.rating)),
                    "95% CI": f"+{row.ci_upper - row.rating:.0f} / -{row.rating - row.ci_lower:.0f}",
                    "Votes": int(row.num_battles),
                    "Organization": info.organization if info else "",
                }
            )
        votes = f"{len(records)} vote{'s' if len(records) != 1 else ''}"
        note = (
            f"{votes} from anonymous battles. Bradley–Terry ratings (mean 1000), 95% intervals from "
            f"{self.bootstrap} bootstrap rounds; rank (UB) = 1 + the number of models statistically "
            "better."
        )
        if int(ratings["num_battles"].min()) < PRELIMINARY_VOTES:
            note += (
                f" Preliminary: some models have fewer than {PRELIMINARY_VOTES} votes, so their "
                "ratings can still move a lot."
            )
        return Leaderboard(pd.DataFrame(rows, columns=COLUMNS), note)
