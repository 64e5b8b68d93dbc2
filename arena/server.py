"""One web server for the arena: the public Blocks at ``/``, the admin Blocks at ``/admin`` behind sign-in.

Routes of the outer FastAPI app (all answered before Gradio sees a request):

* ``GET /admin/login`` — a plain sign-in form; ``POST /admin/login`` checks it (rate-limited per
  client address) and sets the session cookie; ``GET|POST /admin/logout`` clears it.
* ``GET /admin/export?format=fastchat|jsonl|parquet`` — every voted battle, streamed as a download,
  byte for byte what ``python -m storage export`` writes.
* everything else under ``/admin`` is the admin Gradio app, and ``/`` the public one.

:class:`AdminGuard`, an ASGI middleware around the whole app, refuses every path under ``/admin``
(Gradio's config, info, queue, upload, file and static routes included, present or future) without
a valid session: a browser asking for a page is sent to the sign-in form (303), anything else gets
401 ``{"detail": "sign in at /admin/login"}``. Neither carries any data.
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import gradio as gr
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import Engine
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arena.app import Services, build_app
from arena.auth import COOKIE_PATH, SESSION_COOKIE, AdminAuth, LoginLimiter
from arena.ui.admin import build_admin_app
from arena.ui.voter import TERMS_HEAD
from storage.transfer.export import EXPORT_FORMATS, export_battles, iter_export_records, json_export_chunks

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/admin"
LOGIN_PATH = f"{ADMIN_PREFIX}/login"
LOGOUT_PATH = f"{ADMIN_PREFIX}/logout"
EXPORT_PATH = f"{ADMIN_PREFIX}/export"
SIGN_IN_REQUIRED = {"detail": f"sign in at {LOGIN_PATH}"}
EXPORT_TYPES = {  # format -> (file extension, media type)
    "fastchat": ("json", "application/json"),
    "jsonl": ("jsonl", "application/x-ndjson"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
}
_NO_STORE = {"Cache-Control": "no-store"}
_STREAM_CHUNK = 1 << 20


def _route_path(scope: Scope) -> str:
    """The request path without the deployment's root path (as Starlette's router sees it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def is_guarded(path: str) -> bool:
    """True for every path under /admin except the sign-in and sign-out pages."""
    under_admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
    return under_admin and path not in (LOGIN_PATH, LOGOUT_PATH)


#: Images and media only from the arena itself: markdown in a model's answer (or anywhere else) cannot
#: make a visitor's browser fetch from another host (a tracking pixel, or a URL carrying the chat out).
CONTENT_SECURITY_POLICY = "img-src 'self' data: blob:; media-src 'self' data: blob:"


