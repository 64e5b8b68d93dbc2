"""Uploads are validated, stripped of metadata and stored once by content hash."""

import io

import pytest
from PIL import Image

from storage.images import ImageLimits, ImageRejected, ImageStore


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
