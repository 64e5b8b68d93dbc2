"""Running inference servers for ``python -m models serve``: start each in its own process group,
wait until it answers ``GET /v1/models``, watch it, and stop its whole group (no orphans).

Kept apart from :mod:`models.serve` (which plans the servers and rewrites the roster) so that each
file stays small; nothing here knows an engine's flags or a roster's format.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POLL_S = 0.25
LOG_TAIL_LINES = 40
PR_SET_PDEATHSIG = 1
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class ServeError(Exception):
    """The command cannot go on; ``status`` is the exit status (2: usage or set-up, 1: a server)."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerPlan:
    """One inference server to start: what it serves, where, and on which GPUs."""

    name: str
    model_path: str
    dtype: str
    gpus: tuple[str, ...]
    host: str
    port: int
    max_model_len: int | None = None
    memory_fraction: float | None = None
    trust_remote_code: bool = False
    max_images: int = 4

    @property
    def tensor_parallel(self) -> int:
        """One tensor-parallel rank per GPU."""
        return max(1, len(self.gpus))

    @property
    def base_url(self) -> str:
        """The API root the served roster uses (a wildcard bind address is replaced by this host's name)."""
        host = socket.gethostname() if self.host in WILDCARD_HOSTS else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def local_url(self) -> str:
        """The API root as this machine reaches it (loopback for a wildcard bind address)."""
        if self.host in WILDCARD_HOSTS:
            return f"http://{'[::1]' if self.host == '::' else '127.0.0.1'}:{self.port}/v1"
        return self.base_url


# -- processes ------------------------------------------------------------------------------------


@dataclass
class RunningServer:
    """A started server: its plan, process (leader of its own process group) and log file."""

    plan: ServerPlan
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the leader's pid is the group id


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the serve process dies without stopping it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_server(argv: Sequence[str], plan: ServerPlan, log_path: Path) -> RunningServer:
    """Start one server in its own process group, seeing only its GPUs, output appended to its log."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(plan.gpus)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} {shlex.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
    return RunningServer(plan, process, log_path)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a server log (what to show when it failed)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def probe_models(base_url: str, timeout_s: float = 2.0) -> list[str] | None:
    """The model ids ``GET {base_url}/models`` lists, or None while the server does not answer.
    Proxy variables are ignored: the servers are this machine's own."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{base_url}/models", timeout=timeout_s) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [str(item.get("id")) for item in data if isinstance(item, dict)]


def wait_ready(servers: Sequence[RunningServer], timeout_s: float) -> None:
    """Return once every server lists its model at ``/v1/models``; ServeError with the log tail of a
    server that exits first, lists other models, or is not ready after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    pending = list(servers)
    while pending:
        for server in list(pending):
            code = server.process.poll()
            if code is not None:
                raise ServeError(
                    f"the server for {server.plan.name!r} exited with status {code} before it was ready; "
                    f"last lines of {server.log_path}:\n{log_tail(server.log_path)}"
                )
            ids = probe_models(server.plan.local_url)
            if ids is None:
                continue
            if server.plan.name not in ids:
                raise ServeError(
                    f"the server for {server.plan.name!r} answers at {server.plan.base_url} but serves "
                    f"{ids}, not {server.plan.name!r}"
                )
            print(f"ready: {server.plan.name} at {server.plan.base_url}", flush=True)
            pending.remove(server)
        if pending and time.monotonic() > deadline:
            names = ", ".join(repr(s.plan.name) for s in pending)
            tails = "\n".join(f"--- {s.log_path}:\n{log_tail(s.log_path)}" for s in pending)
            raise ServeError(f"not ready after {timeout_s:g} s: {names}\n{tails}")
        if pending:
            time.sleep(POLL_S)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_servers(servers: Sequence[RunningServer], timeout_s: float) -> None:
    """Stop every server's whole process group: SIGTERM, then SIGKILL after ``timeout_s``; a second
    Ctrl-C or SIGTERM meanwhile skips the wait. Leaves no member of any group running."""
    hurry: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: hurry.append(signum)) for s in _STOP_SIGNALS}
    try:
        for server in servers:
            _signal_group(server.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        alive = list(servers)
        while alive and not hurry and time.monotonic() < deadline:
            for server in list(alive):
                server.process.poll()  # reap the leader, so that only live members keep the group
                if server.process.returncode is not None and not _signal_group(server.pgid, 0):
                    alive.remove(server)
            time.sleep(0.05)
        for server in alive:
            _signal_group(server.pgid, signal.SIGKILL)
        for server in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Stop(Exception):
    """SIGTERM or SIGINT arrived: stop the servers and exit."""


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Stop` inside the block."""
    previous = {s: signal.signal(s, _raise_stop) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def watch(servers: Sequence[RunningServer]) -> int:
    """Keep going while any server runs; report each one that exits (the arena's health checks take
    its model out of battles). Returns 1 once none is left; :class:`Stop` ends it earlier."""
    reported: set[str] = set()
    while True:
        for server in servers:
            code = server.process.poll()
            if code is not None and server.plan.name not in reported:
                reported.add(server.plan.name)
                print(
                    f"server for {server.plan.name!r} exited with status {code}; the arena's health checks "
                    f"will take it out of battles. Last lines of {server.log_path}:\n{log_tail(server.log_path)}",
                    file=sys.stderr,
                    flush=True,
                )
        if len(reported) == len(servers):
            print("every server has exited", file=sys.stderr, flush=True)
            return EXIT_FAILED
        time.sleep(1.0)
