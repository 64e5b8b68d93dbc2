"""``python -m models serve``: run a roster's local models on vLLM or SGLang, and write a roster that
reaches them through the ``openai`` backend.

For each enabled ``hf`` entry of the roster one OpenAI-compatible inference server is started as a
subprocess (its own process group, output in ``<out>-logs/NAME.log``), with the entry's weights,
dtype, a tensor-parallel size from its GPUs, the optional ``--max-model-len`` and a free port. Once
every server answers ``GET /v1/models`` with the entry's name, the command writes a roster in which
those entries use ``backend: openai`` against their servers (every other entry and field unchanged),
prints how to start the arena on it, and keeps the servers running until Ctrl-C or SIGTERM, when it
stops every server's whole process group (SIGTERM, then SIGKILL after ``--stop-timeout``).

GPU rule (``--gpus 0,1``; default ``$CUDA_VISIBLE_DEVICES``, else ``0``). ``cuda:N`` in an entry means
the N-th listed GPU, as it would for an arena process started with those GPUs visible:

* ``device_map`` set (a model sharded over GPUs): every listed GPU, tensor-parallel size = their number;
* ``device: cuda:N``: the N-th listed GPU; ``cuda`` or ``auto``: the first one (where the arena would
  have loaded it);
* ``device: cpu``: the listed GPUs in turn (the first cpu entry on the first GPU, the next on the next).

Each server sees only its GPUs (``CUDA_VISIBLE_DEVICES``). Where servers share a GPU, each is given an
equal part of ``--gpu-memory`` (vLLM ``--gpu-memory-utilization``, SGLang ``--mem-fraction-static``);
a server alone on its GPUs keeps the engine's default. An entry with ``tiny_demo`` instead of a path
is built first into ``--cache-dir`` (the arena's cache, ``ARENA_CACHE_DIR``) and served from there.
Disabled entries are left as they are. ``max_concurrency`` and ``max_queue`` do not apply: the engine
batches concurrent requests itself.

Engines are optional extras (``pip install -e ".[vllm]"`` or ``".[sglang]"``). ``--engine-command``
(or ``ARENA_SERVE_COMMAND``) replaces ``python -m <engine module>`` by another command that takes the
same flags, e.g. a container wrapper, or the tests' stand-in server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from models.params import HFParams
from models.roster import ModelSpec, Roster, RosterError, load_roster, parse_roster
from models.server_processes import (
    EXIT_OK,
    EXIT_USAGE,
    WILDCARD_HOSTS,
    RunningServer,
    ServeError,
    ServerPlan,
    Stop,
    start_server,
    stop_on_signals,
    stop_servers,
    wait_ready,
    watch,
)

Engine = Literal["vllm", "sglang"]
ENGINE_NAMES: tuple[Engine, ...] = get_args(Engine)

HELP = "start vLLM or SGLang servers for a roster's hf models and write a roster that uses them"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""
EPILOG = """examples:
  python -m models serve configs/example-gpu.yaml --engine vllm --gpus 0,1 --out served-roster.yaml
  python launch.py --config served-roster.yaml          # in another shell, once the roster is written
"""

SERVE_COMMAND_ENV = "ARENA_SERVE_COMMAND"


@dataclass(frozen=True)
class EngineInfo:
    """How to start one engine's OpenAI-compatible server, and how to install it."""

    label: str
    module: str
    extra: str


ENGINES: dict[Engine, EngineInfo] = {
    "vllm": EngineInfo("vLLM", "vllm.entrypoints.openai.api_server", "vllm"),
    "sglang": EngineInfo("SGLang", "sglang.launch_server", "sglang"),
}


# -- planning (pure) ------------------------------------------------------------------------------------


