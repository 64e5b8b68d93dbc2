"""``python -m models serve``: engine commands, GPU placement, roster rewriting, and the whole command
against a stand-in engine.

The end-to-end tests start ``python -m models serve`` as a subprocess with ``--engine-command``
pointing at ``tests/models/standin_engine.py`` (the tests' OpenAI-compatible server as its own
process), wait for the served roster, talk to the stand-in through the real ``openai`` backend, then
signal the command and check that no server survives.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from models.base import GenerationParams, Message
from models.cli import build_parser
from models.openai_compat import OpenAIBackend
from models.params import HFParams
from models.registry import BackendContext, create_backend
from models.roster import load_roster, parse_roster
from models.serve import (
    ServeError,
    ServerPlan,
    assign_gpus,
    engine_launcher,
    memory_fractions,
    plan_servers,
    render_roster,
    rewrite_roster,
    server_command,
)
from tests.models.openai_server import Behaviour

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = f"{sys.executable} {ROOT / 'tests' / 'models' / 'standin_engine.py'}"
EXAMPLE_GPU = ROOT / "configs" / "example-gpu.yaml"

PLAN = ServerPlan(
    name="qwen-vl",
    model_path="/models/qwen",
    dtype="bfloat16",
    gpus=("2", "3"),
    host="127.0.0.1",
    port=8123,
    max_model_len=4096,
    memory_fraction=0.45,
    trust_remote_code=True,
    max_images=3,
)


def serve_args(*extra: str) -> Any:
    """Parsed ``python -m models serve`` options, as the command gets them."""
    return build_parser().parse_args(["serve", "roster.yaml", "--engine", "vllm", *extra])


# -- commands -------------------------------------------------------------------------------------------


def test_vllm_command_carries_path_dtype_tp_length_port_and_host() -> None:
    launcher = engine_launcher("vllm", "python /opt/standin.py --verbose")
    assert server_command("vllm", PLAN, launcher, ["--seed", "0"]) == [
        "python", "/opt/standin.py", "--verbose",
        "--model", "/models/qwen", "--served-model-name", "qwen-vl", "--dtype", "bfloat16",
        "--tensor-parallel-size", "2", "--host", "127.0.0.1", "--port", "8123",
        "--limit-mm-per-prompt", '{"image": 3}', "--max-model-len", "4096",
        "--gpu-memory-utilization", "0.45", "--trust-remote-code",
        "--seed", "0",
    ]  # fmt: skip


def test_sglang_command_carries_path_dtype_tp_length_port_and_host() -> None:
    plan = ServerPlan(name="internvl", model_path="OpenGVLab/InternVL3-8B", dtype="auto", gpus=("0",),
                      host="0.0.0.0", port=30000)  # fmt: skip
    assert server_command("sglang", plan, ["sglang-standin"]) == [
        "sglang-standin",
        "--model-path", "OpenGVLab/InternVL3-8B", "--served-model-name", "internvl", "--dtype", "auto",
        "--tp-size", "1", "--host", "0.0.0.0", "--port", "30000",
    ]  # fmt: skip
    assert server_command("sglang", PLAN, ["x"])[-7:] == [
        "--port", "8123", "--context-length", "4096", "--mem-fraction-static", "0.45", "--trust-remote-code"
    ]  # fmt: skip
    # a wildcard bind address is not an address to connect to: the roster gets this host's name
    assert plan.base_url == f"http://{socket.gethostname()}:30000/v1"
    assert plan.local_url == "http://127.0.0.1:30000/v1"  # where the command itself checks it


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_engine_is_a_usage_error_naming_the_extra() -> None:
    with pytest.raises(ServeError) as info:
        engine_launcher("vllm")
    assert info.value.status == 2
    assert 'pip install -e ".[vllm]"' in str(info.value)


def test_gpu_placement_rule() -> None:
    entries = [
        ("sharded", HFParams(model="m", device_map="auto")),
        ("second", HFParams(model="m", device="cuda:1")),
        ("plain-cuda", HFParams(model="m", device="cuda")),
        ("auto", HFParams(model="m")),
        ("cpu-1", HFParams(model="m", device="cpu")),
        ("cpu-2", HFParams(model="m", device="cpu")),
        ("cpu-3", HFParams(model="m", device="cpu")),
    ]
    assigned = assign_gpus(entries, ("4", "5"))
    assert assigned == {
        "sharded": ("4", "5"),
        "second": ("5",),
        "plain-cuda": ("4",),
        "auto": ("4",),
        "cpu-1": ("4",),
        "cpu-2": ("5",),
        "cpu-3": ("4",),
    }
    # GPU 4 serves 5 models, GPU 5 serves 3: each gets its share; "sharded" the smaller of its two
    fractions = memory_fractions(assigned, 0.9)
    assert fractions["second"] == fractions["cpu-2"] == 0.3
    assert fractions["auto"] == fractions["sharded"] == 0.18
    assert memory_fractions({"alone": ("0",), "pair": ("1", "2")}, 0.9) == {"alone": None, "pair": None}
    with pytest.raises(ServeError, match=r"'second': device cuda:1 needs at least 2 GPUs"):
        assign_gpus(entries[1:2], ("0",))


def test_plans_for_the_example_gpu_roster(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE_GPU.read_text(encoding="utf-8"))
    roster = parse_roster(data)
    plans = plan_servers(roster, serve_args("--gpus", "0,1", "--base-port", "9000"), tmp_path)
    summary = [(p.name, p.model_path, p.dtype, p.gpus, p.port, p.memory_fraction) for p in plans]
    assert summary == [  # the 72B model is disabled: not served
        ("qwen2.5-vl-7b-instruct", "Qwen/Qwen2.5-VL-7B-Instruct", "bfloat16", ("0",), 9000, 0.3),
        (
            "llava-onevision-qwen2-7b",
            "llava-hf/llava-onevision-qwen2-7b-ov-hf",
            "bfloat16",
            ("0",),
            9001,
            0.3,
        ),
        ("smolvlm2-2.2b-instruct", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "bfloat16", ("0",), 9002, 0.3),
        ("internvl3-8b", "OpenGVLab/InternVL3-8B-hf", "bfloat16", ("1",), 9003, 0.45),
        ("idefics3-8b-llama3", "HuggingFaceM4/Idefics3-8B-Llama3", "bfloat16", ("1",), 9004, 0.45),
    ]
    # enabled, the sharded model takes both GPUs with tensor parallelism 2
    data["models"][-1]["enabled"] = True
    plans = plan_servers(parse_roster(data), serve_args("--gpus", "6,7", "--max-model-len", "8192"), tmp_path)
    sharded = plans[-1]
    assert (sharded.name, sharded.gpus, sharded.tensor_parallel) == ("qwen2.5-vl-72b-instruct", ("6", "7"), 2)
    assert all(p.max_model_len == 8192 for p in plans)
    assert len({p.port for p in plans}) == len(plans)  # free ports, one each


# -- roster rewriting -----------------------------------------------------------------------------------

MIXED = {
    "models": [
        {"name": "local-a", "backend": "hf", "params": {"model": "/w/a", "device": "cuda:0"},
         "aliases": ["Alpha"], "generation": {"max_new_tokens": 99}, "timeouts": {"first_token_s": 5}},
        {"name": "remote", "backend": "openai", "params": {"base_url": "http://x:1/v1", "model": "r"}},
        {"name": "fake", "backend": "scripted", "params": {"reply": "hello"}, "sampling_weight": 0.5},
        {"name": "off", "backend": "hf", "params": {"tiny_demo": "llava"}, "enabled": False},
        {"name": "local-b", "backend": "hf", "params": {"tiny_demo": "gemma3", "device": "cpu"}, "max_images": 2},
    ]
}  # fmt: skip


def test_rewritten_roster_points_hf_entries_at_their_servers(tmp_path: Path) -> None:
    original = copy.deepcopy(MIXED)
    plans = [
        ServerPlan(name="local-a", model_path="/w/a", dtype="auto", gpus=("0",), host="127.0.0.1", port=8001),
        ServerPlan(name="local-b", model_path="/c/b", dtype="auto", gpus=("0",), host="127.0.0.1", port=8002),
    ]
    data = rewrite_roster(MIXED, plans)
    assert original == MIXED  # the input is not modified
    a, remote, fake, off, b = data["models"]
    assert a == {**original["models"][0], "backend": "openai",
                 "params": {"base_url": "http://127.0.0.1:8001/v1", "model": "local-a"}}  # fmt: skip
    assert b == {**original["models"][4], "backend": "openai",
                 "params": {"base_url": "http://127.0.0.1:8002/v1", "model": "local-b"}}  # fmt: skip
    assert [remote, fake, off] == [original["models"][i] for i in (1, 2, 3)]

    path = tmp_path / "served.yaml"
    path.write_text(render_roster(data, "Written by a test.\nSecond line."), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Written by a test.\n# Second line.\n")
    roster = load_roster(path)
    assert [(s.name, s.backend) for s in roster.models] == [
        ("local-a", "openai"), ("remote", "openai"), ("fake", "scripted"), ("off", "hf"), ("local-b", "openai")
    ]  # fmt: skip
    served = roster.get("local-a")
    assert (served.aliases, served.generation.max_new_tokens, served.timeouts.first_token_s) == (
        ["Alpha"],
        99,
        5,
    )
    assert roster.get("local-b").max_images == 2
    backend = create_backend(served, BackendContext(cache_dir=tmp_path))
    assert isinstance(backend, OpenAIBackend)


# -- the command, end to end ----------------------------------------------------------------------------


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ARENA_SERVE_COMMAND"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def write_roster(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False), encoding="utf-8")
    return path


def gone(pid: int) -> bool:
    """True once no process has this id (or only a zombie nobody will wait for is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-cache")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Serve processes a test started; any still running at the end is stopped."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def ask(spec: Any, cache: Path, image: Image.Image) -> str:
    """One answer through the arena's own path: registry -> openai backend -> wrapper."""
    from models.wrapper import ManagedBackend

    managed = ManagedBackend.for_spec(spec, create_backend(spec, BackendContext(cache_dir=cache)))

    async def run() -> str:
        generation = managed.generate([Message.user("What is in the picture?", [image])], GenerationParams())
        text = "".join([delta async for delta in generation])
        await managed.backend.aclose()
        return text

    return asyncio.run(run())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_with_a_stand_in_engine(
    tmp_path: Path, cache_dir: Path, started: list[subprocess.Popen[bytes]], signum: int
) -> None:
    roster = write_roster(tmp_path / "roster.yaml", [
        {"name": "demo-llava-tiny", "backend": "hf", "params": {"tiny_demo": "llava", "device": "cpu",
         "dtype": "float32"}, "max_images": 2, "generation": {"max_new_tokens": 16}},
        {"name": "scripted-one", "backend": "scripted", "params": {"reply": "unchanged"}},
    ])  # fmt: skip
    out = tmp_path / "served-roster.yaml"
    stdout = (tmp_path / "serve.out").open("w+b")
    command = [sys.executable, "-m", "models", "serve", str(roster), "--engine", "vllm", "--out", str(out),
               "--cache-dir", str(cache_dir), "--engine-command", STAND_IN, "--gpus", "3",
               "--startup-timeout", "120", "--stop-timeout", "10"]  # fmt: skip
    serve = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, env=serve_env(), cwd=tmp_path)
    started.append(serve)

    def output() -> str:
        return (tmp_path / "serve.out").read_text(errors="replace")

    wait_for(lambda: out.exists() or serve.poll() is not None, 240, "the served roster")
    assert serve.poll() is None, output()
    served = load_roster(out)
    spec = served.get("demo-llava-tiny")
    assert spec.backend == "openai" and spec.params["model"] == "demo-llava-tiny"
    assert spec.max_images == 2 and spec.generation.max_new_tokens == 16
    assert (
        served.get("scripted-one").model_dump()
        == parse_roster(yaml.safe_load(roster.read_text())).get("scripted-one").model_dump()
    )
    assert f"python launch.py --config {out}" in output()

    # a real request through the arena's backend path reaches the stand-in, which checks the model id
    assert ask(spec, cache_dir, Image.new("RGB", (40, 30), (0, 90, 200))) == Behaviour().reply

    # the stand-in got the engine's flags, the tiny model's built path, and only its GPU
    log = (tmp_path / "served-roster-logs" / "demo-llava-tiny.log").read_text()
    info = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    argv = info["argv"]
    assert argv[argv.index("--model") + 1] == str((cache_dir / "tiny-llava-v1").resolve())
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--tensor-parallel-size") + 1] == "1"
    assert info["cuda_visible_devices"] == "3"
    assert info["base_url"] == spec.params["base_url"]

    pids = [int(pid) for pid in re.findall(r"started \S+ \(pid (\d+)", output())]
    assert len(pids) == 1 and not gone(pids[0])
    serve.send_signal(signum)
    assert serve.wait(timeout=30) == 0, output()
    assert all(gone(pid) for pid in pids), output()
    port = int(spec.params["base_url"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    roster = write_roster(tmp_path / "roster.yaml", [
        {"name": "weights", "backend": "hf", "params": {"model": "/nowhere/weights", "device": "cuda:0"}},
    ])  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "models",
        "serve",
        str(roster),
        "--out",
        str(tmp_path / "out.yaml"),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=serve_env(**env), timeout=120, cwd=tmp_path
    )


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_engine_not_installed_says_how_to_install_it(tmp_path: Path, engine: str) -> None:
    if importlib.util.find_spec(engine) is not None:
        pytest.skip(f"{engine} is installed here")
    result = run_serve(tmp_path, "--engine", engine)
    assert result.returncode == 2, result.stderr
    assert f'pip install -e ".[{engine}]"' in result.stderr
    assert "--engine-command" in result.stderr and "ARENA_SERVE_COMMAND" in result.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_a_server_that_dies_at_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    script = tmp_path / "broken_engine.py"
    script.write_text("import sys\nprint('CUDA out of memory (pretend)', flush=True)\nsys.exit(3)\n")
    result = run_serve(tmp_path, "--engine", "sglang", ARENA_SERVE_COMMAND=f"{sys.executable} {script}")
    assert result.returncode == 1, result.stderr
    assert "'weights' exited with status 3 before it was ready" in result.stderr
    assert "CUDA out of memory (pretend)" in result.stderr
    assert "--model-path /nowhere/weights" in result.stderr  # the log starts with the command line
    assert not (tmp_path / "out.yaml").exists()


def test_a_server_that_never_answers_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    """The engine and a worker it started both ignore SIGTERM: the whole group gets SIGKILL."""
    pid_file = tmp_path / "pids"
    script = tmp_path / "silent_engine.py"
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"worker = subprocess.Popen([sys.executable, '-c', {stubborn!r}])\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{__import__(\"os\").getpid()}} {{worker.pid}}')\n"
        "time.sleep(300)\n"
    )
    start = time.monotonic()
    result = run_serve(
        tmp_path, "--engine", "vllm", "--engine-command", f"{sys.executable} {script}",
        "--startup-timeout", "3", "--stop-timeout", "5",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "not ready after 3 s: 'weights'" in result.stderr
    assert time.monotonic() - start < 60
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: all(gone(pid) for pid in pids), 10, "the engine and its worker to be gone")


def test_a_server_that_serves_another_model_is_refused(tmp_path: Path) -> None:
    result = run_serve(
        tmp_path,
        "--engine",
        "vllm",
        "--engine-command",
        STAND_IN,
        "--engine-args",
        "--served-model-name other",
    )
    assert result.returncode == 1, result.stderr
    assert "serves ['other'], not 'weights'" in result.stderr
    assert not (tmp_path / "out.yaml").exists()
