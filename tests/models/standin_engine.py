"""A stand-in for a vLLM or SGLang server: the tests' OpenAI-compatible server as its own process.

    python tests/models/standin_engine.py --port P --model NAME

It takes the engines' flags (``--served-model-name`` wins over ``--model`` / ``--model-path``), ignores
the others, prints one JSON line (where it listens, its arguments, its ``CUDA_VISIBLE_DEVICES``) and
serves until SIGINT or SIGTERM. The pacing flags (``--first-token-delay-s``, ``--chunk-delay-s``,
``--chunk-size``, ``--reply``) set the server's :class:`Behaviour` (the load benchmark answers like a
real engine: ~300 ms to the first token, then ~30 tokens/s). ``tests/models/test_serve.py`` runs
``python -m models serve`` with it as ``--engine-command``. Run as a script, it imports the server
module from its own directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from openai_server import Behaviour, FakeOpenAIServer  # type: ignore[import-not-found]  # this script's directory


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--model", "--model-path", dest="model", default="fake-vlm", help="model id served")
    parser.add_argument("--served-model-name", default=None, help="model id served (wins over --model)")
    defaults = Behaviour()
    parser.add_argument(
        "--first-token-delay-s",
        type=float,
        default=defaults.first_token_delay_s,
        help="seconds between the response headers and the first content chunk",
    )
    parser.add_argument(
        "--chunk-delay-s", type=float, default=defaults.chunk_delay_s, help="seconds between content chunks"
    )
    parser.add_argument("--chunk-size", type=int, default=defaults.chunk_size, help="words per content chunk")
    parser.add_argument("--reply", default=defaults.reply, help="the answer every chat request streams")
    args, ignored = parser.parse_known_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    behaviour = Behaviour(
        reply=args.reply,
        chunk_size=args.chunk_size,
        chunk_delay_s=args.chunk_delay_s,
        first_token_delay_s=args.first_token_delay_s,
    )
    server = FakeOpenAIServer(behaviour, model=args.served_model_name or args.model)
    server.host, server.port = args.host, args.port
    with server:
        started = {
            "base_url": server.base_url,
            "model": server.model,
            "argv": list(sys.argv[1:] if argv is None else argv),
            "ignored": ignored,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        print(json.dumps(started), flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