def parse_gpus(text: str) -> tuple[str, ...]:
    """``"0,1"`` -> ``("0", "1")``; GPU indices or UUIDs as CUDA_VISIBLE_DEVICES takes them."""
    gpus = tuple(part.strip() for part in text.split(",") if part.strip())
    if not gpus:
        raise ServeError(f"--gpus lists no GPU: {text!r}", EXIT_USAGE)
    if len(set(gpus)) != len(gpus):
        raise ServeError(f"--gpus lists a GPU twice: {text!r}", EXIT_USAGE)
    return gpus


def default_gpus() -> str:
    """The GPUs ``--gpus`` defaults to: those this process may see, else GPU 0."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() or "0"


def served_entries(roster: Roster) -> list[tuple[ModelSpec, HFParams]]:
    """The enabled ``hf`` entries, in roster order, with their validated params."""
    return [(spec, HFParams.model_validate(spec.params)) for spec in roster.enabled() if spec.backend == "hf"]


def assign_gpus(entries: Sequence[tuple[str, HFParams]], gpus: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each entry's GPUs by the rule of the module docstring (``device_map``, ``cuda:N``, ``cpu``)."""
    assigned: dict[str, tuple[str, ...]] = {}
    next_cpu = 0
    for name, params in entries:
        if params.device_map is not None:
            assigned[name] = tuple(gpus)
            continue
        match = re.fullmatch(r"cuda:(\d+)", params.device)
        if match:
            index = int(match.group(1))
            if index >= len(gpus):
                raise ServeError(
                    f"model {name!r}: device {params.device} needs at least {index + 1} GPUs, "
                    f"but --gpus lists {len(gpus)} ({','.join(gpus)})",
                    EXIT_USAGE,
                )
            assigned[name] = (gpus[index],)
        elif params.device == "cpu":
            assigned[name] = (gpus[next_cpu % len(gpus)],)
            next_cpu += 1
        else:
            assigned[name] = (gpus[0],)
    return assigned


def memory_fractions(assigned: dict[str, tuple[str, ...]], budget: float) -> dict[str, float | None]:
    """Each server's share of GPU memory: ``budget`` split equally between servers sharing a GPU
    (the smallest share over its GPUs); None for a server alone on its GPUs (the engine's default)."""
    users: dict[str, int] = {}
    for gpus in assigned.values():
        for gpu in gpus:
            users[gpu] = users.get(gpu, 0) + 1
    fractions: dict[str, float | None] = {}
    for name, gpus in assigned.items():
        most = max((users[gpu] for gpu in gpus), default=1)
        fractions[name] = None if most <= 1 else round(budget / most, 4)
    return fractions


def engine_flags(engine: Engine, plan: ServerPlan) -> list[str]:
    """The engine's documented command-line flags for ``plan``."""
    if engine == "vllm":
        flags = ["--model", plan.model_path, "--served-model-name", plan.name, "--dtype", plan.dtype]
        flags += ["--tensor-parallel-size", str(plan.tensor_parallel)]
        flags += ["--host", plan.host, "--port", str(plan.port)]
        flags += ["--limit-mm-per-prompt", json.dumps({"image": plan.max_images})]
        if plan.max_model_len is not None:
            flags += ["--max-model-len", str(plan.max_model_len)]
        if plan.memory_fraction is not None:
            flags += ["--gpu-memory-utilization", str(plan.memory_fraction)]
    else:
        flags = ["--model-path", plan.model_path, "--served-model-name", plan.name, "--dtype", plan.dtype]
        flags += ["--tp-size", str(plan.tensor_parallel), "--host", plan.host, "--port", str(plan.port)]
        if plan.max_model_len is not None:
            flags += ["--context-length", str(plan.max_model_len)]
        if plan.memory_fraction is not None:
            flags += ["--mem-fraction-static", str(plan.memory_fraction)]
    if plan.trust_remote_code:
        flags.append("--trust-remote-code")
    return flags


