"""Content-addressed image store: validate an upload, strip its metadata, keep it once under its sha256."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

#: Formats accepted from uploads, and the format each is stored as.
ACCEPTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "PNG", "GIF": "PNG", "BMP": "PNG"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}


class ImageRejected(ValueError):
    """An upload that is not an acceptable image; the message is safe to show to the voter."""


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    mime: str
    width: int
    height: int
    size_bytes: int
    path: Path

    def open(self) -> Image.Image:
        with Image.open(self.path) as img:
            return img.convert("RGB")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 1


class ImageStore:
    """Files live under ``root/ab/<sha256>.<ext>``; the database keeps only the hash and metadata."""

    def __init__(self, root: Path, limits: ImageLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or ImageLimits()
        self.root.mkdir(parents=True, exist_ok=True)

    def normalize(self, data: bytes) -> tuple[bytes, str, int, int]:
        """Validate ``data`` and re-encode it without metadata (EXIF, GPS, ICC text chunks).

        Returns the new bytes, their stored format, width and height. EXIF orientation is applied to
        the pixels first so the image still looks the way the uploader saw it.
        """
        if len(data) > self.limits.max_bytes:
            raise ImageRejected(f"image is larger than {self.limits.max_bytes // (1024 * 1024)} MiB")
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                probe.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected("file is not a readable image") from exc
        if fmt not in ACCEPTED_FORMATS:
            raise ImageRejected(f"image format {fmt or 'unknown'} is not accepted (use JPEG, PNG or WebP)")
        if width * height > self.limits.max_pixels:
            raise ImageRejected(f"image has more than {self.limits.max_pixels:,} pixels")
        if min(width, height) < self.limits.min_side:
            raise ImageRejected("image is empty")
        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.seek(0)
                img = ImageOps.exif_transpose(opened)
                out_fmt = ACCEPTED_FORMATS[fmt]
                if out_fmt == "JPEG":
                    img = img.convert("RGB")
                elif img.mode not in ("RGB", "RGBA", "L", "LA"):
                    img = img.convert("RGBA" if "transparency" in img.info or img.mode == "P" else "RGB")
                buffer = io.BytesIO()
                # A fresh save writes pixels only: no EXIF, no XMP, no text chunks.
                if out_fmt == "JPEG":
                    img.save(buffer, format="JPEG", quality=95)
                else:
                    img.save(buffer, format="PNG", optimize=False)
                return buffer.getvalue(), out_fmt, img.width, img.height
        except (OSError, ValueError) as exc:
            raise ImageRejected("image could not be decoded") from exc

    def put(self, data: bytes) -> StoredImage:
        """Store an upload once; storing the same picture again returns the same record."""
        clean, fmt, width, height = self.normalize(data)
        digest = hashlib.sha256(clean).hexdigest()
        path = self.path_for(digest, fmt)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(clean)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return StoredImage(digest, MIME[fmt], width, height, len(clean), path)

    def path_for(self, sha256: str, fmt: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}{SUFFIX[fmt]}"

    def find(self, sha256: str) -> Path | None:
        for suffix in SUFFIX.values():
            path = self.root / sha256[:2] / f"{sha256}{suffix}"
            if path.exists():
                return path
        return None
