"""Admin sign-in: the password, its constant-time check, signed session cookies and a per-client limit.

The password comes from ``ARENA_ADMIN_PASSWORD``; without it one is generated on first start and kept
in ``<data_dir>/admin_password`` (mode 0600), and later starts reuse it. Only where it is gets logged.

A session is a cookie ``<user>|<expiry>|<nonce>`` signed with HMAC-SHA256. The signing key is derived
from the user and password alone (scrypt with a fixed context salt), so every arena process given the
same password accepts the others' cookies, and changing the password invalidates every cookie.
The password check compares scrypt hashes (random per-process salt) with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arena.secret_files import kept_secret
from arena.settings import ArenaSettings

log = logging.getLogger(__name__)

SESSION_COOKIE = "arena_admin_session"
COOKIE_PATH = "/admin"
PASSWORD_FILE = "admin_password"

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_KEY_CONTEXT = b"vlm-arena admin session cookie v1"


@dataclass(frozen=True)
class AdminPassword:
    """The admin password and where it came from (for the start-up line, which never shows it)."""

    value: str
    file: Path | None  # the password file, or None when it came from ARENA_ADMIN_PASSWORD
    generated: bool  # True when this start created the file

    def describe(self) -> str:
        """One line for the start-up log saying where the password is, never what it is."""
        if self.file is None:
            return "admin sign-in at /admin: password from ARENA_ADMIN_PASSWORD"
        verb = "generated and kept" if self.generated else "kept"
        return f"admin sign-in at /admin: password {verb} in {self.file} (readable only by its owner)"


def admin_password(settings: ArenaSettings) -> AdminPassword:
    """The configured password, else the one kept in the data folder (generated there on first start)."""
    if settings.admin_password is not None:
        value = settings.admin_password.get_secret_value()
        if not value:
            raise ValueError("ARENA_ADMIN_PASSWORD is set but empty; set a password or unset it")
        return AdminPassword(value, None, generated=False)
    path = settings.data_dir / PASSWORD_FILE
    try:
        value, generated = kept_secret(path, lambda: secrets.token_urlsafe(18))
    except ValueError:
        raise ValueError(f"{path} is empty; delete it to generate a new admin password") from None
    return AdminPassword(value, path, generated)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AdminAuth:
    """Checks the admin's password and issues and verifies signed, expiring session cookies."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        session_s: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not user or "|" in user:
            raise ValueError("the admin user name must be non-empty and must not contain '|'")
        self.user = user
        self.session_s = session_s
        self._now = now
        self._salt = secrets.token_bytes(16)
        self._hash = hashlib.scrypt(password.encode(), salt=self._salt, **_SCRYPT)
        key_salt = hashlib.sha256(_KEY_CONTEXT + b"\0" + user.encode()).digest()
        self._key = hashlib.scrypt(password.encode(), salt=key_salt, **_SCRYPT)

    @classmethod
    def from_settings(cls, settings: ArenaSettings, password: AdminPassword) -> AdminAuth:
        return cls(settings.admin_user, password.value, session_s=settings.admin_session_s)

    def check(self, user: str, password: str) -> bool:
        """True when both match; the password is compared as a scrypt hash in constant time."""
        candidate = hashlib.scrypt(password.encode(), salt=self._salt, **_SCRYPT)
        password_ok = hmac.compare_digest(candidate, self._hash)
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        return password_ok and user_ok

    def issue(self) -> str:
        """A new session cookie value for the admin, valid for ``session_s`` seconds from now."""
        expires = int(self._now()) + self.session_s
        payload = f"{self.user}|{expires}|{secrets.token_hex(8)}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def user_of(self, token: str | None) -> str | None:
        """The signed-in user for a cookie value, or None if it is missing, forged, or expired."""
        if not token or token.count(".") != 1:
            return None
        body, signature = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(signature)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._sign(payload)):
            return None
        try:
            user, expires, _nonce = payload.decode().split("|")
            expires_at = int(expires)
        except ValueError:
            return None
        if user != self.user or self._now() >= expires_at:
            return None
        return user

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


class LoginLimiter:
    """At most ``max_failures`` failed sign-ins per client address in a sliding ``window_s``.

    An attempt is counted as a failure when it starts (:meth:`attempt`) and forgotten with the
    client's other failures when it succeeds, so a burst of parallel attempts cannot slip past the
    limit. Kept per process, in memory; the number of addresses tracked is capped so a flood of
    addresses cannot grow it without bound (the least recently failing are forgotten first).
    """

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 300.0,
        *,
        max_clients: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures, self.window_s, self.max_clients = max_failures, window_s, max_clients
        self._now = now
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def attempt(self, client: str) -> int | None:
        """Start a sign-in attempt: None if ``client`` may try (counted as failed until
        :meth:`succeeded`), else the seconds until it may try again."""
        with self._lock:
            failures = self._recent(client)
            if len(failures) >= self.max_failures:
                return max(1, int(failures[0] + self.window_s - self._now()) + 1)
            failures.append(self._now())
            self._failures.pop(client, None)
            self._failures[client] = failures  # most recently failing last
            while len(self._failures) > self.max_clients:
                del self._failures[next(iter(self._failures))]
            return None

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures after a successful sign-in."""
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque())
        horizon = self._now() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures
