"""The processes of the load test: a private PostgreSQL cluster, paced model servers, arena processes and
nginx in front of them, each started as its own process and stopped at the end, whatever happens.

Used by ``benchmarks/load_test.py`` and ``tests/e2e/test_nginx_two_processes.py``. nginx reads the
same template operators deploy (``deploy/nginx/arena.conf``), filled in by :func:`render_nginx`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "arena.conf"
STANDIN_ENGINE = ROOT / "tests" / "models" / "standin_engine.py"
PLACEHOLDERS = (
    "ARENA_LISTEN",
    "ARENA_SERVER_NAME",
    "ARENA_BACKEND_1",
    "ARENA_BACKEND_2",
    "ARENA_BODY_LIMIT",
    "ARENA_READ_TIMEOUT",
)
QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200 (raise after ``timeout_s``, or at once if ``alive`` exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{url}: the process serving it exited with {alive.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


# -- process accounting -------------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process, MiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE / 2**20
    except (OSError, IndexError, ValueError):
        return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds one process has used so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def children_of(pid: int) -> list[int]:
    """Direct children of a process (nginx workers, PostgreSQL backends)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


# -- children ------------------------------------------------------------------------------------------


@dataclass
class Child:
    """One started process (in its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Children:
    """Every process the load test started; :meth:`close` stops them all (process groups)."""

    started: list[Child] = field(default_factory=list)

    def start(
        self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> Child:
        handle = log.open("ab")
        try:
            process = subprocess.Popen(
                list(command),
                cwd=ROOT,
                env={**os.environ, **QUIET_ENV, **(env or {})},
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            handle.close()
        child = Child(name, process, log)
        self.started.append(child)
        return child

    @staticmethod
    def stop(child: Child, timeout_s: float = 10.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after ``timeout_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, sig)
            try:
                child.process.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)  # anything the child left behind in its group

    @staticmethod
    def kill9(child: Child) -> None:
        """``kill -9`` the process itself (the fault under test)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        child.process.wait(timeout=10)

    def close(self) -> None:
        for child in reversed(self.started):
            self.stop(child)
        self.started.clear()


# -- PostgreSQL ----------------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return found[-1].parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in ``folder`` on a free port (never the shared server).

    initdb refuses to run as root, so under root the cluster belongs to the ``postgres`` system user
    and every pg_ctl call goes through ``runuser``.
    """

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.port = port or free_port()
        self.bin = postgres_bin()
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout_s: float = 120.0) -> None:
        argv = [str(self.bin / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, timeout=timeout_s, capture_output=True, cwd="/")

    def init(self) -> PrivatePostgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=200"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """Stop the cluster (immediately) if it runs; the folder goes with the caller's temp dir."""
        if self.running or self.postmaster_pid() is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.stop("immediate")


# -- model servers, arena processes, nginx -------------------------------------------------------------


