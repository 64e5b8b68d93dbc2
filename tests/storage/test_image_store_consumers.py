"""Everything that touches pictures goes through the shared store, here fsspec's ``memory://``
filesystem (real fsspec): the arena's uploads, ``forget``, the judge's loader and the export, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from analysis.io import image_loader
from analysis.judge import JudgeRunner
from arena.service import BattleService
from models.base import GenerationParams, ImagePart, Message, ModelBackend, StreamItem
from models.registry import BackendContext, create_backend
from models.wrapper import ManagedBackend
from storage.__main__ import main as storage_main
from storage.images import ImageStore
from storage.maintenance import forget_session
from tests.arena.conftest import scripted
from tests.helpers import image_bytes

RED = image_bytes(Image.new("RGB", (10, 6), "red"))
BLUE = image_bytes(Image.new("RGB", (7, 9), "blue"))


@pytest.fixture
def store_url() -> Iterator[str]:
    """A fresh prefix of the memory filesystem, as an operator would set ARENA_IMAGE_STORE."""
    url = f"memory://arena-test-{secrets.token_hex(6)}/images"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _objects(url: str) -> set[str]:
    """The names of the files under the store's prefix, read with fsspec alone."""
    fs, root = fsspec.core.url_to_fs(url)
    return {Path(p).name for p in fs.find(root)} if fs.exists(root) else set()


def _service(sessions, store_url: str, tmp_path: Path) -> BattleService:
    specs = [scripted("alpha", reply="short"), scripted("bravo", reply="a longer answer")]
    context = BackendContext(cache_dir=tmp_path / "cache")
    return BattleService(
        specs=specs,
        backends={s.name: create_backend(s, context) for s in specs},
        sessions=sessions,
        images=ImageStore(store_url),
        rng=random.Random(0),
    )


def _battle(service: BattleService, uploads: list[bytes]) -> str:
    """One voted battle whose turn carries ``uploads``; returns the voter session id."""
    state = service.new_session()
    service.start_turn(state, "What is in the picture?", uploads)

    async def drain() -> None:
        async for _ in service.stream(state):
            pass

    asyncio.run(drain())
    service.vote(state, "model_b")
    return state.session_id


def test_uploads_land_in_the_store_once_and_forget_removes_only_orphans(
    sessions, store_url: str, tmp_path: Path
) -> None:
    service = _service(sessions, store_url, tmp_path)
    leaving = _battle(service, [RED, BLUE])
    _battle(service, [BLUE])  # another voter uploads the same blue picture
    store = ImageStore(store_url)
    red, blue = (store.prepare(data).sha256 for data in (RED, BLUE))
    assert _objects(store_url) == {f"{red}.png", f"{blue}.png"}  # stored once each

    report = forget_session(sessions, leaving, store)
    assert (report.battles, report.votes, report.images, report.image_files) == (1, 1, 1, 1)
    assert _objects(store_url) == {f"{blue}.png"}
    assert store.read(red) is None and store.read(blue) is not None


class PictureCountingJudge(ModelBackend):
    """Says A wins, and records the size of every picture it is shown."""

    name = "picture-judge"

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamItem]:
        for message in messages:
            for part in message.parts:
                if isinstance(part, ImagePart):
                    self.sizes.append(part.image.size)
        yield "[[A]]"


def test_the_judge_reads_pictures_through_the_store(sessions, store_url: str, tmp_path: Path) -> None:
    service = _service(sessions, store_url, tmp_path)
    _battle(service, [RED, BLUE])
    load = image_loader(store_url)
    assert load("0" * 64) is None
    judge = PictureCountingJudge()
    runner = JudgeRunner(
        sessions,
        ManagedBackend(judge),
        judge_name=judge.name,
        params=GenerationParams(max_new_tokens=8, temperature=0.0),
        max_images=4,
        load_image=load,
    )
    summary = asyncio.run(runner.run(runner.pending()))
    assert summary.calls == 2 and summary.errors == 0
    assert sorted(judge.sizes) == sorted([(10, 6), (7, 9)] * 2)  # both pictures, in both orders


def test_export_copies_the_battles_images_out_of_the_store(
    db_url: str, sessions, store_url: str, tmp_path: Path
) -> None:
    service = _service(sessions, store_url, tmp_path)
    _battle(service, [RED])
    _battle(service, [BLUE, RED])
    out, images_out = tmp_path / "battles.jsonl", tmp_path / "exported-images"
    args = ["export", "--db", db_url, "--format", "jsonl", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert storage_main([*args, "--images", store_url, "--images-out", str(images_out)]) == 0
    assert "exported 2 battles" in printed.getvalue() and "copied 2 images" in printed.getvalue()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    hashes = {sha for record in records for turn in record["images"] for sha in turn}
    store = ImageStore(store_url)
    assert {p.name for p in images_out.iterdir()} == {f"{sha}.png" for sha in hashes} and len(hashes) == 2
    assert all((images_out / f"{sha}.png").read_bytes() == store.read(sha) for sha in hashes)

    store.remove(next(iter(hashes)))  # a picture lost from the store is reported, not invented
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert storage_main([*args, "--images", store_url, "--images-out", str(tmp_path / "again")]) == 0
    assert "copied 1 images" in printed.getvalue() and "1 missing from the store" in printed.getvalue()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert storage_main([*args, "--images", store_url]) == 2
    assert "--images and --images-out go together" in err.getvalue()
