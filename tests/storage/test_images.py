"""Uploads are validated, stripped of metadata and stored once by content hash."""

import hashlib
import io
import random
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from storage.images import ImageLimits, ImageRejected, ImageStore
from tests import hostile_images as hostile


def image_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def _jpeg_with_exif() -> bytes:
    img = Image.new("RGB", (40, 30), (200, 20, 20))
    exif = Image.Exif()
    exif[0x010F] = "SecretCamera"  # Make
    exif[0x0131] = "private-software"  # Software
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_same_image_is_stored_once(tmp_path) -> None:
    store = ImageStore(tmp_path)
    data = _jpeg_with_exif()
    first, second = store.put(data), store.put(data)
    assert first == second
    assert len(first.sha256) == 64
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [first.path.name]


def test_exif_is_stripped(tmp_path) -> None:
    data = _jpeg_with_exif()
    assert b"SecretCamera" in data
    stored = ImageStore(tmp_path).put(data)
    raw = stored.path.read_bytes()
    assert b"SecretCamera" not in raw and b"private-software" not in raw
    with Image.open(stored.path) as img:
        assert not img.getexif()
        assert img.size == (40, 30)
    assert stored.mime == "image/jpeg"


def test_exif_orientation_is_applied_before_stripping(tmp_path) -> None:
    img = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif.tobytes())
    stored = ImageStore(tmp_path).put(buffer.getvalue())
    assert (stored.width, stored.height) == (20, 40)


def test_png_webp_gif_are_accepted_and_kept_lossless(tmp_path) -> None:
    store = ImageStore(tmp_path)
    for fmt in ("PNG", "WEBP", "GIF"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), "green").save(buffer, format=fmt)
        stored = store.put(buffer.getvalue())
        assert stored.mime == "image/png"
        assert stored.open().getpixel((0, 0))[1] > 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a readable image"),
        (b"%PDF-1.4 definitely not an image", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not a readable image"),
    ],
)
def test_bad_uploads_are_rejected(tmp_path, data: bytes, message: str) -> None:
    with pytest.raises(ImageRejected, match=message):
        ImageStore(tmp_path).put(data)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_limits(tmp_path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buffer, format="PNG")
    with pytest.raises(ImageRejected, match="pixels"):
        ImageStore(tmp_path, ImageLimits(max_pixels=5_000)).put(buffer.getvalue())
    with pytest.raises(ImageRejected, match="larger than"):
        ImageStore(tmp_path, ImageLimits(max_bytes=10)).put(buffer.getvalue())
    tiff = io.BytesIO()
    Image.new("RGB", (4, 4)).save(tiff, format="TIFF")
    with pytest.raises(ImageRejected, match="TIFF is not accepted"):
        ImageStore(tmp_path).put(tiff.getvalue())


# --- hostile uploads: each is refused in memory, with one line, and leaves nothing on disk ---------


def _files(root: Path) -> list[Path]:
    """Every file under the store's root, temporary files (``.upload-*``) included."""
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (hostile.decompression_bomb_png, "image is too large: 30000×30000 pixels (at most 40,000,000)"),
        (hostile.decompression_bomb_webp, "image is too large: 16383×16383 pixels (at most 40,000,000)"),
        (hostile.bomb_gif, "image is too large (at most 40,000,000 pixels)"),  # Pillow's own guard
        (partial(hostile.bomb_gif, 10_000), "image is too large (at most 40,000,000 pixels)"),  # its warning
        (hostile.truncated_png, "file is truncated or damaged"),
        (hostile.truncated_jpeg, "file is truncated or damaged"),
        (hostile.not_an_image, "file is not a readable image"),
        (hostile.svg_image, "file is not a readable image"),
        (hostile.html_page, "file is not a readable image"),
        (hostile.pdf_document, "file is not a readable image"),
        (hostile.zip_archive, "file is not a readable image"),
        (hostile.tiff_image, "image format TIFF is not accepted (use JPEG, PNG or WebP)"),
        (hostile.ico_image, "image format ICO is not accepted (use JPEG, PNG or WebP)"),
        (hostile.many_frames_gif, "animation has more than 100 frames"),
        (
            hostile.extreme_aspect_png,
            "image is 10000×20 pixels; its long side is more than 50 times its short side",
        ),
        (
            partial(hostile.extreme_aspect_png, 20, 10000),
            "image is 20×10000 pixels; its long side is more than 50 times its short side",
        ),
    ],
    ids=lambda value: (
        f"{value.func.__name__}{value.args}" if isinstance(value, partial) else getattr(value, "__name__", "")
    ),
)
def test_hostile_uploads_are_refused_with_one_line_and_leave_nothing(
    tmp_path: Path, build: Callable[[], bytes], message: str
) -> None:
    data = build()
    assert len(data) < 200_000  # the builders stay small
    store = ImageStore(tmp_path)
    for attempt in (store.prepare, store.put):
        with pytest.raises(ImageRejected) as caught:
            attempt(data)
        assert str(caught.value) == message
        assert "\n" not in str(caught.value)
    assert _files(tmp_path) == []


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_animations_are_counted_up_to_the_limit_and_keep_their_first_frame(tmp_path: Path, fmt: str) -> None:
    store = ImageStore(tmp_path, ImageLimits(max_frames=5))
    with pytest.raises(ImageRejected, match="^animation has more than 5 frames$"):
        store.prepare(hostile.animated(fmt, 6))
    prepared = store.prepare(hostile.animated(fmt, 5))
    assert (prepared.format, prepared.width, prepared.height) == ("PNG", 4, 4)
    assert prepared.open().getpixel((0, 0)) == (0, 0, 255)  # the first frame's colour
    assert _files(tmp_path) == []


