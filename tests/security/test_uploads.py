"""Hostile uploads over the page's own upload and queue routes.

File names with path traversal, NUL bytes, 10,000 characters and unicode tricks; a request naming a
server file (the arena's secrets) as if it had been uploaded; more images than ``ARENA_MAX_IMAGES``;
a 100 MB upload streamed in; files that a browser would run if served inline. Nothing is written
outside the module's folder, stored images keep sane names (their sha256), refused requests store
nothing, and the server keeps serving.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ROOT
from tests.security.client import files_under
from tests.security.running import Arena, png

pytestmark = pytest.mark.e2e
ARENA_ENV = {"ARENA_MAX_IMAGES": "4", "ARENA_MAX_IMAGE_MB": "15"}
STORED_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.(png|jpg)$")

HOSTILE_NAMES = {
    "path-traversal": "../../x.png",
    "absolute-path": "/etc/cron.d/x.png",
    "windows-traversal": "..\\..\\x.png",
    "nul-byte": "a\x00b.png",
    "rtl-override": "photo\u202egnp.exe.png",
    "homoglyph": "\u0440hoto.png",  # a Cyrillic "р"
    "long-name": "n" * 10_000 + ".png",
}


#: Where a traversing name would land if it were followed (from the upload folder, or the server's
#: working directory, the repository root).
LANDING = ("x.png", "../x.png", "../../x.png", "/tmp/x.png", "/etc/cron.d/x.png")


@pytest.fixture
def outside(arena: Arena) -> Iterator[None]:
    """No file appears in the module's folder outside Gradio's upload folder and the data folder, nor
    where a traversing name would land."""
    root = arena.tmp
    mine = files_under(root)
    siblings = set(map(str, root.parent.iterdir()))
    yield
    new = files_under(root) - mine
    assert all(n.startswith(("gradio/", "data/", "arena.db")) for n in new), new
    assert set(map(str, root.parent.iterdir())) <= siblings | {str(root)}
    for base in (ROOT, arena.uploads_dir, root):
        for name in LANDING:
            assert not (base / name).exists(), base / name


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_file_names_stay_inside_the_upload_folder(arena: Arena, case: str, outside: None) -> None:
    name = HOSTILE_NAMES[case]
    with arena.page() as page:
        response = page.upload([(name, png("navy", (20 + len(case), 20)))])
        if response.status_code != 200:  # refused outright (the 10,000-character name): clearly
            assert response.status_code in (400, 413), response.text
            arena.assert_serving()
            return
        (path,) = response.json()
        uploaded = Path(path).resolve()
        assert uploaded.is_relative_to(arena.uploads_dir.resolve()), path
        assert "\x00" not in path and ".." not in Path(path).parts
        # The upload goes into a real battle: a harmless result, stored under its hash.
        voter = arena.voter()
        before = arena.snapshot()
        sent = voter.send("What is this?", [page.file_data(path, name)])
        assert sent.success, sent.text()
        after = arena.snapshot()
        assert after.rows["turns"] == before.rows["turns"] + 1
        assert all(STORED_NAME.match(f) for f in after.image_files), after.image_files
        stored = arena.query("SELECT sha256 FROM images")
        assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for (sha,) in stored)
    arena.assert_serving()


SECRETS = ("secret_key", "ip_salt", "admin_password")


@pytest.mark.parametrize("secret", SECRETS)
def test_a_server_file_cannot_be_passed_off_as_an_upload(arena: Arena, secret: str) -> None:
    """A request naming a file of the server (one never uploaded) is refused, and no copy of it lands
    anywhere the server serves files from."""
    target = arena.data_dir / secret
    if not target.exists():
        target.write_text("a-secret-of-the-operator\n")  # the file an operator might keep there
    content = target.read_text().strip()
    voter = arena.voter()
    for name in (str(target), str(target) + "/../" + secret):
        with arena.unchanged():
            sent = voter.send("What is this?", [voter.page.file_data(name, "x.png")])
            assert not sent.success or sent.toasts, sent.text()
            assert content not in sent.text()
    copies = [
        p for p in arena.uploads_dir.rglob("*") if p.is_file() and p.read_bytes().strip() == content.encode()
    ]
    assert copies == [], f"the server copied {secret} into its upload folder: {copies}"
    arena.assert_serving()


@pytest.mark.parametrize("secret", SECRETS)
def test_server_files_are_not_served(arena: Arena, secret: str) -> None:
    target = arena.data_dir / secret
    for path in (str(target), f"{arena.uploads_dir}/../data/{secret}", "/etc/passwd"):
        response = httpx.get(f"{arena.url}/gradio_api/file={path}", timeout=30)
        assert response.status_code in (403, 404), (path, response.status_code)
    arena.assert_serving()


@pytest.mark.parametrize("kind", ["html", "svg"])
def test_uploaded_markup_is_served_as_a_download_never_inline(arena: Arena, kind: str) -> None:
    body = (
        b"<html><script>window.__pwned=1</script></html>"
        if kind == "html"
        else b'<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned=1"/>'
    )
    with arena.page() as page:
        response = page.upload([(f"evil.{kind}", body)])
        assert response.status_code == 200
        served = page.http.get(f"{arena.url}/gradio_api/file={response.json()[0]}")
    if served.status_code == 200:
        assert served.headers["content-type"].split(";")[0] not in ("text/html", "image/svg+xml")
        assert served.headers.get("content-disposition", "").startswith("attachment")
    # And as an image of a turn it is refused, storing nothing.
    voter = arena.voter()
    with arena.unchanged():
        sent = voter.send("What is this?", [voter.page.file_data(response.json()[0], f"evil.{kind}")])
        assert sent.toasts or not sent.success, sent.text()


def test_more_images_than_the_limit_are_refused(arena: Arena) -> None:
    voter = arena.voter()
    files = voter.page.uploaded([(f"{i}.png", png("navy", (10 + i, 10))) for i in range(12)])
    with arena.unchanged():
        sent = voter.send("Compare them", files)
        assert any("at most 4 images" in t for t in sent.toasts), sent.text()
    arena.assert_serving()


class Zeros:
    """A file-like 100 MB PNG-looking body, made as it is read (never held in memory whole)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.head = b"\x89PNG\r\n\x1a\n"

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        data, self.head = (self.head + b"\0" * n)[:n], b""
        return data


