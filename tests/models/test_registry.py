"""The registry builds backends by kind, imports heavy modules lazily and explains unknown kinds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.base import BackendError
from models.registry import BackendContext, BackendRegistry, create_backend, default_registry
from models.roster import ModelSpec
from models.scripted import ScriptedBackend

REPO = Path(__file__).resolve().parents[2]


def context(tmp_path: Path) -> BackendContext:
    return BackendContext(cache_dir=tmp_path / "cache")


def test_scripted_kind_builds_a_scripted_backend(tmp_path: Path) -> None:
    backend = create_backend(ModelSpec(name="alpha", backend="scripted"), context(tmp_path))
    assert isinstance(backend, ScriptedBackend) and backend.name == "alpha"


def test_known_kinds() -> None:
    assert {"hf", "openai", "scripted"} <= set(default_registry.kinds)


def test_unknown_kind_lists_known_kinds(tmp_path: Path) -> None:
    spec = ModelSpec.model_construct(name="alpha", backend="ollama", params={})
    with pytest.raises(ValueError, match=r"unknown backend kind 'ollama'.*hf.*scripted"):
        create_backend(spec, context(tmp_path))


def test_openai_kind_builds_a_client_without_connecting(tmp_path: Path) -> None:
    spec = ModelSpec(name="gpt", backend="openai", params={"base_url": "http://127.0.0.1:9/v1"})
    backend = create_backend(spec, context(tmp_path))
    assert (
        type(backend).__name__ == "OpenAIBackend" and backend.url == "http://127.0.0.1:9/v1/chat/completions"
    )


def test_openai_params_are_checked_when_the_backend_is_built(tmp_path: Path) -> None:
    spec = ModelSpec(name="gpt", backend="openai", params={"base_url": "localhost:8000"})
    with pytest.raises(ValueError, match=r"model 'gpt': invalid OpenAIParams: params.base_url: .*http://"):
        create_backend(spec, context(tmp_path))


def test_register_a_kind_in_a_separate_registry(tmp_path: Path) -> None:
    registry = BackendRegistry({"scripted": "models.scripted:create"})
    registry.register("hf", "models.scripted:create")
    backend = create_backend(ModelSpec(name="gpt", backend="hf"), context(tmp_path), registry=registry)
    assert isinstance(backend, ScriptedBackend)
    assert default_registry.factory("hf").__module__ == "models.hf"  # the default registry is untouched


def test_bad_targets(tmp_path: Path) -> None:
    registry = BackendRegistry()
    with pytest.raises(ValueError, match="module:function"):
        registry.register("x", "no_colon")
    registry.register("x", "models.does_not_exist:create")
    registry.register("y", "models.scripted:nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("x", "models.scripted:create")
    spec = ModelSpec.model_construct(name="a", backend="x", params={})
    with pytest.raises(BackendError, match="cannot be imported"):
        registry.create(spec, context(tmp_path))
    with pytest.raises(BackendError, match="no factory 'nope'"):
        registry.create(ModelSpec.model_construct(name="a", backend="y", params={}), context(tmp_path))


def test_invalid_scripted_params_name_the_model(tmp_path: Path) -> None:
    spec = ModelSpec(name="alpha", backend="scripted", params={"delay": 1})
    with pytest.raises(ValueError, match="'alpha'.*delay"):
        create_backend(spec, context(tmp_path))


def test_importing_registry_and_roster_does_not_import_torch() -> None:
    code = (
        "import sys, models.registry, models.roster, models.scripted\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