def engine_launcher(engine: Engine, override: str | None = None) -> list[str]:
    """The command that starts ``engine``'s server: ``override`` (shell words) if given, otherwise
    ``python -m <module>``; ServeError with the install command when the engine is not installed."""
    if override and override.strip():
        return shlex.split(override)
    info = ENGINES[engine]
    if importlib.util.find_spec(info.module.split(".", 1)[0]) is None:
        raise ServeError(
            f"{info.label} is not installed in this Python environment ({sys.executable}).\n"
            f'Install it with:  pip install -e ".[{info.extra}]"   (or: pip install {info.extra})\n'
            f"or name another command that starts it with --engine-command or {SERVE_COMMAND_ENV}.",
            EXIT_USAGE,
        )
    return [sys.executable, "-m", info.module]


def server_command(
    engine: Engine, plan: ServerPlan, launcher: Sequence[str], extra: Sequence[str] = ()
) -> list[str]:
    """The whole argv of one server: the launcher, the engine's flags for ``plan``, then ``extra``."""
    return [*launcher, *engine_flags(engine, plan), *extra]


def model_source(params: HFParams, cache_dir: Path) -> str:
    """The path or hub id a server loads; a ``tiny_demo`` model is built into ``cache_dir`` first."""
    if params.model is not None:
        return params.model
    assert params.tiny_demo is not None  # HFParams guarantees one of the two
    from models.tiny import ensure_tiny_model

    return str(ensure_tiny_model(params.tiny_demo, cache_dir).resolve())


def free_port(host: str) -> int:
    """A port nobody listens on at ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in WILDCARD_HOSTS else "", 0))
        return int(sock.getsockname()[1])


def rewrite_roster(data: dict[str, Any], plans: Sequence[ServerPlan]) -> dict[str, Any]:
    """A copy of the roster data in which each planned entry uses the ``openai`` backend against its
    server; every other entry, and every other field of these entries, is left as it was."""
    by_name = {plan.name: plan for plan in plans}
    entries = []
    for entry in data["models"]:
        plan = by_name.get(str(entry.get("name"))) if isinstance(entry, dict) else None
        if plan is None:
            entries.append(entry)
            continue
        entries.append(
            {**entry, "backend": "openai", "params": {"base_url": plan.base_url, "model": plan.name}}
        )
    return {**data, "models": entries}


def render_roster(data: dict[str, Any], header: str) -> str:
    """The roster as YAML under a comment ``header``; checked to load back as a valid roster."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=110)
    parse_roster(yaml.safe_load(text), "<served roster>")
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comment + text


# -- the command ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m models serve``."""
    parser.add_argument("roster", type=Path, help="the roster YAML whose enabled hf entries are served")
    parser.add_argument("--engine", choices=ENGINE_NAMES, required=True, help="the inference engine")
    parser.add_argument(
        "--gpus", default=None, help="GPUs to use, e.g. 0,1 (default: $CUDA_VISIBLE_DEVICES, else 0)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("served-roster.yaml"), help="where to write the served roster"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the servers listen on")
    parser.add_argument(
        "--base-port", type=int, default=0, help="first port (then +1 per server); 0: free ports"
    )
    parser.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="longest sequence (prompt + answer) per server; default: the model config's",
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=0.9,
        help="share of a GPU's memory split between servers that share it (default 0.9)",
    )
    parser.add_argument(
        "--engine-command",
        default=None,
        help=f"command that starts a server instead of `python -m <engine module>` (or ${SERVE_COMMAND_ENV})",
    )
    parser.add_argument(
        "--engine-args", default="", help="extra flags added to every server's command, e.g. '--seed 0'"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where tiny_demo models are built (default: $ARENA_CACHE_DIR or ~/.cache/vlm-arena)",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="server logs (default: <out>-logs/)")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=1200.0,
        help="seconds to wait for every server (default 1200)",
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL (default 30)"
    )


