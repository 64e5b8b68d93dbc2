"""Content-addressed image store: validate an upload, strip its metadata, keep it once under its sha256.

An upload goes through two steps so that a whole turn can be checked before anything reaches the disk:
``ImageStore.prepare`` runs every check and the re-encoding in memory, ``ImageStore.write`` stores the
result. Hostile files (decompression bombs, truncated or damaged files, files that are not images,
animations with thousands of frames, extreme aspect ratios) are refused by ``prepare`` with an
``ImageRejected`` whose message is one line, safe to show to the voter.

The files live in a shared store (``storage.image_store``): a directory by default, or any fsspec URL
(``s3://bucket/prefix``), so several arena processes, the judge, ``forget`` and export all read the
same pictures. Read them with ``ImageStore.read`` (any store); ``find`` gives a local file only when
the store is a directory.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from storage.image_store import StoreBackend, open_backend

#: Formats accepted from uploads, and the format each is stored as. MPO is the JPEG variant many
#: phones write (a JPEG with a second, depth or preview, frame); its first frame is kept as JPEG.
ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "PNG", "GIF": "PNG", "BMP": "PNG"}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}
FORMAT_OF_MIME = {mime: fmt for fmt, mime in MIME.items()}

#: The Pillow plugins whose headers ``prepare`` reads itself (importing a plugin registers it in
#: ``Image.OPEN``); MPO files come out of the JPEG plugin's factory.
_HEADER_PLUGINS = (PngImagePlugin, JpegImagePlugin, GifImagePlugin, WebPImagePlugin, BmpImagePlugin)
_HEADER_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")

NOT_AN_IMAGE = "file is not a readable image"
DAMAGED = "file is truncated or damaged"
UNDECODABLE = "image could not be decoded"


class ImageRejected(ValueError):
    """An upload that is not an acceptable image; the message is safe to show to the voter."""


@dataclass(frozen=True)
class StoredImage:
    """An image file in the store. ``path`` is its local file when the store is a directory (None in a
    remote store: read it through ``ImageStore.read``). ``created`` says whether the ``write`` that
    returned it created the file (rather than finding the same picture already stored), so a failed
    transaction can undo it."""

    sha256: str
    mime: str
    width: int
    height: int
    size_bytes: int
    path: Path | None
    created: bool = field(default=False, compare=False)

    def open(self) -> Image.Image:
        """The stored picture as an RGB image (a local store's file; ``ImageStore.open`` reads any)."""
        if self.path is None:
            raise ValueError(f"image {self.sha256} is in a remote store: use ImageStore.open")
        with Image.open(self.path) as img:
            return img.convert("RGB")


@dataclass(frozen=True)
class PreparedImage:
    """An upload that passed every check, re-encoded without metadata, not yet on disk."""

    data: bytes = field(repr=False)
    sha256: str
    format: str
    mime: str
    width: int
    height: int
    size_bytes: int

    def open(self) -> Image.Image:
        """The cleaned picture as an RGB image (for moderation and for the models)."""
        with Image.open(io.BytesIO(self.data), formats=[self.format]) as img:
            return img.convert("RGB")


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may be: bytes on the wire, pixels, frames of an animation, long side / short side."""

    max_bytes: int = 15 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 1
    max_frames: int = 100
    max_aspect: float = 50.0


class ImageStore:
    """Files live under ``<store>/ab/<sha256>.<ext>``; the database keeps only the hash and metadata.

    ``location`` is a directory (a ``Path``, a path string or ``file://`` URL; created if absent) or an
    fsspec URL such as ``s3://bucket/images`` (``storage_options`` go to fsspec). ``root`` is the
    directory, or None for a remote store.
    """

    def __init__(
        self, location: Path | str, limits: ImageLimits | None = None, **storage_options: Any
    ) -> None:
        self.backend: StoreBackend = open_backend(location, **storage_options)
        self.location = self.backend.location
        self.root: Path | None = self.backend.local_path("")
        self.limits = limits or ImageLimits()

    def prepare(self, data: bytes) -> PreparedImage:
        """Check an upload and re-encode it without metadata (EXIF, GPS, text chunks), all in memory.

        EXIF orientation is applied to the pixels first, so the image still looks the way the uploader
        saw it; of an animation only the first frame is kept. Raises ``ImageRejected`` for anything
        that is not an acceptable image; nothing is written to disk either way.
        """
        if len(data) > self.limits.max_bytes:
            raise ImageRejected(f"image is larger than {self.limits.max_bytes // (1024 * 1024)} MiB")
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice that; here every such image is refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                clean, fmt, width, height = self._clean(data)
            except (ImageRejected, MemoryError):
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageRejected(
                    f"image is too large (at most {self.limits.max_pixels:,} pixels)"
                ) from exc
            except Exception as exc:  # any other failure inside Pillow: refuse, never crash the caller
                raise ImageRejected(UNDECODABLE) from exc
        return PreparedImage(
            data=clean,
            sha256=hashlib.sha256(clean).hexdigest(),
            format=fmt,
            mime=MIME[fmt],
            width=width,
            height=height,
            size_bytes=len(clean),
        )

    def write(self, prepared: PreparedImage) -> StoredImage:
        """Store a prepared image once, atomically; the same picture stored again is not rewritten.

        The result's ``created`` is true only when this call created the file, even when several
        processes write the same picture at once.
        """
        key = _key(prepared.sha256, prepared.format)
        created = self.backend.create(key, prepared.data)
        return StoredImage(
            prepared.sha256,
            prepared.mime,
            prepared.width,
            prepared.height,
            prepared.size_bytes,
            self.backend.local_path(key),
            created=created,
        )

    def discard(self, stored: StoredImage) -> None:
        """Remove a file that ``write`` created, when the transaction that was to refer to it failed.
        A file the write found already there belongs to someone else and stays."""
        if stored.created:
            self.backend.remove(_key(stored.sha256, FORMAT_OF_MIME[stored.mime]))

    def put(self, data: bytes) -> StoredImage:
        """Check and store an upload once; storing the same picture again returns the same record."""
        return self.write(self.prepare(data))

    def path_for(self, sha256: str, fmt: str) -> Path:
        """Where the picture with this hash, stored in format ``fmt``, lives (a directory store only)."""
        path = self.backend.local_path(_key(sha256, fmt))
        if path is None:
            raise ValueError(f"image store {self.location} is not a local directory")
        return path

    def find(self, sha256: str) -> Path | None:
        """The local file holding this hash, if the store is a directory and has it; None otherwise.
        Code that must work with any store reads through ``read`` or ``open`` instead."""
        key = self._stored_key(sha256)
        return None if key is None else self.backend.local_path(key)

    def read(self, sha256: str) -> bytes | None:
        """The stored bytes of the picture with this hash (JPEG or PNG), or None if the store lacks it."""
        for fmt in SUFFIX:
            data = self.backend.read(_key(sha256, fmt))
            if data is not None:
                return data
        return None

    def open(self, sha256: str) -> Image.Image | None:
        """The stored picture with this hash, loaded, or None if the store lacks it."""
        data = self.read(sha256)
        if data is None:
            return None
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.copy()

    def remove(self, sha256: str) -> bool:
        """Delete the stored file of this hash (``forget``, once no row refers to it); true if one was."""
        removed = [self.backend.remove(_key(sha256, fmt)) for fmt in SUFFIX]  # every format, no short cut
        return any(removed)

    def local_file(self, sha256: str, cache_dir: Path | None = None) -> Path | None:
        """A local file with this picture: the stored file itself for a directory store, else a copy
        kept under ``cache_dir`` (default: the temporary folder); None if the store lacks it."""
        path = self.find(sha256)
        if path is not None or self.root is not None:
            return path
        folder = cache_dir or Path(tempfile.gettempdir()) / "vlm-arena-images"
        for attempt in range(2):
            for suffix in SUFFIX.values():
                if (folder / f"{sha256}{suffix}").exists():
                    return folder / f"{sha256}{suffix}"
            if attempt == 0 and not self.copy_out([sha256], folder)[0]:
                return None
        return None

    def copy_out(self, hashes: Iterable[str], out_dir: Path) -> tuple[int, list[str]]:
        """Copy these pictures into ``out_dir`` as ``<sha256>.<ext>`` (an export's images); return how
        many were copied and the hashes the store lacks."""
        out_dir.mkdir(parents=True, exist_ok=True)
        copied, missing = 0, []
        for sha in dict.fromkeys(hashes):
            data = self.read(sha)
            if data is None:
                missing.append(sha)
                continue
            target = out_dir / f"{sha}{suffix_of(data)}"
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(data)
            partial.replace(target)
            copied += 1
        return copied, missing

    def _stored_key(self, sha256: str) -> str | None:
        for fmt in SUFFIX:
            key = _key(sha256, fmt)
            if self.backend.exists(key):
                return key
        return None

    def _clean(self, data: bytes) -> tuple[bytes, str, int, int]:
        """Every check in order, then the re-encoding: the clean bytes, their format, width, height."""
        header = _open_header(data)
        try:
            fmt = header.format or ""
            width, height = header.size
            self._check_geometry(width, height)
            frames = (
                _count_gif_frames(data, self.limits.max_frames + 1)
                if fmt == "GIF"
                else getattr(header, "n_frames", 1)
            )
            if frames > self.limits.max_frames:
                raise ImageRejected(f"animation has more than {self.limits.max_frames} frames")
            try:
                header.verify()  # chunk checksums and structure, where the format has them
            except (ImageRejected, MemoryError, Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise
            except Exception as exc:
                raise ImageRejected(DAMAGED) from exc
        finally:
            header.close()
        with _open_header(data) as opened:
            _decode_fully(opened)
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

    def _check_geometry(self, width: int, height: int) -> None:
        """Refuse empty images, more pixels than the limit, and extreme aspect ratios (from the header)."""
        limits = self.limits
        if min(width, height) < 1:
            raise ImageRejected("image is empty")
        if min(width, height) < limits.min_side:
            raise ImageRejected(
                f"image is {width}×{height} pixels; each side must be at least {limits.min_side}"
            )
        if width * height > limits.max_pixels:
            raise ImageRejected(
                f"image is too large: {width}×{height} pixels (at most {limits.max_pixels:,})"
            )
        if max(width, height) > limits.max_aspect * min(width, height):
            raise ImageRejected(
                f"image is {width}×{height} pixels; its long side is more than "
                f"{limits.max_aspect:g} times its short side"
            )


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """Read an accepted format's header without decoding pixels, and without Pillow's own size check,
    so that the size can be judged against the store's limits; anything else is refused here."""
    prefix = data[:16]
    for fmt in _HEADER_FORMATS:
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept is not None else False
        if verdict and not isinstance(verdict, str):  # a string is Pillow's "maybe, but unsupported"
            try:
                return factory(io.BytesIO(data), "")
            except (MemoryError, Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise
            except Exception as exc:
                raise ImageRejected(DAMAGED if _riff_cut_short(fmt, data) else NOT_AN_IMAGE) from exc
    # Not one of ours: name the format if Pillow knows it, so the voter learns what to send instead.
    try:
        with Image.open(io.BytesIO(data)) as other:
            name = other.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(NOT_AN_IMAGE) from exc
    raise ImageRejected(f"image format {name or 'unknown'} is not accepted (use JPEG, PNG or WebP)")


def _riff_cut_short(fmt: str, data: bytes) -> bool:
    """Whether a WebP file holds fewer bytes than its RIFF header declares (libwebp refuses such a file
    without saying why)."""
    return fmt == "WEBP" and len(data) >= 8 and int.from_bytes(data[4:8], "little") + 8 > len(data)


def _decode_fully(img: ImageFile.ImageFile) -> None:
    """Decode the (first frame's) pixels, so that a file cut short is refused rather than stored with
    its missing part filled in (Pillow raises on missing data while ``ImageFile.LOAD_TRUNCATED_IMAGES``
    keeps its default, False, which nothing in this project changes)."""
    try:
        img.load()
    except (MemoryError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as exc:
        raise ImageRejected(DAMAGED) from exc


def _key(sha256: str, fmt: str) -> str:
    """The store key of a picture: ``ab/<sha256>.<ext>``, fanned out by the hash's first two digits."""
    return f"{sha256[:2]}/{sha256}{SUFFIX[fmt]}"


def suffix_of(data: bytes) -> str:
    """The file suffix of stored image bytes (the store keeps JPEG and PNG only)."""
    return SUFFIX["JPEG"] if data[:3] == b"\xff\xd8\xff" else SUFFIX["PNG"]


def _count_gif_frames(data: bytes, stop: int) -> int:
    """Count a GIF's frames (image descriptors) by walking its blocks, without decoding any of them,
    stopping at ``stop``. A malformed stream ends the count; decoding the first frame judges it."""
    view = memoryview(data)
    end = len(view)
    pos = 13  # signature (6) + logical screen descriptor (7)
    if end < pos:
        return 0
    if view[10] & 0x80:  # global colour table
        pos += 3 << ((view[10] & 0x07) + 1)
    frames = 0
    while pos < end and frames < stop:
        block = view[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW code size, sub-blocks
            frames += 1
            if pos + 10 > end:
                break
            packed = view[pos + 9]
            pos += 10
            if packed & 0x80:
                pos += 3 << ((packed & 0x07) + 1)
            pos += 1
        else:
            break
        while pos < end:  # data sub-blocks, each a length byte then that many bytes; 0 ends them
            size = view[pos]
            pos += 1 + size
            if size == 0:
                break
    return frames