def test_gif_frames_are_counted_exactly_at_the_default_limit(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    assert Image.open(io.BytesIO(hostile.many_frames_gif(100))).n_frames == 100  # the builder is right
    assert store.prepare(hostile.many_frames_gif(100)).width == 1
    with pytest.raises(ImageRejected, match="more than 100 frames"):
        store.prepare(hostile.many_frames_gif(101))


def test_bomb_and_many_frames_are_refused_without_decoding_them(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    gif = hostile.many_frames_gif(5000)
    assert Image.open(io.BytesIO(gif)).n_frames == 5000
    for data in (hostile.decompression_bomb_png(), hostile.decompression_bomb_webp(), gif):
        store.prepare(hostile.extreme_aspect_png(40, 40))  # plugins loaded before timing
        started = time.perf_counter()
        with pytest.raises(ImageRejected):
            store.prepare(data)
        assert time.perf_counter() - started < 1.0


def test_pillow_settings_are_left_as_they_were(tmp_path: Path) -> None:
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    store = ImageStore(tmp_path)
    for data in (hostile.bomb_gif(10_000), hostile.decompression_bomb_png(), hostile.truncated_png()):
        with pytest.raises(ImageRejected):
            store.prepare(data)
    assert limit == Image.MAX_IMAGE_PIXELS and warnings.filters == filters
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_webp_is_damaged(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="WEBP", lossless=True)
    with pytest.raises(ImageRejected, match="^file is truncated or damaged$"):
        ImageStore(tmp_path).prepare(buffer.getvalue()[:-10])


def test_empty_and_too_small_images_are_refused(tmp_path: Path) -> None:
    # Pillow's readers refuse a header with a zero side themselves, before the store's own check.
    with pytest.raises(ImageRejected, match="^file is not a readable image$"):
        ImageStore(tmp_path).prepare(hostile.decompression_bomb_png(side=0, rows=0))
    with pytest.raises(ImageRejected, match="^image is 3×8 pixels; each side must be at least 4$"):
        ImageStore(tmp_path, ImageLimits(min_side=4)).prepare(image_bytes(Image.new("RGB", (3, 8))))
    assert _files(tmp_path) == []


def test_mangled_images_only_ever_raise_image_rejected(tmp_path: Path) -> None:
    """Random damage to valid files of every accepted format: prepare accepts or refuses, nothing else."""
    rng = random.Random(7)
    store = ImageStore(tmp_path)
    seeds = [
        hostile.animated("GIF", 3, (16, 16)),
        hostile.animated("PNG", 3, (16, 16)),
        hostile.animated("WEBP", 3, (16, 16)),
        _jpeg_with_exif(),
        image_bytes(Image.new("RGB", (16, 16), "navy"), "BMP"),
    ]
    refused = 0
    for original in seeds:
        for _ in range(60):
            data = bytearray(original)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(16, len(data))] = rng.randrange(256)
            try:
                store.prepare(bytes(data))
            except ImageRejected:
                refused += 1
    assert refused > 0
    assert _files(tmp_path) == []


# --- prepare, then write: nothing on disk until the whole turn has passed -----------------------------


def test_prepare_writes_nothing_and_write_stores_exactly_once(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    prepared = store.prepare(_jpeg_with_exif())
    assert _files(tmp_path) == []
    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest()
    assert (prepared.format, prepared.mime, prepared.width, prepared.height) == ("JPEG", "image/jpeg", 40, 30)
    assert prepared.size_bytes == len(prepared.data) and b"SecretCamera" not in prepared.data
    assert prepared.open().mode == "RGB" and prepared.open().size == (40, 30)
    assert "data=" not in repr(prepared)  # the bytes stay out of logs

    first = store.write(prepared)
    assert first.created and first.path.read_bytes() == prepared.data
    again = store.write(prepared)
    assert not again.created and again == first  # equal records whoever created the file
    assert _files(tmp_path) == [first.path]
    assert store.find(prepared.sha256) == first.path


def test_discard_removes_only_files_this_write_created(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    prepared = store.prepare(image_bytes(Image.new("RGB", (6, 6), "teal")))
    created = store.write(prepared)
    found = store.write(prepared)
    store.discard(found)  # another turn's file: stays
    assert created.path.exists()
    store.discard(created)
    assert not created.path.exists() and _files(tmp_path) == []
    store.discard(created)  # twice is harmless


def test_concurrent_writers_of_one_picture_agree_on_who_created_it(tmp_path: Path) -> None:
    prepared = ImageStore(tmp_path).prepare(image_bytes(Image.new("RGB", (9, 9), "olive")))
    stores = [ImageStore(tmp_path) for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def write(store: ImageStore) -> bool:
        barrier.wait()
        return store.write(prepared).created

    with ThreadPoolExecutor(len(stores)) as pool:
        created = list(pool.map(write, stores))
    assert created.count(True) == 1
    assert len(_files(tmp_path)) == 1


def test_put_still_prepares_and_writes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = image_bytes(Image.new("RGB", (7, 5), "maroon"))
    stored = store.put(data)
    assert stored.created and stored == store.write(store.prepare(data))
    assert (stored.width, stored.height, stored.mime) == (7, 5, "image/png")
