"""Duplicate prompts over a real database (SQLite and PostgreSQL) and image store: pHashes computed
once and stored, ``ratings --dedup`` capping a prompt pasted 50 times, ``python -m analysis duplicates``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.dedup import hamming
from analysis.io import load_battles_db, load_first_turns_db
from analysis.ratings import ratings_table
from storage import repo
from storage.images import ImageStore
from storage.schema import Image
from tests.analysis.test_dedup import picture, reencoded
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PAIRS = [("alpha", "bravo"), ("bravo", "charlie"), ("charlie", "alpha")]
SPAM = 50  # one prompt pasted 50 times, every vote for alpha
SPELLINGS = ("What is in this picture?", "what is in this picture", "  WHAT is in this   picture?!")


def fill(sessions, store: ImageStore) -> tuple[list[tuple[str, str, str, str]], str, str]:
    """30 battles with their own prompts (outcomes balanced), then 50 of one pasted prompt with the
    same picture (the last 10 with a re-encoded, half-size copy), all won by alpha. Returns the
    battles as (id, model_a, model_b, winner) in vote order and the two pictures' hashes."""
    original = store.put(image_bytes(picture(1)))
    copy = store.put(reencoded(picture(1)))
    unique = store.put(image_bytes(picture(2)))
    battles: list[tuple[str, str, str, str, str, list[str]]] = []
    for i in range(30):
        a, b = PAIRS[i % 3]
        winner = ("model_a", "model_b", "tie")[(i // 3) % 3]
        battles.append((f"u{i:02d}", a, b, winner, f"Question number {i}", [unique.sha256] if i == 0 else []))
    for i in range(SPAM):
        a, b, winner = ("alpha", "bravo", "model_a") if i % 2 == 0 else ("bravo", "alpha", "model_b")
        image = copy.sha256 if i >= 40 else original.sha256
        battles.append((f"s{i:02d}", a, b, winner, SPELLINGS[i % 3], [image]))
    with sessions.begin() as db:
        ids = repo.sync_models(
            db, [repo.ModelSeed(n, n, "", "scripted") for n in ("alpha", "bravo", "charlie")], T0
        )
        repo.add_images(db, [original, copy, unique], T0)
        for n, (bid, a, b, winner, prompt, images) in enumerate(battles):
            now = T0 + timedelta(minutes=n)
            repo.create_battle(
                db, battle_id=bid, model_a_id=ids[a], model_b_id=ids[b], session_id=None, now=now
            )
            repo.add_turn(db, battle_id=bid, index=0, prompt=prompt, image_hashes=images, now=now)
            repo.set_battle_state(db, bid, "ready", now)
            repo.record_vote(db, battle_id=bid, winner=winner, session_id=None, now=now)
    return [(bid, a, b, w) for bid, a, b, w, _, _ in battles], original.sha256, copy.sha256


@pytest.fixture
def arena(db_url: str, sessions, tmp_path: Path):
    store = ImageStore(tmp_path / "images")
    battles, original, copy = fill(sessions, store)
    return db_url, sessions, tmp_path / "images", battles, original, copy


def analysis_cli(*args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "analysis", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    return run


def test_phashes_are_computed_once_and_stored(arena) -> None:
    url, sessions, images, battles, original, copy = arena
    with sessions() as db:
        assert db.scalars(sa.select(Image.phash)).all() == [None, None, None]
    turns = load_first_turns_db(url, images=images)
    assert [t.battle_id for t in turns] == [b[0] for b in battles]  # vote order
    with sessions() as db:
        stored = {sha: phash for sha, phash in db.execute(sa.select(Image.sha256, Image.phash))}
    assert all(p is not None and len(p) == 16 for p in stored.values())
    assert 0 < hamming(stored[original], stored[copy]) <= 6
    assert turns[30].images == ((original, stored[original]),)
    assert turns[-1].images == ((copy, stored[copy]),)
    # the pictures are not read again: with the store emptied the stored hashes still serve
    for path in images.rglob("*.*"):
        path.unlink()
    again = load_first_turns_db(url, images=images)
    assert again[-1].images == ((copy, stored[copy]),)


def expected_ratings(battles: list[tuple[str, str, str, str]], drop: set[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{"model_a": a, "model_b": b, "winner": w} for bid, a, b, w in battles if bid not in drop]
    )
    return ratings_table(frame, method="bt", bootstrap=0, rng=np.random.default_rng(0)).set_index("model")


def test_ratings_dedup_caps_the_pasted_prompt(arena) -> None:
    url, _, images, battles, _, _ = arena
    common = ["ratings", "--db", url, "--format", "json", "--bootstrap", "0", "--images", str(images)]

    plain = {r["model"]: r for r in json.loads(analysis_cli(*common).stdout)}
    assert plain["alpha"]["num_battles"] == 20 + SPAM

    capped_run = analysis_cli(*common, "--dedup", "--dedup-cap", "3")
    capped = {r["model"]: r for r in json.loads(capped_run.stdout)}
    assert "1 groups capped, 47 battles left out" in capped_run.stderr
    expected = expected_ratings(battles, {f"s{i:02d}" for i in range(3, SPAM)})  # the earliest 3 kept
    assert capped["alpha"]["num_battles"] == 20 + 3
    for model, row in capped.items():
        assert row["num_battles"] == expected.loc[model, "num_battles"]
        assert row["rating"] == pytest.approx(expected.loc[model, "rating"], abs=0.01)
    assert capped["alpha"]["rating"] < plain["alpha"]["rating"] - 100

    # default cap: the 99.99th percentile of 31 group sizes (30 singletons and 50) = 49.85 -> 49
    default = analysis_cli(*common, "--dedup")
    assert (
        "at most 49 battles per duplicate group" in default.stderr and "1 battles left out" in default.stderr
    )
    assert {r["model"]: r for r in json.loads(default.stdout)}["alpha"]["num_battles"] == 20 + 49

    # exact pHashes only: the 10 re-encoded copies form their own group, capped apart
    exact = analysis_cli(*common, "--dedup", "--dedup-cap", "3", "--dedup-distance", "0")
    assert "2 groups capped, 44 battles left out" in exact.stderr

    # the per-vote path (online Elo) honours the same exclusions
    elo = analysis_cli(*common, "--dedup", "--dedup-cap", "3", "--method", "elo")
    assert {r["model"]: r for r in json.loads(elo.stdout)}["alpha"]["num_battles"] == 23


def test_loader_exclusions_reach_every_reader(arena) -> None:
    url, *_ = arena
    drop = frozenset({"s01", "s02", "u00"})
    kept = load_battles_db(url, exclude_battles=drop)
    assert len(kept) == 80 - 3 and not drop & set(kept["question_id"])


def test_duplicates_command(arena) -> None:
    url, _, images, _, original, _ = arena
    run = analysis_cli("duplicates", "--db", url, "--images", str(images), "--format", "json")
    groups = json.loads(run.stdout)
    assert len(groups) == 1
    top = groups[0]
    assert top["size"] == SPAM and top["prompt"] == "what is in this picture"
    assert top["battle_ids"][:2] == ["s00", "s01"] and len(top["battle_ids"]) == SPAM
    assert top["outcomes"] == {"model_a": 25, "model_b": 25}
    assert top["models"] == {"alpha": 50, "bravo": 50}
    assert len(top["images"]) == 1 and len(top["images"][0]) == 16
    split = json.loads(
        analysis_cli("duplicates", "--db", url, "--format", "json", "--dedup-distance", "0").stdout
    )
    assert [g["size"] for g in split] == [40, 10]
    table = analysis_cli("duplicates", "--db", url, "--top", "1").stdout
    assert "what is in this picture" in table and "25/25/0/0" in table and "alpha×50" in table


def test_ratings_dedup_on_a_battle_file(tmp_path: Path) -> None:
    """A file carries no pictures: the first user message and the image hashes must match."""
    records = []
    for i in range(12):
        prompt = ("Same question?", "same  QUESTION")[i % 2] if i < 8 else f"question {i}"
        records.append(
            {
                "question_id": f"x{i}",
                "model_a": "a",
                "model_b": "b",
                "winner": "model_a" if i < 8 else "model_b",
                "tstamp": 1_700_000_000 + (100 - i),  # the file lists the newest first
                "conversation_a": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": "A"},
                ],
                "conversation_b": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": "B"},
                ],
            }
        )
    path = tmp_path / "battles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = analysis_cli("ratings", "--battles", str(path), "--dedup", "--dedup-cap", "2", "--bootstrap", "0",
                       "--format", "json")  # fmt: skip
    assert "1 groups capped, 6 battles left out" in run.stderr
    rows = {r["model"]: r for r in json.loads(run.stdout)}
    assert rows["a"]["num_battles"] == 2 + 4
    # 2 kept of the pasted 8 (all won by a), 4 won by b: b leads
    assert rows["b"]["rating"] > rows["a"]["rating"]
    listing = json.loads(analysis_cli("duplicates", "--battles", str(path), "--format", "json").stdout)
    assert [(g["size"], g["prompt"], g["battle_ids"][:2]) for g in listing] == [
        (8, "same question", ["x7", "x6"])
    ]