@dataclass(frozen=True)
class Pacing:
    """How the stand-in model servers answer: first token after ``first_token_s``, then one word
    every ``chunk_s`` (about 30 tokens/s)."""

    first_token_s: float = 0.3
    chunk_s: float = 0.033
    words: int = 60
    chunk_words: int = 1  # words per streamed chunk (chunks then come every chunk_s x chunk_words)

    def reply(self) -> str:
        sentence = "The picture shows a small red square drawn on a plain white background near the centre."
        words = (sentence.split() * (self.words // len(sentence.split()) + 1))[: self.words]
        return " ".join(words)


def start_engine(children: Children, folder: Path, model: str, pacing: Pacing) -> tuple[Child, str]:
    """One stand-in OpenAI-compatible server for ``model``; returns it and its base URL (…/v1)."""
    port = free_port()
    command = [
        sys.executable, str(STANDIN_ENGINE), "--port", str(port), "--model", model,
        "--first-token-delay-s", str(pacing.first_token_s),
        "--chunk-delay-s", str(pacing.chunk_s * pacing.chunk_words),
        "--chunk-size", str(pacing.chunk_words), "--reply", pacing.reply(),
    ]  # fmt: skip
    child = children.start(f"engine-{model}", command, folder / f"engine-{model}.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in child.tail().splitlines():
            if line.startswith("{"):
                base_url: str = json.loads(line)["base_url"]
                wait_http(base_url + "/models", 30, child.process)
                return child, base_url
        if not child.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"the stand-in engine for {model} did not start:\n{child.tail()}")


def write_roster(path: Path, engines: Mapping[str, str]) -> Path:
    """A roster of ``openai`` models, one per stand-in engine (model name -> base URL)."""
    lines = ["models:"]
    for name, base_url in engines.items():
        lines += [
            f"  - name: {name}",
            f"    display_name: Load {name}",
            "    backend: openai",
            f'    params: {{base_url: "{base_url}", model: {name}}}',
            "    max_images: 4",
            "    generation: {max_new_tokens: 256}",
            "    timeouts: {first_token_s: 30, total_s: 120}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def shared_settings(
    db_url: str, folder: Path, roster: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The settings every arena process of one database shares (secret key, IP salt, admin password,
    image store, Gradio's upload folder), plus the load test's own: no per-voter rate limits (every
    simulated voter comes from 127.0.0.1) and the leaderboard computed in a thread."""
    return {
        "ARENA_DB": db_url,
        "ARENA_CONFIG": str(roster),
        "ARENA_SECRET_KEY": secrets.token_hex(32),
        "ARENA_IP_SALT": secrets.token_hex(16),
        "ARENA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "ARENA_DATA_DIR": str(folder / "shared-data"),
        "GRADIO_TEMP_DIR": str(folder / "gradio-uploads"),
        "ARENA_LEADERBOARD_WORKER": "false",
        "ARENA_MAX_BATTLES_PER_HOUR": "0",
        "ARENA_MAX_VOTES_PER_DAY": "0",
        "ARENA_HEALTH_INTERVAL_S": "30",
        **(extra or {}),
    }


def migrate(db_url: str, folder: Path) -> None:
    """Create the schema once before the arena processes start."""
    subprocess.run(
        [sys.executable, "-m", "storage", "upgrade", "--db", db_url],
        cwd=ROOT,
        env={**os.environ, **QUIET_ENV},
        check=True,
        capture_output=True,
        timeout=180,
    )


def start_arena(children: Children, folder: Path, name: str, port: int, settings: Mapping[str, str]) -> Child:
    """``python launch.py`` on ``port`` with the shared settings (does not wait; see :func:`wait_arena`)."""
    command = [sys.executable, "launch.py", "--port", str(port)]
    return children.start(name, command, folder / f"{name}.log", {**settings, "ARENA_PORT": str(port)})


def wait_arena(child: Child, port: int, timeout_s: float = 180.0) -> None:
    try:
        wait_http(f"http://127.0.0.1:{port}/", timeout_s, child.process)
    except RuntimeError as exc:
        raise RuntimeError(f"{child.name}: {exc}\n{child.tail()}") from exc


def render_nginx(values: Mapping[str, str], template: Path = NGINX_TEMPLATE) -> str:
    """The deploy template with its ``${ARENA_*}`` placeholders filled in (nginx's own ``$vars`` kept)."""
    missing = [name for name in PLACEHOLDERS if name not in values]
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}")
    text = string.Template(template.read_text()).safe_substitute(values)
    left = [name for name in PLACEHOLDERS if "${" + name + "}" in text]
    if left:
        raise ValueError(f"placeholders left in the nginx config: {left}")
    return text


def nginx_main_config(folder: Path, http_block: str, worker_connections: int = 4096) -> str:
    """A whole nginx.conf around the rendered template: pid, logs and temp paths in ``folder``, in the
    foreground (``daemon off``), so nginx runs as one of the load test's children."""
    temps = {
        name: folder / name
        for name in ("client_body_temp", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp")
    }
    for path in temps.values():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # workers run as nobody when the master is root
    paths = "\n".join(f"    {name}_path {path};" for name, path in temps.items())
    return f"""daemon off;
worker_processes 2;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    log_format arena '$msec $status "$upstream_addr" "$request"';
    access_log {folder / "access.log"} arena;
    default_type application/octet-stream;
{paths}
{http_block}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def start_nginx(
    children: Children,
    folder: Path,
    backends: Sequence[int],
    *,
    body_limit: str = "64m",
    read_timeout: str = "360s",
) -> tuple[Child, int]:
    """nginx on a free 127.0.0.1 port in front of the arena processes on ``backends``; returns it and
    its port."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    values = {
        "ARENA_LISTEN": f"127.0.0.1:{port}",
        "ARENA_SERVER_NAME": "localhost",
        "ARENA_BACKEND_1": f"127.0.0.1:{backends[0]}",
        "ARENA_BACKEND_2": f"127.0.0.1:{backends[1]}",
        "ARENA_BODY_LIMIT": body_limit,
        "ARENA_READ_TIMEOUT": read_timeout,
    }
    config = folder / "nginx.conf"
    config.write_text(nginx_main_config(folder, render_nginx(values)))
    command = [binary, "-e", str(folder / "error.log"), "-c", str(config)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
    child = children.start("nginx", command, folder / "nginx.out")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"nginx exited:\n{child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return child, port
        time.sleep(0.1)
    raise RuntimeError("nginx did not listen within 20 s")


def joins_per_backend(nginx_folder: Path) -> dict[str, int]:
    """How many event joins nginx passed to each arena process so far (from its access log)."""
    counts: dict[str, int] = {}
    try:
        lines = (nginx_folder / "access.log").read_text().splitlines()
    except OSError:
        return counts
    for line in lines:
        found = re.match(r'\S+ \d+ "([^"]*)" "(.*)"$', line)
        if found and "/gradio_api/queue/join" in found[2]:
            upstream = found[1].split(", ")[
                -1
            ]  # a retried request lists every process tried; the last served
            counts[upstream] = counts.get(upstream, 0) + 1
    return counts
