"""Several arena processes starting at once against an empty database migrate it exactly once."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from storage.db import MIGRATIONS_DIR, make_engine

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4

#: Each child imports everything first, says it is ready, then waits for the go file so that the
#: upgrades really start together; Alembic's INFO log ("Running upgrade A -> B") goes to stdout.
CHILD = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
from storage.db import upgrade
go, ready, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ready.touch()
while not go.exists():
    time.sleep(0.001)
upgrade(url)
"""

RUNNING = re.compile(r"Running upgrade (\w*) ?-> (\w+)")


def _revision_steps() -> list[tuple[str, str]]:
    """Every (down revision, revision) step from an empty database to head, as Alembic logs them."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    steps = [
        (str(script.down_revision or ""), script.revision)
        for script in ScriptDirectory.from_config(config).walk_revisions()
    ]
    return sorted(steps, key=lambda step: step[1])


def test_four_processes_upgrade_an_empty_database_once(empty_db_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(go), str(flag), empty_db_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for flag in ready
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline, "the children did not get ready"
            assert all(child.poll() is None for child in children), "a child died before the start"
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=300)[0] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for child, output in zip(children, outputs, strict=True):
        assert child.returncode == 0, output
    ran = sorted((m.group(1), m.group(2)) for out in outputs for m in RUNNING.finditer(out))
    steps = _revision_steps()
    assert len(steps) >= 7
    assert ran == steps  # every migration ran, each exactly once across the four processes
    migrated = [out for out in outputs if RUNNING.search(out)]
    assert len(migrated) == 1  # one process did the whole upgrade; the others found it done

    engine = make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        engine.dispose()
    head = max(steps, key=lambda step: step[1])[1]
    assert versions == [head]