def plan_servers(roster: Roster, args: argparse.Namespace, cache_dir: Path) -> list[ServerPlan]:
    """One :class:`ServerPlan` per enabled hf entry, GPUs and ports assigned."""
    entries = served_entries(roster)
    gpus = parse_gpus(args.gpus if args.gpus is not None else default_gpus())
    assigned = assign_gpus([(spec.name, params) for spec, params in entries], gpus)
    fractions = memory_fractions(assigned, args.gpu_memory)
    plans = []
    for index, (spec, params) in enumerate(entries):
        port = args.base_port + index if args.base_port else free_port(args.host)
        plans.append(
            ServerPlan(
                name=spec.name,
                model_path=model_source(params, cache_dir),
                dtype=params.dtype,
                gpus=assigned[spec.name],
                host=args.host,
                port=port,
                max_model_len=args.max_model_len,
                memory_fraction=fractions[spec.name],
                trust_remote_code=params.trust_remote_code,
                max_images=spec.max_images,
            )
        )
    return plans


def _log_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".log"


def run(args: argparse.Namespace) -> int:
    """Start the servers, write the served roster, and keep serving until Ctrl-C or SIGTERM."""
    engine: Engine = args.engine
    if not 0 < args.gpu_memory <= 1:
        raise ServeError(f"--gpu-memory must be in (0, 1], got {args.gpu_memory}", EXIT_USAGE)
    override = args.engine_command or os.environ.get(SERVE_COMMAND_ENV)
    launcher = engine_launcher(engine, override)
    try:
        roster = load_roster(args.roster)
        data = yaml.safe_load(args.roster.read_text(encoding="utf-8"))
    except RosterError as exc:
        raise ServeError(str(exc), EXIT_USAGE) from None
    skipped = [spec.name for spec in roster.models if spec.backend == "hf" and not spec.enabled]
    if skipped:
        print(f"left as they are (disabled): {', '.join(skipped)}", flush=True)
    cache_dir = args.cache_dir or Path(
        os.environ.get("ARENA_CACHE_DIR") or Path.home() / ".cache" / "vlm-arena"
    )
    out: Path = args.out
    log_dir: Path = args.log_dir or out.with_name(f"{out.stem}-logs")
    extra = shlex.split(args.engine_args)
    servers: list[RunningServer] = []
    with stop_on_signals():
        try:
            plans = plan_servers(roster, args, cache_dir)
            if not plans:
                raise ServeError(f"{args.roster} has no enabled hf entry to serve", EXIT_USAGE)
            for plan in plans:
                argv = server_command(engine, plan, launcher, extra)
                server = start_server(argv, plan, log_dir / _log_name(plan.name))
                servers.append(server)
                print(
                    f"started {plan.name} (pid {server.process.pid}, GPUs {','.join(plan.gpus)}, "
                    f"tp {plan.tensor_parallel}) on port {plan.port}; log: {server.log_path}",
                    flush=True,
                )
            wait_ready(servers, args.startup_timeout)
            write_served_roster(out, data, plans, f"python -m models serve {args.roster} --engine {engine}")
            print(f"wrote the served roster to {out}", flush=True)
            print(f"start the arena on it:  python launch.py --config {out}", flush=True)
            print("press Ctrl-C to stop the servers", flush=True)
            return watch(servers)
        except Stop as stop:
            print(f"{stop}: stopping {len(servers)} server(s)", file=sys.stderr, flush=True)
            return EXIT_OK
        finally:
            stop_servers(servers, args.stop_timeout)


def write_served_roster(out: Path, data: dict[str, Any], plans: Sequence[ServerPlan], command: str) -> None:
    """Write the rewritten roster to ``out`` in one step (a reader never sees half a file)."""
    header = (
        f"Written by `{command}`. Served by "
        + ", ".join(f"{p.name} -> {p.base_url}" for p in plans)
        + ".\nThese servers run as long as that command does."
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_roster(rewrite_roster(data, plans), header), encoding="utf-8")
    os.replace(tmp, out)
