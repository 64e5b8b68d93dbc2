"""Hostile uploads as bytes, for the image store's tests and the browser tests.

Each builder returns a small file (at most a few hundred KB) that attacks one check: a header that
claims billions of pixels, a file cut short, something that is not an image, thousands of frames, an
extreme aspect ratio, a format the arena does not take. None of them allocates the image it describes.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC of type and payload."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def decompression_bomb_png(side: int = 30000, rows: int = 64) -> bytes:
    """A greyscale PNG whose header says ``side``×``side`` pixels, in a few KB.

    The IDAT holds the compressed first ``rows`` rows only (all black): a decoder that trusts the header
    allocates side² bytes before it finds out. The header alone must be enough to refuse it.
    """
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    compressor = zlib.compressobj(9)
    row = bytes(1 + side)  # filter byte 0, then black pixels
    idat = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    """One RIFF chunk: type, little-endian length, payload, padded to an even length."""
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)


def decompression_bomb_webp(side: int = 16383) -> bytes:
    """An animated WebP whose canvas is ``side``×``side`` (WebP's largest is 16383) holding one 1×1
    frame, in under 100 bytes."""
    pixel = io.BytesIO()
    Image.new("RGB", (1, 1)).save(pixel, format="WEBP", lossless=True)
    vp8l = pixel.getvalue()[12:]  # the VP8L chunk after "RIFF", size, "WEBP"
    extent = (side - 1).to_bytes(3, "little")
    frame = bytes(6) + bytes(6) + (100).to_bytes(3, "little") + b"\x00" + vp8l  # at 0,0; 1×1; 100 ms
    body = (
        b"WEBP"
        + _riff_chunk(b"VP8X", b"\x02\x00\x00\x00" + extent + extent)  # flags: animation
        + _riff_chunk(b"ANIM", bytes(6))
        + _riff_chunk(b"ANMF", frame)
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _gif_frame(pixel: int, width: int = 1, height: int = 1) -> bytes:
    """An image descriptor for a frame at (0, 0) of the given extent with one 1-pixel LZW stream
    (2-bit code size: clear, the pixel, end of information)."""
    lzw = bytes([0x44 if pixel == 0 else 0x4C, 0x01])
    return b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02" + bytes([len(lzw)]) + lzw + b"\x00"


def _gif(frames: list[bytes], width: int = 1, height: int = 1) -> bytes:
    """A GIF89a with a two-colour global palette (black, white), looping, made of ``frames``."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table of 2 entries
    palette = b"\x00\x00\x00\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return b"GIF89a" + screen + palette + loop + b"".join(frames) + b";"


def many_frames_gif(frames: int = 5000) -> bytes:
    """A 1×1 animated GIF of ``frames`` frames alternating black and white (about 15 bytes a frame)."""
    return _gif([_gif_frame(i % 2) for i in range(frames)])


def bomb_gif(side: int = 20000) -> bytes:
    """A GIF whose screen is 1×1 but whose first frame claims ``side``×``side``: Pillow grows the image
    to the frame while reading the header, so this one trips Pillow's own decompression-bomb guard
    (an error above 2 × ``Image.MAX_IMAGE_PIXELS``, a warning above it)."""
    return _gif([_gif_frame(0, side, side)])


def _noise(size: tuple[int, int], seed: int = 13) -> Image.Image:
    """An RGB image of random pixels, so that its compressed data is long enough to cut."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))


def _encoded(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def truncated_png() -> bytes:
    """A 64×64 PNG of noise cut in half: the header is intact, half the pixel data is missing."""
    data = _encoded(_noise((64, 64)), "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    """A 64×64 JPEG of noise cut in half: the header is intact, half the scan is missing."""
    data = _encoded(_noise((64, 64)), "JPEG", quality=90)
    return data[: len(data) // 2]


def not_an_image() -> bytes:
    """Plain text."""
    return b"These are my holiday notes, not a picture.\n" * 4


def svg_image() -> bytes:
    """A vector drawing: an image to a person, but not one the arena decodes."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
        b'<circle cx="50" cy="50" r="40" fill="red"/></svg>\n'
    )


def html_page() -> bytes:
    """A web page."""
    return b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"


def pdf_document() -> bytes:
    """The start of a PDF document."""
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def zip_archive() -> bytes:
    """A zip archive holding a real PNG (what a file renamed from .zip to .png holds)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inside.png", _encoded(Image.new("RGB", (4, 4), "red"), "PNG"))
    return buffer.getvalue()


def extreme_aspect_png(w: int = 10000, h: int = 20) -> bytes:
    """A black greyscale PNG of ``w``×``h`` pixels (a few hundred bytes)."""
    return _encoded(Image.new("L", (w, h)), "PNG")


def tiff_image() -> bytes:
    """A small, valid TIFF: a real image in a format the arena does not accept."""
    return _encoded(Image.new("RGB", (4, 4), "green"), "TIFF")


def ico_image() -> bytes:
    """A small, valid Windows icon: a real image in a format the arena does not accept."""
    return _encoded(Image.new("RGB", (16, 16), "blue"), "ICO")


def animated(fmt: str, frames: int, size: tuple[int, int] = (4, 4)) -> bytes:
    """An animated ``fmt`` (``PNG`` for APNG, ``WEBP``, ``GIF``) of ``frames`` distinct frames, as Pillow
    writes it; colours differ from frame to frame so the writer keeps every one."""
    images = [Image.new("RGB", size, (i % 256, (i * 7) % 256, 255 - i % 256)) for i in range(frames)]
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    return _encoded(images[0], fmt, save_all=True, append_images=images[1:], duration=40, loop=0, **lossless)
