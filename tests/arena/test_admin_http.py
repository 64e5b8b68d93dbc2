"""The admin side of the real server over plain HTTP: sign-in, sessions, the guard on every route, export.

The server is the arena's own (arena.server.build_server under uvicorn, in this process) over SQLite
with scripted models and three imported votes between models whose names appear nowhere but in
the data; its admin page shows those names and a vote count, so a leak would be visible.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from starlette.routing import Mount

from arena.auth import SESSION_COOKIE, AdminAuth
from arena.server import SIGN_IN_REQUIRED
from tests.arena.admin_server import (
    IMPORTED,
    PASSWORD,
    SECRETS,
    VOTE_MARKER,
    RunningServer,
    battle_records,
    running_server,
)
from tests.e2e.harness import ROOT

HTML = {"Accept": "text/html,application/xhtml+xml"}
CONCRETE_PATHS = [
    "/admin",
    "/admin/",
    "/admin/config",
    "/admin/config/",
    "/admin/info",
    "/admin/theme.css",
    "/admin/manifest.json",
    "/admin/favicon.ico",
    "/admin/assets/index.js",
    "/admin/static/img/logo.svg",
    "/admin/svelte/svelte.js",
    "/admin/login/",
    "/admin/login_check",
    "/admin/gradio_api/info",
    "/admin/gradio_api/info?all_endpoints=true",
    "/admin/gradio_api/openapi.json",
    "/admin/gradio_api/login_check",
    "/admin/gradio_api/app_id",
    "/admin/gradio_api/queue/join",
    "/admin/gradio_api/queue/data?session_hash=abc",
    "/admin/gradio_api/queue/status",
    "/admin/gradio_api/upload",
    "/admin/gradio_api/upload_progress?upload_id=x",
    "/admin/gradio_api/file=/etc/hostname",
    "/admin/gradio_api/file=" + str(Path(__file__).resolve()),
    "/admin/gradio_api/heartbeat/abc",
    "/admin/gradio_api/run/probe",
    "/admin/gradio_api/call/probe",
    "/admin/gradio_api/startup-events",
    "/admin/gradio_api/theme.css",
    "/admin/export?format=jsonl",
    "/admin/export?format=fastchat",
    "/admin/export?format=parquet",
    "/admin/export?format=xml",
    "/admin/does-not-exist",
    "/admin/%2e%2e/admin/config",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("admin-http")) as running:
        yield running


@contextmanager
def sign_in(server: RunningServer, client_ip: str = "127.0.0.1") -> Iterator[httpx.Client]:
    """A client holding a fresh admin session."""
    with httpx.Client(base_url=server.url, headers={"X-Forwarded-For": client_ip}, timeout=60) as client:
        response = client.post("/admin/login", data={"username": "admin", "password": PASSWORD})
        assert response.status_code == 303 and response.headers["location"].endswith("/admin/")
        assert SESSION_COOKIE in client.cookies
        yield client


def admin_routes(routes: list, prefix: str = "") -> set[tuple[str, frozenset[str]]]:
    """Every (path pattern, methods) served under /admin, mounted and included sub-apps included."""
    found: set[tuple[str, frozenset[str]]] = set()
    for route in routes:
        if isinstance(route, Mount):
            sub = getattr(route.app, "routes", None)
            if sub is None:  # e.g. a static-files app
                found.add((prefix + route.path + "/{path:path}", frozenset({"GET"})))
            else:
                found |= admin_routes(sub, prefix + route.path)
        elif hasattr(route, "original_router"):  # FastAPI's included router
            found |= admin_routes(route.original_router.routes, prefix + route.include_context.prefix)
        else:
            path = getattr(route, "path", None)
            assert path is not None, f"unknown route type {type(route).__name__}: extend this enumeration"
            found.add((prefix + path, frozenset(getattr(route, "methods", None) or {"GET"})))
    return {(p, m) for p, m in found if p == "/admin" or p.startswith("/admin/")}


def concrete(pattern: str) -> str:
    """A request path for a route pattern: every parameter filled with a plausible value."""
    path = re.sub(r"\{[^}:]+:path\}", "some/file.txt", pattern)
    return re.sub(r"\{[^}]+\}", "x1", path)


def assert_refused(response: httpx.Response, what: str) -> None:
    """Refused without any data: a bare redirect to the sign-in page, or the fixed 401 body."""
    body = response.content
    assert response.status_code in (303, 401, 403), f"{what}: {response.status_code} {body[:200]!r}"
    if response.status_code == 303:
        assert response.headers["location"].endswith("/admin/login"), what
        assert body == b"", what
    elif response.request.method == "HEAD":
        assert body == b"", what
    else:
        assert response.json() == SIGN_IN_REQUIRED, what
    text = body.decode("utf-8", "replace") + json.dumps(dict(response.headers))
    for secret in SECRETS:
        assert secret not in text, f"{what} leaks {secret!r}"


def test_every_admin_route_refuses_without_a_session(server: RunningServer) -> None:
    routes = admin_routes(server.app.routes)
    patterns = {p for p, _ in routes}
    # The enumeration reached into the mounted Gradio app and its included API router.
    for expected in (
        "/admin/config",
        "/admin/gradio_api/queue/join",
        "/admin/gradio_api/upload",
        "/admin/export",
    ):
        assert expected in patterns
    assert len(routes) > 60
    exempt = {"/admin/login", "/admin/logout"}
    paths = {concrete(p) for p in patterns if p not in exempt} | set(CONCRETE_PATHS)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for path in sorted(paths):
            for method in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"):
                for headers in ({}, HTML):
                    response = client.request(method, path, headers=headers)
                    assert_refused(response, f"{method} {path} {headers}")
            # Files and JSON as Gradio's front end sends them.
            assert_refused(client.post(path, files={"files": ("a.txt", b"hello")}), f"upload {path}")
            assert_refused(client.post(path, json={"data": [], "fn_index": 0, "session_hash": "s"}), path)


def test_browsers_are_sent_to_the_sign_in_page_and_it_holds_no_data(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.get("/admin/", headers=HTML)
        assert response.status_code == 303 and response.headers["location"] == "/admin/login"
        page = client.get("/admin/login")
        assert page.status_code == 200 and 'name="password"' in page.text
        for secret in SECRETS:
            assert secret not in page.text
    # The public page stays public.
    assert httpx.get(server.url + "/", timeout=60).status_code == 200


def test_signed_in_admin_gets_the_page_config_and_queue(server: RunningServer) -> None:
    with sign_in(server) as client:
        config = client.get("/admin/config")
        assert config.status_code == 200 and IMPORTED[0] in config.text, "the probe page holds the data"
        assert config.json()["root"].endswith("/admin"), "Gradio knows it lives under /admin"
        page = client.get("/admin/", headers=HTML)
        assert page.status_code == 200 and "gradio" in page.text.lower()
        assert client.get("/admin", headers=HTML, follow_redirects=True).status_code == 200
        info = client.get("/admin/gradio_api/info")
        assert info.status_code == 200 and "/probe" in info.text

        from gradio_client import Client

        cookie = f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"
        gradio = Client(server.url + "/admin/", headers={"Cookie": cookie}, verbose=False)
        # A queue join + data (SSE) round-trip; Gradio's request.username is the signed-in admin.
        assert gradio.predict(api_name="/probe") == f"{VOTE_MARKER} for admin"


def test_wrong_password_is_refused_without_a_cookie_or_data(server: RunningServer, caplog) -> None:
    wrong = "definitely-not-the-password-91"
    with httpx.Client(base_url=server.url, headers={"X-Forwarded-For": "198.51.100.1"}, timeout=60) as client:
        for user, password in (("admin", wrong), ("root", PASSWORD), ("admin", "")):
            response = client.post("/admin/login", data={"username": user, "password": password})
            assert response.status_code == 401 and "set-cookie" not in response.headers
            assert "Wrong user name or password" in response.text
            assert not any(secret in response.text for secret in SECRETS)
        assert_refused(client.get("/admin/config"), "after a failed sign-in")
    logged = caplog.text
    assert "admin sign-in failed" in logged
    assert wrong not in logged and PASSWORD not in logged


def test_session_cookie_flags_and_logout(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/admin/login", data={"username": "admin", "password": PASSWORD})
        cookie = response.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
        assert attributes["path"] == "Path=/admin"
        assert attributes["max-age"] == f"Max-Age={server.session_s}"
        assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=strict"
        assert "secure" not in attributes, "plain http: no Secure flag"
        assert client.get("/admin/config").status_code == 200

        out = client.get("/admin/logout")
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        assert "Max-Age=0" in out.headers["set-cookie"] and "Path=/admin" in out.headers["set-cookie"]
        assert SESSION_COOKIE not in client.cookies
        assert_refused(client.get("/admin/config"), "after logout")

    behind_https = httpx.post(
        server.url + "/admin/login",
        data={"username": "admin", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "secure" in behind_https.headers["set-cookie"].lower()


def test_forged_and_expired_cookies_are_refused(server: RunningServer) -> None:
    other_process = server.auth()
    valid = other_process.issue()
    expired = server.auth(now=lambda: time.time() - server.session_s - 5).issue()
    forged = AdminAuth("admin", "guessed-password", session_s=600).issue()
    body, signature = valid.split(".")
    flipped = "A" if signature[5] != "A" else "B"  # a full 6-bit character of the signature
    tampered = f"{body}.{signature[:5]}{flipped}{signature[6:]}"
    with httpx.Client(base_url=server.url, timeout=60, cookies={SESSION_COOKIE: valid}) as client:
        response = client.get("/admin/config")
        assert response.status_code == 200, "a cookie from another process with the same password is accepted"
    for name, value in (("expired", expired), ("forged", forged), ("tampered", tampered), ("junk", "a.b")):
        with httpx.Client(base_url=server.url, timeout=60, cookies={SESSION_COOKIE: value}) as client:
            for path in ("/admin/config", "/admin/gradio_api/info", "/admin/export?format=jsonl"):
                assert_refused(client.get(path), f"{name} cookie {path}")


def test_sign_in_attempts_are_limited_per_client(server: RunningServer) -> None:
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    with httpx.Client(base_url=server.url, headers=attacker, timeout=60) as client:
        for _ in range(5):
            response = client.post("/admin/login", data={"username": "admin", "password": "guess"})
            assert response.status_code == 401
        blocked = client.post("/admin/login", data={"username": "admin", "password": PASSWORD})
        assert blocked.status_code == 429, "even the right password waits once the limit is hit"
        assert 0 < int(blocked.headers["retry-after"]) <= 301
        assert "set-cookie" not in blocked.headers
        assert not any(secret in blocked.text for secret in SECRETS)
    with sign_in(server, client_ip="203.0.113.10"):  # another client is not affected
        pass


@pytest.mark.parametrize("fmt", ["fastchat", "jsonl", "parquet"])
def test_export_download_equals_the_cli_export(server: RunningServer, fmt: str, tmp_path: Path) -> None:
    with sign_in(server) as client, client.stream("GET", f"/admin/export?format={fmt}") as response:
        assert response.status_code == 200
        downloaded = b"".join(response.iter_bytes())
        disposition = response.headers["content-disposition"]
    extension = {"fastchat": "json", "jsonl": "jsonl", "parquet": "parquet"}[fmt]
    today = datetime.now(UTC).date().isoformat()
    assert disposition == f'attachment; filename="arena-battles-{today}.{extension}"'

    out = tmp_path / f"cli.{extension}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "storage",
            "export",
            "--db",
            server.db_url,
            "--format",
            fmt,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert downloaded == out.read_bytes()
    if fmt == "parquet":
        rows = pq.read_table(out).to_pylist()
    elif fmt == "fastchat":
        rows = json.loads(downloaded)
    else:
        rows = [json.loads(line) for line in downloaded.decode().splitlines()]
    assert [r["question_id"] for r in rows] == ["imported-0", "imported-1", "imported-2"]
    assert {r["model_a"] for r in rows} == set(IMPORTED)


def test_export_refuses_an_unknown_format(server: RunningServer) -> None:
    with sign_in(server) as client:
        for query in ("?format=xml", "", "?format=JSONL"):
            response = client.get("/admin/export" + query)
            assert response.status_code == 400
            assert "expected one of fastchat, jsonl, parquet" in response.json()["detail"]


@pytest.mark.parametrize("fmt", ["fastchat", "jsonl", "parquet"])
def test_streamed_export_matches_the_file_export_on_each_database(
    db_url: str, fmt: str, tmp_path: Path
) -> None:
    """The download is built from the same records as the file export, on SQLite and PostgreSQL."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from arena.server import export_response
    from storage.db import make_engine
    from storage.transfer.export import export_battles
    from storage.transfer.importer import import_battles

    source = tmp_path / "battles.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in battle_records()))
    engine = make_engine(db_url)
    try:
        import_battles(engine, source, progress=False)
        app = FastAPI()
        app.get("/export")(lambda format: export_response(engine, format))
        with TestClient(app) as client:
            downloaded = client.get(f"/export?format={fmt}").content
        export_battles(engine, tmp_path / "file", fmt)
    finally:
        engine.dispose()
    assert downloaded == (tmp_path / "file").read_bytes()
    assert b"imported-2" in downloaded
