"""Serve the VLM Arena: ``python launch.py [--config FILE] [--db URL] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def parse_args(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description="Serve the VLM Arena. Every option can also be set as an ARENA_* environment variable.",
    )
    parser.add_argument("--config", type=Path, help="roster YAML (default: configs/demo.yaml, offline demo)")
    parser.add_argument("--db", help="database URL or SQLite file (default: sqlite:///arena.db)")
    parser.add_argument("--host", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: 7860)")
    parser.add_argument(
        "--data-dir", type=Path, help="where uploaded images are stored (default: arena_data)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="where demo models are built (default: ~/.cache/vlm-arena)"
    )
    parser.add_argument("--seed", type=int, help="seed for pair sampling (reproducible demos and tests)")
    args = parser.parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    overrides = parse_args(argv)
    from arena.app import serve
    from arena.settings import ArenaSettings

    serve(ArenaSettings(**overrides))


if __name__ == "__main__":
    main()
