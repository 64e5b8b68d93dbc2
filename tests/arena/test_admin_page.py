"""What the admin page's tabs show, from real snapshot payloads and admin records (no browser)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from arena.admin import AdminService
from arena.snapshots import Snapshot
from arena.ui.admin import build_admin_app, export_links
from arena.ui.admin_leaderboards import figures, pair_matrices, status_text, table_frame
from arena.ui.admin_models import models_frame

WHEN = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PAYLOAD = {
    "rows": [
        {"model": "alpha", "display_name": "Alpha", "rating": 1012.4, "ci_lower": 1003.1, "ci_upper": 1024.0,
         "rank_ub": 1, "num_battles": 40, "organization": "Org", "license": "MIT", "link": "", "deprecated": True},
        {"model": "bravo", "display_name": "Bravo", "rating": 987.6, "ci_lower": 975.0, "ci_upper": 996.9,
         "rank_ub": 2, "num_battles": 40, "organization": "", "license": "", "link": "", "deprecated": False},
    ],
    "not_enough_votes": [{"model": "charlie", "display_name": "Charlie", "votes": 3}],
    "total_votes": 43,
    "method": "bt",
    "ci": "sandwich",
    "min_votes": 30,
    "pair_counts": {"models": ["alpha", "bravo", "charlie"], "battles": [[0, 40, 2], [40, 0, 1], [2, 1, 0]],
                    "wins": [[0, 25.5, 2], [14.5, 0, 0.5], [0, 0.5, 0]]},
    "votes_per_day": [{"day": "2025-05-30", "votes": 20}, {"day": "2025-05-31", "votes": 23}],
    "extras": {},
}  # fmt: skip


def snapshot(*, stale: bool = False, error: str | None = None) -> Snapshot:
    return Snapshot(
        view="bt",
        title="Bradley–Terry (anonymous votes)",
        computed_at=WHEN,
        duration_s=1.234,
        data_version="v1",
        stale=stale,
        error=error,
        payload=PAYLOAD,
        computed_by="host:1",
    )


def test_status_says_when_how_long_and_whether_stale() -> None:
    fresh = status_text(snapshot())
    assert "Computed at 2025-06-01 12:00:00 UTC (took 1.23 s, by host:1)" in fresh
    assert "43 votes" in fresh and "Stale" not in fresh
    stale = status_text(snapshot(stale=True, error="OperationalError: database is locked"))
    assert "Stale" in stale and "OperationalError: database is locked" in stale
    assert "Not computed yet" in status_text(None)


def test_table_and_figures_come_from_the_payload() -> None:
    table = table_frame(snapshot())
    assert table["Model"].tolist() == ["alpha", "bravo"]
    assert table["95% CI"].tolist() == ["+12 / \u22129", "+9 / \u221213"]
    assert table["Deprecated"].tolist() == ["yes", ""]
    battles, rate = pair_matrices(PAYLOAD["pair_counts"])
    assert battles.loc["alpha", "bravo"] == 40
    assert rate.loc["alpha", "bravo"] == pytest.approx(25.5 / 40)
    assert rate.loc["bravo", "alpha"] == pytest.approx(14.5 / 40)
    assert math.isnan(rate.loc["alpha", "alpha"])
    ratings, win_rate, counts, per_day = figures(snapshot())
    assert list(ratings.data[0].x) == ["alpha", "bravo"]
    assert np.allclose(np.array(win_rate.data[0].z, dtype=float)[0, 1], 25.5 / 40)
    assert list(per_day.data[0].x) == ["2025-05-30", "2025-05-31"] and list(per_day.data[0].y) == [20, 23]
    empty = figures(None)
    assert all("no data yet" in fig.layout.title.text for fig in empty)
    assert counts.layout.title.text == "Battles per model pair"


def test_models_table_and_export_links(sessions) -> None:
    from storage import repo

    with sessions.begin() as db:
        repo.sync_models(db, [repo.ModelSeed("alpha", "Alpha", "", "scripted")], WHEN)
    admin = AdminService(sessions)
    admin.set_model("admin:test", "alpha", weight=0)
    frame = models_frame(admin.models_overview())
    assert frame.iloc[0][["Model", "Enabled", "Weight", "Drawn", "Health"]].tolist() == [
        "alpha",
        "yes",
        0.0,
        "no",
        "unknown",
    ]
    links = export_links()
    for fmt in ("fastchat", "jsonl", "parquet"):
        assert f'href="export?format={fmt}"' in links


def test_the_admin_app_builds_without_reading_data(sessions) -> None:
    from arena.snapshots import SnapshotService

    class Services:  # the two services the page uses
        admin = AdminService(sessions)
        snapshots = SnapshotService(sessions)

    app = build_admin_app(Services())  # type: ignore[arg-type]
    ids = {block.elem_id for block in app.blocks.values() if getattr(block, "elem_id", None)}
    for elem in (
        "admin-lb-view",
        "admin-lb-recompute",
        "admin-models-table",
        "admin-model-apply",
        "admin-battle-id",
        "admin-voter-ban",
        "admin-judges-table",
        "admin-export-links",
    ):
        assert elem in ids
    assert all(i.startswith("admin-") for i in ids)
