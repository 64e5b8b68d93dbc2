"""Admin sign-in pieces on their own: the password file, the password check, cookies and the limiter."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

from arena.auth import PASSWORD_FILE, AdminAuth, LoginLimiter, admin_password
from arena.settings import ArenaSettings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def test_generated_password_is_kept_private_and_reused(tmp_path: Path) -> None:
    settings = ArenaSettings(data_dir=tmp_path / "data")
    first = admin_password(settings)
    path = tmp_path / "data" / PASSWORD_FILE
    assert first.file == path and first.generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.value) >= 20 and path.read_text().strip() == first.value
    assert str(path) in first.describe() and first.value not in first.describe()

    again = admin_password(settings)
    assert again.value == first.value and not again.generated
    assert sorted(p.name for p in path.parent.iterdir()) == [PASSWORD_FILE], "no staging file left"


def test_a_readable_password_file_is_made_private(tmp_path: Path) -> None:
    (tmp_path / PASSWORD_FILE).write_text("kept-password\n")
    (tmp_path / PASSWORD_FILE).chmod(0o644)
    password = admin_password(ArenaSettings(data_dir=tmp_path))
    assert password.value == "kept-password" and not password.generated
    assert stat.S_IMODE((tmp_path / PASSWORD_FILE).stat().st_mode) == 0o600


def test_processes_starting_together_agree_on_one_password(tmp_path: Path) -> None:
    settings = ArenaSettings(data_dir=tmp_path)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(admin_password(settings).value)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1


def test_a_configured_password_writes_no_file(tmp_path: Path) -> None:
    password = admin_password(ArenaSettings(data_dir=tmp_path, admin_password=SecretStr("s3cret-value")))
    assert password.value == "s3cret-value" and password.file is None
    assert "s3cret-value" not in password.describe()
    assert not (tmp_path / PASSWORD_FILE).exists()
    with pytest.raises(ValueError, match="empty"):
        admin_password(ArenaSettings(data_dir=tmp_path, admin_password=SecretStr("")))


def test_password_check() -> None:
    auth = AdminAuth("admin", "correct horse", session_s=3600)
    assert auth.check("admin", "correct horse")
    assert not auth.check("admin", "correct hors")
    assert not auth.check("admin", "")
    assert not auth.check("root", "correct horse")
    assert not auth.check("admin", "correct horse" + "\u00e9")


def test_session_cookie_round_trip_and_expiry() -> None:
    clock = Clock()
    auth = AdminAuth("admin", "pw-one", session_s=600, now=clock)
    token = auth.issue()
    assert auth.user_of(token) == "admin"
    clock.t += 599
    assert auth.user_of(token) == "admin"
    clock.t += 1
    assert auth.user_of(token) is None, "expired at issue time + session_s"


def test_processes_with_the_same_password_accept_each_others_cookies() -> None:
    one = AdminAuth("admin", "shared-pw", session_s=600)
    two = AdminAuth("admin", "shared-pw", session_s=600)
    assert two.user_of(one.issue()) == "admin" and one.user_of(two.issue()) == "admin"
    assert AdminAuth("admin", "changed-pw", session_s=600).user_of(one.issue()) is None
    assert AdminAuth("operator", "shared-pw", session_s=600).user_of(one.issue()) is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda token: "",
        lambda token: "garbage",
        lambda token: token + "x",
        lambda token: token.replace(".", ".."),
        lambda token: token.split(".")[0] + ".",
        lambda token: token.split(".")[0],
        # the payload re-encoded with a later expiry, old signature kept
        lambda token: _with_payload(token, lambda p: p.replace(p.split(b"|")[1], b"9999999999")),
        lambda token: _with_payload(token, lambda p: p.replace(b"admin", b"root")),
    ],
)
def test_forged_cookies_are_refused(forge) -> None:
    auth = AdminAuth("admin", "pw", session_s=600)
    token = auth.issue()
    assert auth.user_of(token) == "admin"
    assert auth.user_of(forge(token)) is None


def _with_payload(token: str, change) -> str:
    import base64

    body, signature = token.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    new_body = base64.urlsafe_b64encode(change(payload)).rstrip(b"=").decode()
    assert new_body != body
    return f"{new_body}.{signature}"


def test_limiter_blocks_after_five_failures_until_the_window_passes() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=5, window_s=300, now=clock)
    for _ in range(5):  # five failed attempts, the first at t0, 10 s apart
        assert limiter.attempt("10.0.0.1") is None
        clock.t += 10
    wait = limiter.attempt("10.0.0.1")
    assert wait is not None and 300 - 50 <= wait <= 300 - 50 + 1
    assert limiter.attempt("10.0.0.2") is None, "other clients are not affected"
    clock.t += wait
    assert limiter.attempt("10.0.0.1") is None, "the oldest failure left the window"
    assert limiter.attempt("10.0.0.1") is not None, "and the next one counts again"


def test_parallel_attempts_cannot_pass_the_limit() -> None:
    limiter = LoginLimiter(max_failures=5, window_s=300)
    allowed: list[bool] = []
    barrier = threading.Barrier(20)

    def try_once() -> None:
        barrier.wait()
        allowed.append(limiter.attempt("10.0.0.3") is None)

    threads = [threading.Thread(target=try_once) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 5


def test_limiter_forgets_a_client_after_success_and_bounds_its_memory() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=2, window_s=300, max_clients=3, now=clock)
    assert limiter.attempt("a") is None
    limiter.succeeded("a")
    assert limiter.attempt("a") is None and limiter.attempt("a") is None, "the success was forgotten"
    assert limiter.attempt("a") is not None
    for client in ("b", "c", "d"):
        limiter.attempt(client)
        limiter.attempt(client)
    assert limiter.attempt("d") is not None
    assert limiter.attempt("a") is None, "the least recently failing client was forgotten"
