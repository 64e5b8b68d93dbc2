"""The image store's backends: a local directory, a ``file://`` URL and an fsspec filesystem
(``memory://``, real fsspec) keep, dedupe, read and remove pictures the same way."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from PIL import Image

from storage.image_store import FsspecBackend, LocalBackend
from storage.images import ImageStore, suffix_of
from tests.helpers import image_bytes


@pytest.fixture(params=["directory", "file-url", "memory"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """Where a store lives: a directory Path, a file:// URL, or a fresh prefix of fsspec's memory
    filesystem (removed afterwards; that filesystem is shared by the whole process)."""
    if request.param == "directory":
        yield tmp_path / "images"
    elif request.param == "file-url":
        yield f"file://{tmp_path / 'images'}"
    else:
        url = f"memory://arena-test-{secrets.token_hex(6)}/images"
        yield url
        fs, root = fsspec.core.url_to_fs(url)
        if fs.exists(root):
            fs.rm(root, recursive=True)


def _jpeg(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_write_dedupes_by_hash_reads_back_and_discards(location: Path | str) -> None:
    store = ImageStore(location)
    prepared = store.prepare(image_bytes(Image.new("RGB", (6, 4), "teal")))
    assert store.read(prepared.sha256) is None and store.open(prepared.sha256) is None

    first = store.write(prepared)
    again = store.write(prepared)
    assert first.created and not again.created and again == first
    assert store.read(prepared.sha256) == prepared.data
    opened = store.open(prepared.sha256)
    assert opened is not None and opened.size == (6, 4) and opened.getpixel((0, 0)) == (0, 128, 128)

    store.discard(again)  # the second write found the file: it stays
    assert store.read(prepared.sha256) == prepared.data
    store.discard(first)
    assert store.read(prepared.sha256) is None
    store.discard(first)  # twice is harmless
    assert store.remove(prepared.sha256) is False


def test_a_second_store_on_the_same_location_shares_the_pictures(location: Path | str) -> None:
    writer, reader = ImageStore(location), ImageStore(location)
    png = writer.put(image_bytes(Image.new("RGB", (5, 5), "red")))
    jpeg = writer.put(_jpeg("blue"))
    assert jpeg.mime == "image/jpeg" and png.mime == "image/png"
    assert reader.read(png.sha256) == writer.read(png.sha256) is not None
    assert (
        suffix_of(reader.read(jpeg.sha256) or b"") == ".jpg"
        and suffix_of(reader.read(png.sha256) or b"") == ".png"
    )
    assert not reader.put(_jpeg("blue")).created  # the other store's copy counts: stored once
    assert reader.remove(jpeg.sha256) is True
    assert writer.read(jpeg.sha256) is None and writer.read(png.sha256) is not None


def test_only_a_directory_store_gives_local_files(location: Path | str, tmp_path: Path) -> None:
    store = ImageStore(location)
    stored = store.put(image_bytes(Image.new("RGB", (3, 3), "white")))
    if isinstance(store.backend, LocalBackend):
        assert store.root == tmp_path / "images"
        assert stored.path == store.find(stored.sha256) == store.path_for(stored.sha256, "PNG")
        assert stored.path is not None and stored.path.read_bytes() == store.read(stored.sha256)
        assert stored.open().size == (3, 3)
    else:
        assert isinstance(store.backend, FsspecBackend)
        assert store.root is None and stored.path is None and store.find(stored.sha256) is None
        with pytest.raises(ValueError, match="not a local directory"):
            store.path_for(stored.sha256, "PNG")
        with pytest.raises(ValueError, match="remote store"):
            stored.open()
        # The object is where the key says, under the URL's prefix, readable with fsspec alone.
        fs, root = fsspec.core.url_to_fs(str(location))
        assert fs.cat_file(f"{root}/{stored.sha256[:2]}/{stored.sha256}.png") == store.read(stored.sha256)


def test_a_refused_upload_writes_nothing_to_any_store(location: Path | str) -> None:
    """``prepare``'s checks do not depend on where the files go: a refused upload writes nothing."""
    from storage.images import ImageLimits, ImageRejected

    store = ImageStore(location, ImageLimits(max_bytes=10))
    with pytest.raises(ImageRejected, match="larger than"):
        store.put(image_bytes(Image.new("RGB", (5, 5), "red")))
    if isinstance(store.backend, FsspecBackend):
        assert (
            not store.backend.fs.exists(store.backend.root) or store.backend.fs.ls(store.backend.root) == []
        )
    else:
        assert list((store.root or Path("/nonexistent")).rglob("*")) == []