class ContentSecurityPolicy:
    """ASGI middleware: adds :data:`CONTENT_SECURITY_POLICY` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_policy)


class AdminGuard:
    """ASGI middleware: no request reaches anything under /admin without a valid admin session."""

    def __init__(self, app: ASGIApp, auth: AdminAuth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_guarded(_route_path(scope)):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if self.auth.user_of(connection.cookies.get(SESSION_COOKIE)) is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        wants_page = scope["method"] in ("GET", "HEAD") and "text/html" in connection.headers.get(
            "accept", ""
        )
        response: Response
        if wants_page:
            response = RedirectResponse(scope.get("root_path", "") + LOGIN_PATH, 303, headers=_NO_STORE)
        else:
            response = JSONResponse(SIGN_IN_REQUIRED, 401, headers=_NO_STORE)
        await response(scope, receive, send)


def login_page(
    error: str | None = None, status_code: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """The sign-in form: plain HTML, no script, no data; ``error`` is shown above it."""
    message = f'<p id="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>VLM Arena — admin sign-in</title>
<style>
body {{ font-family: system-ui, sans-serif; display: flex; justify-content: center; margin-top: 12vh; }}
form {{ display: flex; flex-direction: column; gap: .6rem; width: 18rem; }}
input, button {{ font-size: 1rem; padding: .45rem; }}
#login-error {{ color: #b00020; }}
</style></head>
<body><main><h1>VLM Arena — admin</h1>{message}
<form method="post" action="login" id="login-form">
<label>User <input name="username" id="login-user" autocomplete="username" required></label>
<label>Password <input name="password" id="login-password" type="password"
  autocomplete="current-password" required></label>
<button type="submit" id="login-submit">Sign in</button>
</form></main></body></html>
"""
    return HTMLResponse(body, status_code, headers={**_NO_STORE, **(headers or {})})


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _same_site(request: Request) -> bool:
    """False for a form POSTed from another site: browsers send ``Origin`` with every cross-site POST,
    and here it names another host (or ``null``). Requests without it (non-browser clients) pass."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc == host.split(",")[0].strip()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def export_response(
    engine: Engine, fmt: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Response:
    """Every voted battle as a download in ``fmt``, streamed; a bad format gets 400.

    JSON and JSONL are generated a few hundred records at a time straight from a streaming query.
    Parquet is written row group by row group to a temporary file first (its footer comes last),
    which is unlinked as soon as it is open again for streaming.
    """
    if fmt not in EXPORT_TYPES:
        detail = f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}"
        return JSONResponse({"detail": detail}, 400, headers=_NO_STORE)
    extension, media_type = EXPORT_TYPES[fmt]
    headers = {
        **_NO_STORE,
        "Content-Disposition": f'attachment; filename="arena-battles-{now().date().isoformat()}.{extension}"',
    }
    return StreamingResponse(_export_chunks(engine, fmt), media_type=media_type, headers=headers)


def _export_chunks(engine: Engine, fmt: str) -> Iterator[bytes]:
    try:
        if fmt == "parquet":
            yield from _parquet_chunks(engine)
            return
        with engine.connect() as conn:
            for chunk in json_export_chunks(iter_export_records(conn), as_list=fmt == "fastchat"):
                yield chunk.encode("utf-8")
    except Exception:
        log.exception("admin export (%s) failed; the download is cut short", fmt)
        raise


def _parquet_chunks(engine: Engine) -> Iterator[bytes]:
    fd, name = tempfile.mkstemp(prefix="arena-export-", suffix=".parquet")
    os.close(fd)
    try:
        export_battles(engine, name, "parquet")
        handle = open(name, "rb")  # noqa: SIM115 - closed below, after the file is unlinked
    finally:
        os.unlink(name)
    with handle:
        while chunk := handle.read(_STREAM_CHUNK):
            yield chunk


def build_server(
    services: Services,
    *,
    auth: AdminAuth,
    public: gr.Blocks | None = None,
    admin: gr.Blocks | None = None,
    limiter: LoginLimiter | None = None,
) -> FastAPI:
    """The ASGI app serving both pages (``public``/``admin`` default to the arena's own Blocks)."""
    settings = services.settings
    limiter = limiter or LoginLimiter()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def admin_user(request: Request) -> str | None:
        return auth.user_of(request.cookies.get(SESSION_COOKIE))

    @app.get(LOGIN_PATH, include_in_schema=False)
    def login_form() -> HTMLResponse:
        return login_page()

    @app.post(LOGIN_PATH, include_in_schema=False)
    def login(
        request: Request,
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
    ) -> Response:
        client = _client(request)
        if not _same_site(request):  # another site's page must not sign anyone in, nor guess for free
            log.warning("admin sign-in refused for %s: posted from %s", client, request.headers.get("origin"))
            return login_page("Sign in with the form on this site.", 403)
        wait = limiter.attempt(client)
        if wait is not None:
            log.warning("admin sign-in refused for %s: too many failed attempts", client)
            return login_page(
                "Too many failed attempts. Try again later.", 429, headers={"Retry-After": str(wait)}
            )
        if not auth.check(username, password):
            log.warning("admin sign-in failed from %s", client)
            return login_page("Wrong user name or password.", 401)
        limiter.succeeded(client)
        log.info("admin %s signed in from %s", auth.user, client)
        response = RedirectResponse(
            f"{request.scope.get('root_path', '')}{ADMIN_PREFIX}/", 303, headers=_NO_STORE
        )
        response.set_cookie(
            SESSION_COOKIE,
            auth.issue(),
            max_age=auth.session_s,
            path=COOKIE_PATH,
            secure=_is_https(request),
            httponly=True,
            samesite="strict",
        )
        return response

    @app.api_route(LOGOUT_PATH, methods=["GET", "POST"], include_in_schema=False)
    def logout(request: Request) -> Response:
        response = RedirectResponse(request.scope.get("root_path", "") + LOGIN_PATH, 303, headers=_NO_STORE)
        response.delete_cookie(
            SESSION_COOKIE, path=COOKIE_PATH, secure=_is_https(request), httponly=True, samesite="strict"
        )
        return response

    @app.get(ADMIN_PREFIX, include_in_schema=False)
    def admin_root(request: Request) -> Response:  # the "/" mount would otherwise answer 404
        return RedirectResponse(f"{request.scope.get('root_path', '')}{ADMIN_PREFIX}/", 307)

    @app.get(EXPORT_PATH, include_in_schema=False)
    async def export(request: Request, format: str = "") -> Response:  # noqa: A002 - the query name
        if admin_user(request) is None:  # the guard already refused; kept so the route never relies on it
            return JSONResponse(SIGN_IN_REQUIRED, 401, headers=_NO_STORE)
        response = export_response(services.engine, format)
        if response.status_code == 200:
            log.info("admin export (%s) started for %s", format, _client(request))
        return response

    common: dict[str, Any] = {
        "server_name": settings.host,
        "server_port": settings.port,
        "max_file_size": f"{settings.max_image_mb}mb",
        "show_error": False,
        "footer_links": ["gradio"],
    }
    admin_blocks, public_blocks = admin or build_admin_app(services), public or build_app(services)
    gr.mount_gradio_app(app, admin_blocks, ADMIN_PREFIX, auth_dependency=admin_user, **common)
    # The terms hint (arena.ui.voter): the right first control from the page's first paint.
    gr.mount_gradio_app(app, public_blocks, "/", head=TERMS_HEAD, **common)
    for blocks in (admin_blocks, public_blocks):
        # Gradio checks that a file named in a request was uploaded by a user only once the Blocks
        # "has launched", which mount_gradio_app never marks: without this, a crafted request makes
        # the server copy any file it can read (its secrets included) into the upload folder.
        blocks.has_launched = True
    app.add_middleware(AdminGuard, auth=auth)
    app.add_middleware(ContentSecurityPolicy)
    return app


__all__ = [
    "ADMIN_PREFIX",
    "EXPORT_PATH",
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "SIGN_IN_REQUIRED",
    "CONTENT_SECURITY_POLICY",
    "AdminGuard",
    "ContentSecurityPolicy",
    "build_server",
    "export_response",
    "is_guarded",
    "login_page",
]
