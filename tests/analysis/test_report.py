"""The HTML report: self-contained file, tables as CSV, and (in headless Chromium) every figure rendered."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs

from analysis.ratings import ratings_table
from analysis.report import write_report

BOOTSTRAP = 40
EXTRA_TABLE = pd.DataFrame({"model": ["m-alpha", "m-bravo"], "style_rating": [1234.56, 1111.11]})
CSV_FILES = (
    "leaderboard_bt.csv",
    "leaderboard_elo.csv",
    "vote_counts.csv",
    "predicted_win_rate.csv",
    "observed_win_fraction.csv",
    "battle_counts.csv",
    "ratings_over_time.csv",
)
# BT + Elo ratings, extra figure, predicted + observed win rate, battle counts, rating over time
N_FIGURES = 7


@pytest.fixture(scope="module")
def battles(simulator, true_ratings) -> pd.DataFrame:
    """~2,000 simulated battles spread over about three weeks (one every 15 minutes)."""
    df = simulator(true_ratings, 2_000, np.random.default_rng(7))
    return df.assign(tstamp=1_700_000_000.0 + 900.0 * np.arange(len(df)))


@pytest.fixture(scope="module")
def report(battles: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra_fig = go.Figure(go.Bar(x=["m-alpha", "m-bravo"], y=[1, 2]))
    return write_report(
        battles,
        tmp_path_factory.mktemp("report") / "out",
        bootstrap=BOOTSTRAP,
        seed=3,
        title="Test <arena> report",
        extra_sections=[("Style-controlled leaderboard", EXTRA_TABLE), ("Extra figure", extra_fig)],
    )


@pytest.fixture(scope="module")
def page_html(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def test_report_files(report: Path) -> None:
    assert report.name == "index.html" and report.is_file()
    for name in (*CSV_FILES, "extra_style_controlled_leaderboard.csv"):
        assert (report.parent / name).is_file(), name
    history = pd.read_csv(report.parent / "ratings_over_time.csv", index_col=0)
    assert len(history) >= 20  # daily periods over ~21 days
    pd.testing.assert_frame_equal(
        pd.read_csv(report.parent / "extra_style_controlled_leaderboard.csv"), EXTRA_TABLE
    )


def test_tables_match_the_ratings_command(report: Path, battles: pd.DataFrame) -> None:
    """Same seed, same rounds: the report's BT table is what `analysis ratings` prints."""
    got = pd.read_csv(report.parent / "leaderboard_bt.csv")
    expected = ratings_table(battles, bootstrap=BOOTSTRAP, rng=np.random.default_rng(3))
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)
    elo = pd.read_csv(report.parent / "leaderboard_elo.csv")
    assert set(elo["model"]) == set(expected["model"])


def test_html_holds_tables_and_names(report: Path, page_html: str, true_ratings: dict[str, float]) -> None:
    assert "<title>Test &lt;arena&gt; report</title>" in page_html
    for model in true_ratings:
        assert model in page_html
    for name in ("leaderboard_bt.csv", "leaderboard_elo.csv"):
        table = pd.read_csv(report.parent / name)
        for row in table.itertuples():
            cells = [f"{row.rating:.1f}", f"{row.ci_lower:.1f}", f"{row.ci_upper:.1f}", str(row.num_battles)]
            for cell in cells:
                assert f">{cell}</td>" in page_html, (name, row.model, cell)
    assert ">1234.6</td>" in page_html  # extra table
    assert "2,000" in page_html  # battles in the summary
    assert "2023-11-14 22:13 UTC" in page_html  # first battle in the date range
    assert "Tie share" in page_html


def test_html_is_self_contained(page_html: str) -> None:
    assert page_html.count(get_plotlyjs()) == 1
    assert page_html.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", page_html, flags=re.IGNORECASE)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?:", page_html, flags=re.IGNORECASE)
    assert page_html.count('class="plotly-graph-div"') == N_FIGURES


def test_report_without_timestamps_and_progress(
    battles: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = battles.iloc[:300].drop(columns=["tstamp"])
    path = write_report(small, tmp_path, bootstrap=5, progress=True)
    html = path.read_text(encoding="utf-8")
    assert "Rating over time" not in html and "Date range" not in html
    assert not (tmp_path / "ratings_over_time.csv").exists()
    assert html.count('class="plotly-graph-div"') == N_FIGURES - 2
    assert "bootstrap" in capsys.readouterr().err  # tqdm bars reach stderr


def test_report_rejects_bad_input(battles: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="DataFrame or a plotly Figure"):
        write_report(battles.iloc[:50], tmp_path, bootstrap=0, extra_sections=[("x", "text")])
    with pytest.raises(ValueError, match="unknown winner"):
        write_report(battles.iloc[:50].assign(winner="draw"), tmp_path, bootstrap=0)
    assert not (tmp_path / "index.html").exists()


@pytest.mark.e2e
def test_report_renders_in_chromium(browser, report: Path) -> None:
    page = browser.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url} {req.failure}"))
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(report.resolve().as_uri(), wait_until="load")
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {2 * N_FIGURES}",
            timeout=30_000,
        )
        plots = page.locator(".js-plotly-plot")
        assert plots.count() == N_FIGURES
        for i in range(N_FIGURES):
            plot = plots.nth(i)
            assert plot.locator(".main-svg").count() >= 1, i
            assert plot.bounding_box()["height"] > 200, i
        # heatmap cells carry their numbers; the rating plot has one point per model
        assert page.locator(".js-plotly-plot .heatmaplayer").count() == 3
        assert page.locator(".js-plotly-plot .scatterlayer .point").count() >= 16
        assert page.locator("table.report").count() == 4
    finally:
        page.close()
    assert problems == []
    assert all(url.startswith("file://") for url in requests), requests