def test_a_100_mb_upload_is_refused_while_streaming(arena: Arena) -> None:
    with arena.unchanged(), arena.page(timeout=120) as page:
        try:
            response = page.upload([("big.png", Zeros(100 * 1024 * 1024))])  # type: ignore[list-item]
            assert response.status_code == 413, (response.status_code, response.text[:200])
        except httpx.TransportError:
            pass  # the server stopped reading and closed the connection: refused as well
    big = [p for p in arena.uploads_dir.rglob("*") if p.is_file() and p.stat().st_size > 15 * 1024 * 1024]
    assert big == [], "a file over the 15 MiB limit was kept"
    arena.assert_serving(battle=True)


def test_an_upload_without_a_file_name_is_refused(arena: Arena) -> None:
    with arena.unchanged(), arena.page() as page:
        response = page.upload([("..", png())])
        assert response.status_code in (400, 422), (response.status_code, response.text[:200])
        response = page.upload([(".", png())])  # renamed, inside the upload folder: harmless
        assert response.status_code == 200
        assert Path(response.json()[0]).resolve().parent.parent == arena.uploads_dir.resolve()
        # Gradio's upload route fails on a part with an empty file name (a TypeError, answered 500):
        # refused all the same, and the server goes on serving.
        response = page.upload([("", png())])
        assert response.status_code in (400, 422, 500), response.status_code
    arena.assert_serving()
