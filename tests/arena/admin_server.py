"""A real arena server (uvicorn, in this process) with scripted models and a few imported votes.

Shared by the admin HTTP tests and the admin browser tests. The admin page given to it is a small
probe Blocks that shows the secret model names and a vote count and has one queued event, so the
tests can tell data from no data and check a queue round-trip under the /admin prefix.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from arena.app import Services, build_services
from arena.auth import AdminAuth
from arena.server import build_server
from arena.settings import ArenaSettings
from storage.db import make_engine, upgrade
from storage.transfer.importer import import_battles
from tests.e2e.harness import free_port

PASSWORD = "probe-password-7f3a"
IMPORTED = ("zeta-secret-vlm", "omega-hidden-vlm")  # only in imported votes
ROSTER_NAMES = ("alpha-scripted", "Alpha Scripted Display", "bravo-scripted", "Bravo Scripted Display")
VOTE_MARKER = "votes counted: 31337"
SECRETS = (*IMPORTED, *ROSTER_NAMES, "31337")

ROSTER = """
models:
  - name: alpha-scripted
    display_name: Alpha Scripted Display
    organization: Test Org
    backend: scripted
  - name: bravo-scripted
    display_name: Bravo Scripted Display
    organization: Test Org
    backend: scripted
"""


@dataclass
class RunningServer:
    url: str  # without a trailing slash
    app: FastAPI
    services: Services
    db_url: str
    session_s: int

    def auth(self, **kwargs: object) -> AdminAuth:
        """An AdminAuth as another arena process with the same password would build it."""
        return AdminAuth("admin", PASSWORD, session_s=self.session_s, **kwargs)  # type: ignore[arg-type]


def battle_records() -> list[dict[str, object]]:
    """Three voted battles between the imported models (one with a non-ASCII prompt)."""
    records = []
    for i, (winner, prompt) in enumerate(
        [("model_a", "What is this?"), ("tie", "Qué es esto — ¿un gato?"), ("model_b", "Count")]
    ):
        records.append(
            {
                "question_id": f"imported-{i}",
                "model_a": IMPORTED[i % 2],
                "model_b": IMPORTED[(i + 1) % 2],
                "winner": winner,
                "judge": f"voter-{i}",
                "turn": 1,
                "anony": True,
                "tstamp": 1_700_000_000.0 + i,
                "conversation_a": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": "A"},
                ],
                "conversation_b": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": "B"},
                ],
            }
        )
    return records


def probe(request: gr.Request) -> str:
    """The probe event: the marker and who Gradio says is signed in (the server's auth dependency)."""
    return f"{VOTE_MARKER} for {request.username}"


def probe_admin_app() -> gr.Blocks:
    """An admin page that holds data (names, a count) and one queued event."""
    with gr.Blocks(title="probe admin", analytics_enabled=False) as app:
        gr.Markdown(f"# probe admin\n{', '.join(SECRETS)}", elem_id="probe-data")
        out = gr.Textbox(elem_id="probe-out", label="out")
        button = gr.Button("Count votes", elem_id="probe-button")
        button.click(probe, None, out, api_name="probe")
    return app


@contextmanager
def running_server(tmp: Path, *, session_s: int = 600) -> Iterator[RunningServer]:
    """Start the arena's server with uvicorn on a free port in a thread; stop it afterwards."""
    roster = tmp / "roster.yaml"
    roster.write_text(ROSTER)
    db_url = f"sqlite:///{tmp / 'arena.db'}"
    upgrade(db_url)
    battles = tmp / "battles.jsonl"
    battles.write_text("".join(json.dumps(r) + "\n" for r in battle_records()))
    engine = make_engine(db_url)
    import_battles(engine, battles, progress=False)
    engine.dispose()

    port = free_port()
    settings = ArenaSettings(
        config=roster,
        db=db_url,
        port=port,
        data_dir=tmp / "data",
        cache_dir=tmp / "cache",
        admin_password=SecretStr(PASSWORD),
        admin_session_s=session_s,
        health_interval_s=0,
    )
    services = build_services(settings)
    auth = AdminAuth(settings.admin_user, PASSWORD, session_s=session_s)
    app = build_server(services, auth=auth, admin=probe_admin_app())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the arena server did not start")
        time.sleep(0.05)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, services, db_url, session_s)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        services.snapshots.stop()
        services.engine.dispose()
