"""The admin routes without a session, with forged, tampered or expired cookies, and cross-site.

``/admin``, ``/admin/export``, the admin Gradio app's config and queue: refused without a valid
session cookie (a page request is sent to the sign-in form, anything else gets 401), whatever the
cookie claims. A sign-in POSTed from another site is refused and sets no cookie. The data served
to a real session is the check's positive control.
"""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from arena.auth import SESSION_COOKIE, AdminAuth
from tests.security.running import BASE_ENV, Arena

pytestmark = pytest.mark.e2e
PASSWORD = BASE_ENV["ARENA_ADMIN_PASSWORD"]
ROUTES = [
    ("GET", "/admin/"),
    ("GET", "/admin/export?format=json"),
    ("GET", "/admin/export?format=fastchat"),
    ("GET", "/admin/export?format=jsonl"),
    ("GET", "/admin/config"),
    ("GET", "/admin/gradio_api/info"),
    ("POST", "/admin/gradio_api/queue/join"),
    ("GET", "/admin/gradio_api/queue/data?session_hash=abc"),
    ("POST", "/admin/gradio_api/upload"),
]


def cookies() -> dict[str, str | None]:
    """Cookie values that must all be refused, by what is wrong with them."""
    auth = AdminAuth("admin", PASSWORD, session_s=3600)
    good = auth.issue()
    body, signature = good.split(".")
    other_password = AdminAuth("admin", PASSWORD + "-not", session_s=3600).issue()
    other_user = AdminAuth("root", PASSWORD, session_s=3600).issue()
    expired = AdminAuth("admin", PASSWORD, session_s=3600, now=lambda: time.time() - 7200).issue()
    forever = base64.urlsafe_b64encode(f"admin|{int(time.time()) + 10**9}|00".encode()).decode().rstrip("=")
    return {
        "none": None,
        "garbage": "not-a-cookie",
        "forged-key": other_password,
        "other-user": other_user,
        "expired": expired,
        "tampered-expiry": f"{forever}.{signature}",
        "unsigned": f"{body}.",
        "two-dots": f"{good}.x",
    }


def valid_cookie() -> str:
    return AdminAuth("admin", PASSWORD, session_s=3600).issue()


@pytest.mark.parametrize(
    "cookie_case",
    ["none", "garbage", "forged-key", "other-user", "expired", "tampered-expiry", "unsigned", "two-dots"],
)
def test_admin_routes_refuse_without_a_valid_session(arena: Arena, cookie_case: str) -> None:
    value = cookies()[cookie_case]
    jar = {SESSION_COOKIE: value} if value is not None else {}
    with arena.unchanged(), httpx.Client(cookies=jar, timeout=30, follow_redirects=False) as client:
        for method, path in ROUTES:
            response = client.request(method, arena.url + path, json={} if method == "POST" else None)
            assert response.status_code == 401, (cookie_case, path, response.status_code)
            assert "kilo" not in response.text.lower() and "model_a" not in response.text
        page = client.get(arena.url + "/admin/", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].endswith("/admin/login")
    arena.assert_serving()


def test_a_valid_session_is_served(arena: Arena) -> None:
    """The positive control: the same requests with a real session cookie get the data."""
    with httpx.Client(cookies={SESSION_COOKIE: valid_cookie()}, timeout=30) as client:
        assert client.get(arena.url + "/admin/config").status_code == 200
        assert client.get(arena.url + "/admin/export?format=jsonl").status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"])
def test_a_cross_site_sign_in_is_refused(arena: Arena, origin: str) -> None:
    form = {"username": "admin", "password": PASSWORD}
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        response = client.post(arena.url + "/admin/login", data=form, headers={"Origin": origin})
        assert response.status_code == 403, (origin, response.status_code)
        assert SESSION_COOKIE not in response.cookies
    # The same form from the arena's own page signs in.
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        response = client.post(arena.url + "/admin/login", data=form, headers={"Origin": arena.url})
        assert response.status_code == 303 and SESSION_COOKIE in response.cookies


def test_a_cross_site_admin_event_is_refused(arena: Arena) -> None:
    """What a browser sends to the admin queue from another site: no cookie (it is SameSite=Strict)."""
    with arena.unchanged(), httpx.Client(timeout=30, follow_redirects=False) as client:
        evil = {"Origin": "https://evil.example"}
        body = {"data": [], "fn_index": 0, "session_hash": "x"}
        response = client.post(arena.url + "/admin/gradio_api/queue/join", json=body, headers=evil)
        assert response.status_code == 401
    arena.assert_serving()
