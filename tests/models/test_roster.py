"""The roster loader accepts good files and names the file, model and field of every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.base import GenerationParams
from models.roster import GenerationDefaults, ModelSpec, Roster, RosterError, Timeouts, load_roster

REPO = Path(__file__).resolve().parents[2]

VALID = """
models:
  - name: alpha
    display_name: Alpha Chat
    organization: Example Lab
    backend: scripted
    params: {reply: "hello {prompt}"}
    sampling_weight: 2
    generation: {max_new_tokens: 32, temperature: 0.2, top_p: 0.9}
  - name: org/bravo-7b@v2
    backend: hf
    params: {tiny_demo: llava}
    enabled: false
    demo: true
  - name: charlie
    backend: openai
    params: {base_url: "http://127.0.0.1:8000/v1/", api_key_env: CHARLIE_KEY}
    timeouts: {first_token_s: 5, total_s: 30}
    retries: 0
"""


def write(tmp_path: Path, text: str, name: str = "roster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RosterError) as info:
        load_roster(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_valid_roster_loads_with_defaults(tmp_path: Path) -> None:
    roster = load_roster(write(tmp_path, VALID))
    assert roster.names == ["alpha", "org/bravo-7b@v2", "charlie"]
    alpha = roster.get("alpha")
    assert alpha.display_name == "Alpha Chat"
    assert alpha.sampling_weight == 2.0
    assert alpha.generation.to_params(seed=7) == GenerationParams(
        max_new_tokens=32, temperature=0.2, top_p=0.9, seed=7
    )
    bravo = roster.get("org/bravo-7b@v2")
    assert bravo.display_name == "org/bravo-7b@v2"  # defaults to the name
    assert bravo.demo and not bravo.enabled
    charlie = roster.get("charlie")
    assert charlie.max_images == 4 and charlie.enabled and not charlie.demo
    assert charlie.params["api_key_env"] == "CHARLIE_KEY"
    assert charlie.generation == GenerationDefaults()
    assert (charlie.timeouts.first_token_s, charlie.timeouts.total_s, charlie.retries) == (5, 30, 0)
    assert (alpha.timeouts, alpha.retries) == (Timeouts(), 1)
    assert [s.name for s in roster.enabled()] == ["alpha", "charlie"]


def test_get_unknown_model_names_the_known_ones(tmp_path: Path) -> None:
    roster = load_roster(write(tmp_path, VALID))
    with pytest.raises(KeyError, match="nobody.*alpha"):
        roster.get("nobody")


def test_demo_roster_is_valid() -> None:
    roster = load_roster(REPO / "configs" / "demo.yaml")
    assert len(roster.enabled()) >= 3
    archs = {spec.params["tiny_demo"] for spec in roster.models}
    assert len(archs) == len(roster.models)
    for spec in roster.models:
        assert spec.backend == "hf" and spec.demo
        assert spec.display_name != spec.name


def test_missing_field_names_model_and_field(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  - name: alpha\n    params: {}\n")
    assert "'alpha'" in message and "'backend'" in message and "required" in message.lower()


def test_missing_name_names_model_by_index(tmp_path: Path) -> None:
    text = "models:\n  - {name: alpha, backend: scripted}\n  - {backend: scripted}\n"
    message = error_for(tmp_path, text)
    assert "model #2" in message and "'name'" in message


def test_bad_backend_kind(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  - {name: alpha, backend: ollama}\n")
    assert "'alpha'" in message and "'backend'" in message
    assert "'hf'" in message and "'scripted'" in message


def test_duplicate_names(tmp_path: Path) -> None:
    text = "models:\n  - {name: alpha, backend: scripted}\n  - {name: alpha, backend: hf}\n"
    message = error_for(tmp_path, text)
    assert "duplicate model name 'alpha'" in message and "#1" in message and "#2" in message


def test_negative_weight(tmp_path: Path) -> None:
    text = "models:\n  - {name: alpha, backend: scripted}\n  - {name: bravo, backend: scripted, sampling_weight: -1}\n"
    message = error_for(tmp_path, text)
    assert "'bravo'" in message and "'sampling_weight'" in message and "alpha" not in message


def test_nested_generation_field(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  - {name: alpha, backend: scripted, generation: {top_p: 1.5}}\n")
    assert "'alpha'" in message and "'generation.top_p'" in message


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  - {name: alpha, backend: scripted, weight: 2}\n")
    assert "'alpha'" in message and "'weight'" in message


def test_bad_name_pattern(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  - {name: 'has space', backend: scripted}\n")
    assert "'name'" in message


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RosterError, match="not found") as info:
        load_roster(path)
    assert str(path) in str(info.value)


def test_bad_yaml(tmp_path: Path) -> None:
    message = error_for(tmp_path, "models:\n  - name: [unclosed\n")
    assert "YAML" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty"), ("- a\n- b\n", "list"), ("name: alpha\n", "models"), ("models: []\n", "'models'")],
)
def test_bad_top_level(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_for(tmp_path, text)


def test_roster_error_is_a_value_error() -> None:
    assert issubclass(RosterError, ValueError)


def test_spec_and_roster_validate_in_code() -> None:
    spec = ModelSpec(name="x", backend="scripted")
    assert spec.display_name == "x"
    with pytest.raises(ValueError, match="duplicate"):
        Roster(models=[spec, spec])
    with pytest.raises(ValueError):
        GenerationDefaults(max_new_tokens=0)


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ("{name: gpt, backend: openai, params: {}}", "params.base_url", "required"),
        ("{name: gpt, backend: openai, params: {base_url: 'gpu-1:8000/v1'}}", "params.base_url", "http://"),
        (
            "{name: gpt, backend: openai, params: {base_url: 'http://h/v1', api_key_env: 'sk-123'}}",
            "params.api_key_env",
            "pattern",
        ),
        (
            "{name: gpt, backend: openai, params: {base_url: 'http://h/v1', image_format: gif}}",
            "params.image_format",
            "'png' or 'jpeg'",
        ),
        (
            "{name: gpt, backend: openai, params: {base_url: 'http://h/v1', timeout: 3}}",
            "params.timeout",
            "extra",
        ),
        ("{name: qwen, backend: hf, params: {model: a, tiny_demo: llava}}", "params", "exactly one"),
        ("{name: qwen, backend: hf, params: {model: a, device: gpu0}}", "params", "cuda:N"),
        ("{name: qwen, backend: hf, params: {model: a, max_concurrency: 0}}", "params.max_concurrency", "1"),
        ("{name: qwen, backend: hf, params: {tiny_demo: blip}}", "params.tiny_demo", "llava"),
        ("{name: s, backend: scripted, params: {delay_s: -1}}", "params.delay_s", "0"),
        ("{name: s, backend: scripted, timeouts: {first_token_s: 10, total_s: 5}}", "timeouts", "total_s"),
        ("{name: s, backend: scripted, retries: 9}", "retries", "5"),
    ],
)
def test_backend_params_errors_name_model_and_field(
    tmp_path: Path, entry: str, field: str, words: str
) -> None:
    text = f"models:\n  - {{name: ok, backend: scripted}}\n  - {entry}\n"
    message = error_for(tmp_path, text)
    assert "(#2)" in message and f"field '{field}'" in message and words.lower() in message.lower()
    assert "'ok'" not in message


@pytest.mark.parametrize("name", ["example-gpu.yaml", "example-vllm.yaml", "example-api.yaml"])
def test_example_rosters_are_valid(name: str) -> None:
    roster = load_roster(REPO / "configs" / name)
    assert len(roster.enabled()) >= 2
    kinds = {spec.backend for spec in roster.models}
    assert kinds == ({"hf"} if name == "example-gpu.yaml" else {"openai"})
    for spec in roster.models:
        assert spec.display_name != spec.name and spec.organization and spec.license and spec.link
        if spec.backend == "hf":
            assert spec.params.get("device", "").startswith("cuda") or "device_map" in spec.params
        if name == "example-api.yaml":
            assert spec.params["base_url"].startswith("https://") and spec.params["api_key_env"]


def test_aliases_are_stripped_and_validated(tmp_path: Path) -> None:
    entry = "models:\n  - {name: gpt, backend: scripted, aliases: ['  GPT-4o ', OpenAI, 通义千问]}\n"
    spec = load_roster(write(tmp_path, entry)).get("gpt")
    assert spec.aliases == ["GPT-4o", "OpenAI", "通义千问"]
    assert ModelSpec(name="x", backend="scripted").aliases == []
    message = error_for(tmp_path, "models:\n  - {name: gpt, backend: scripted, aliases: [ok, '   ']}\n")
    assert "model 'gpt' (#1), field 'aliases'" in message and "alias #2 is empty" in message
    message = error_for(tmp_path, f"models:\n  - {{name: gpt, backend: scripted, aliases: [{'x' * 101}]}}\n")
    assert "alias #1 is longer than 100 characters" in message
    assert len(ModelSpec(name="x", backend="scripted", aliases=["y" * 100]).aliases[0]) == 100
