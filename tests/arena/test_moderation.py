"""Moderation providers: a blocklist file, an OpenAI-compatible endpoint (the real local fake server) and
the offline NudeNet image detector (the ``moderation-local`` extra), and how the settings pick one."""

from __future__ import annotations

import base64
import io
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

from arena.guards.moderation import (
    NEUTRAL_REFUSAL,
    BlocklistModerator,
    ModerationConfigError,
    ModerationResult,
    NoModeration,
    OpenAIModerator,
    build_moderator,
    check_turn,
    png_data_uri,
)
from arena.settings import ArenaSettings
from tests.models.openai_server import Behaviour, FakeOpenAIServer

RED = Image.new("RGB", (64, 48), (255, 0, 0))
BLUE = Image.new("RGB", (64, 48), (0, 0, 255))


def settings(**values: Any) -> ArenaSettings:
    """Validated settings; the given values win over any ARENA_* variable of the machine."""
    return ArenaSettings(**{"moderation": "none", **values})


def write_blocklist(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "blocklist.txt"
    path.write_text(text, encoding="utf-8")
    return path


def decode(uri: str) -> Image.Image:
    header, _, payload = uri.partition(",")
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


# -- none and check_turn ---------------------------------------------------------------------------------


def test_no_moderation_never_flags() -> None:
    moderator = NoModeration()
    assert moderator.check_text("forbidden-word kill everyone") == ModerationResult(False, "none")
    assert check_turn(moderator, "anything", [RED, BLUE]) == ModerationResult(False, "none")


def test_neutral_refusal_names_no_rule_or_category() -> None:
    lowered = NEUTRAL_REFUSAL.lower()
    assert NEUTRAL_REFUSAL.strip() and "try" in lowered
    for word in ("blocklist", "sexual", "violence", "openai", "nudenet", "regular expression", "categor"):
        assert word not in lowered


# -- blocklist -------------------------------------------------------------------------------------------


def test_blocklist_flags_a_match_case_insensitively(tmp_path: Path) -> None:
    path = write_blocklist(tmp_path, "# words we refuse\n\n\\bsecret\\s+plans?\\b\n  badword  \nnaïve\\d+\n")
    moderator = BlocklistModerator(path)
    assert len(moderator.patterns) == 3  # the comment and the blank line are not patterns
    hit = moderator.check_text("Tell me the SECRET   Plans of the base")
    assert hit == ModerationResult(True, "blocklist", "blocklist", "matched '\\\\bsecret\\\\s+plans?\\\\b'")
    assert moderator.check_text("what a BADWORD").flagged  # surrounding spaces of a line are not part of it
    assert moderator.check_text("NAÏVE42").flagged  # UTF-8 file, Unicode case folding
    assert moderator.check_text("a secretary plans a trip") == ModerationResult(False, "blocklist")
    assert not moderator.check_text("# words we refuse").flagged  # comments are not patterns
    assert moderator.check_image(RED) == ModerationResult(False, "blocklist")


def test_blocklist_checks_the_text_before_the_images(tmp_path: Path) -> None:
    moderator = BlocklistModerator(write_blocklist(tmp_path, "badword\n"))
    assert check_turn(moderator, "a badword here", [RED]).category == "blocklist"
    assert not check_turn(moderator, "a clean prompt", [RED, BLUE]).flagged


def test_blocklist_bad_regex_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_blocklist(tmp_path, "# comment\nfine\n\nunclosed(group\n")
    with pytest.raises(ModerationConfigError) as caught:
        BlocklistModerator(path)
    message = str(caught.value)
    assert str(path) in message and "line 4" in message and "unclosed(group" in message


def test_blocklist_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ModerationConfigError, match="cannot read the moderation blocklist"):
        BlocklistModerator(tmp_path / "absent.txt")


# -- openai-compatible endpoint --------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key="mod-key") as fake:
        yield fake


@pytest.fixture
def moderator(server: FakeOpenAIServer) -> Iterator[OpenAIModerator]:
    client = OpenAIModerator(server.base_url, api_key="mod-key", model="omni-moderation-test", timeout_s=5)
    yield client
    client.close()


def test_openai_flags_text_with_the_first_true_category(
    server: FakeOpenAIServer, moderator: OpenAIModerator
) -> None:
    result = moderator.check_text("please say the Forbidden-Word now")
    assert result.flagged and result.provider == "openai" and result.category == "violence"
    assert result.detail is not None and "violence=0.970" in result.detail
    assert moderator.check_text("describe the picture") == ModerationResult(False, "openai")
    assert len(server.moderation_requests) == 2 and server.requests == []  # chat requests apart


def test_openai_request_body_has_openai_shape(server: FakeOpenAIServer, moderator: OpenAIModerator) -> None:
    moderator.check_text("hello there")
    moderator.check_image(BLUE)
    text_request, image_request = server.moderation_requests
    assert text_request["path"] == "/v1/moderations"
    assert text_request["headers"]["authorization"] == "Bearer mod-key"
    assert text_request["body"] == {
        "model": "omni-moderation-test",
        "input": [{"type": "text", "text": "hello there"}],
    }
    body = image_request["body"]
    assert body["model"] == "omni-moderation-test" and len(body["input"]) == 1
    part = body["input"][0]
    assert part["type"] == "image_url" and set(part) == {"type", "image_url"}
    sent = decode(part["image_url"]["url"])
    assert sent.format == "PNG" and sent.size == (64, 48)
    assert sent.convert("RGB").getpixel((10, 10)) == (0, 0, 255)


def test_openai_flags_a_red_image_and_passes_a_clean_one(
    server: FakeOpenAIServer, moderator: OpenAIModerator
) -> None:
    flagged = moderator.check_image(RED)
    assert flagged.flagged and flagged.category == "sexual"
    assert moderator.check_image(BLUE) == ModerationResult(False, "openai")
    nearly_red = RED.copy()
    nearly_red.putpixel((0, 0), (254, 0, 0))
    assert not moderator.check_image(nearly_red).flagged  # the server decodes the real pixels


def test_openai_check_turn_sends_the_whole_turn_in_one_request(
    server: FakeOpenAIServer, moderator: OpenAIModerator
) -> None:
    assert check_turn(moderator, "forbidden-word", [BLUE]).category == "violence"
    assert check_turn(moderator, "clean", [BLUE, RED, BLUE]).category == "sexual"
    assert not check_turn(moderator, "clean", [BLUE, BLUE]).flagged
    assert not check_turn(moderator, "  ", [BLUE]).flagged  # blank text is not sent, the image is
    assert not check_turn(moderator, "  ", []).flagged  # nothing to send: no request
    sent = [[part["type"] for part in r["body"]["input"]] for r in server.moderation_requests]
    assert sent == [
        ["text", "image_url"],
        ["text", "image_url", "image_url", "image_url"],
        ["text", "image_url", "image_url"],
        ["image_url"],
    ]


def test_check_turn_asks_a_per_item_provider_text_first_and_stops_at_the_first_flag(tmp_path) -> None:
    class Counting:
        name = "counting"

        def __init__(self) -> None:
            self.asked: list[str] = []

        def check_text(self, text: str) -> ModerationResult:
            self.asked.append("text")
            return ModerationResult("bad" in text, self.name)

        def check_image(self, image) -> ModerationResult:
            self.asked.append(image.getpixel((0, 0)) == (255, 0, 0) and "red" or "other")
            return ModerationResult(image.getpixel((0, 0)) == (255, 0, 0), self.name)

    counting = Counting()
    assert check_turn(counting, "bad", [RED]).flagged and counting.asked == ["text"]
    counting.asked.clear()
    assert check_turn(counting, "fine", [BLUE, RED, BLUE]).flagged
    assert counting.asked == ["text", "other", "red"]


def test_openai_large_images_are_shrunk_before_sending() -> None:
    big = Image.new("RGB", (4000, 1000), (255, 0, 0))
    sent = decode(png_data_uri(big))
    assert sent.size == (1024, 256) and big.size == (4000, 1000)
    palette = Image.new("P", (10, 10))
    assert decode(png_data_uri(palette)).size == (10, 10)


@pytest.mark.parametrize("fail_closed", [False, True])
def test_openai_server_error_fails_open_or_closed(
    server: FakeOpenAIServer, fail_closed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server.behaviour = Behaviour(moderation_status=500)
    moderator = OpenAIModerator(server.base_url, api_key="mod-key", timeout_s=5, fail_closed=fail_closed)
    with caplog.at_level(logging.WARNING, logger="arena.guards.moderation"):
        result = moderator.check_text("forbidden-word")
    moderator.close()
    assert result.flagged is fail_closed and result.category == "unavailable" and result.provider == "openai"
    assert result.detail is not None and "500" in result.detail
    assert len(server.moderation_requests) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and ("refusing" if fail_closed else "allowing") in warnings[0].getMessage()


@pytest.mark.parametrize(
    "raw", [b"<html>busy</html>", b"{}", b'{"results": []}', b'{"results": ["yes"]}', b"[1]"]
)
def test_openai_bad_json_is_unavailable(server: FakeOpenAIServer, raw: bytes) -> None:
    server.behaviour = Behaviour(moderation_raw=raw)
    for fail_closed in (False, True):
        moderator = OpenAIModerator(server.base_url, api_key="mod-key", timeout_s=5, fail_closed=fail_closed)
        result = moderator.check_image(RED)
        moderator.close()
        assert result.flagged is fail_closed and result.category == "unavailable"


def test_openai_wrong_api_key_is_unavailable(server: FakeOpenAIServer) -> None:
    moderator = OpenAIModerator(server.base_url, api_key="wrong", timeout_s=5, fail_closed=True)
    result = moderator.check_text("hello")
    moderator.close()
    assert result.flagged and result.category == "unavailable" and "401" in (result.detail or "")


@pytest.mark.parametrize("fail_closed", [False, True])
def test_openai_unreachable_port_never_raises(fail_closed: bool, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moderator = OpenAIModerator(f"http://127.0.0.1:{port}/v1", timeout_s=2, fail_closed=fail_closed)
    with caplog.at_level(logging.WARNING, logger="arena.guards.moderation"):
        text = moderator.check_text("hello")
        image = moderator.check_image(BLUE)
    moderator.close()
    for result in (text, image):
        assert result.flagged is fail_closed and result.category == "unavailable"
        assert "ConnectError" in (result.detail or "")
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2


# -- build_moderator -------------------------------------------------------------------------------------


def test_build_moderator_picks_the_provider(tmp_path: Path, server: FakeOpenAIServer) -> None:
    assert isinstance(build_moderator(settings()), NoModeration)
    path = write_blocklist(tmp_path, "badword\n")
    blocklist = build_moderator(settings(moderation="blocklist", moderation_blocklist=path))
    assert isinstance(blocklist, BlocklistModerator) and blocklist.check_text("BadWord").flagged
    openai = build_moderator(
        settings(
            moderation="openai",
            moderation_url=server.base_url + "/",
            moderation_api_key=SecretStr("mod-key"),
            moderation_model="m-1",
            moderation_fail_closed=True,
        )
    )
    assert isinstance(openai, OpenAIModerator) and openai.fail_closed
    assert openai.check_text("the forbidden-word").flagged  # right URL, key and model
    assert server.moderation_requests[-1]["body"]["model"] == "m-1"
    openai.close()


def test_build_moderator_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_blocklist(tmp_path, "badword\n")
    monkeypatch.setenv("ARENA_MODERATION", "blocklist")
    monkeypatch.setenv("ARENA_MODERATION_BLOCKLIST", str(path))
    assert isinstance(build_moderator(ArenaSettings()), BlocklistModerator)


def test_build_moderator_errors_name_the_missing_option(tmp_path: Path) -> None:
    with pytest.raises(ModerationConfigError, match="ARENA_MODERATION_BLOCKLIST"):
        build_moderator(settings(moderation="blocklist"))
    with pytest.raises(ModerationConfigError, match="ARENA_MODERATION_URL"):
        build_moderator(settings(moderation="openai"))
    with pytest.raises(ModerationConfigError, match="line 1"):
        build_moderator(settings(moderation="blocklist", moderation_blocklist=write_blocklist(tmp_path, "[")))


def test_build_moderator_local_without_the_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # how Python sees a package that is not installed
    with pytest.raises(ModerationConfigError) as caught:
        build_moderator(settings(moderation="local"))
    assert "pip install 'vlm-arena[moderation-local]'" in str(caught.value)


# -- local image classifier (the moderation-local extra) --------------------------------------------------


def real_photo() -> Image.Image:
    """A real photograph (a cheetah) that Gradio ships inside its package."""
    import gradio

    path = Path(gradio.__file__).parent / "media_assets" / "images" / "cheetah.jpg"
    with Image.open(path) as image:
        image.load()
        return image.copy()


def test_local_explicit_scores_keep_the_highest_explicit_detection() -> None:
    from arena.guards.moderation_local import EXPLICIT_CLASSES, explicit_scores

    detections = [
        {"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 5, 5]},
        {"class": "BUTTOCKS_EXPOSED", "score": 0.4, "box": [0, 0, 5, 5]},
        {"class": "BUTTOCKS_EXPOSED", "score": 0.7, "box": [5, 5, 5, 5]},
        {"class": "FEMALE_BREAST_COVERED", "score": 0.95, "box": [0, 0, 5, 5]},
    ]
    scores = explicit_scores(detections)
    assert set(scores) == set(EXPLICIT_CLASSES) and max(scores.values()) == 0.7
    assert scores["BUTTOCKS_EXPOSED"] == 0.7 and scores["ANUS_EXPOSED"] == 0.0


def test_local_classifier_runs_offline_from_weights_in_the_wheel() -> None:
    nudenet = pytest.importorskip("nudenet", reason="the moderation-local extra is not installed")
    from arena.guards.moderation_local import LocalImageModerator

    assert (Path(nudenet.__file__).parent / "320n.onnx").stat().st_size > 10_000_000
    moderator = build_moderator(settings(moderation="local", moderation_threshold=0.5))
    assert isinstance(moderator, LocalImageModerator) and moderator.threshold == 0.5
    photo = real_photo()
    scores = moderator.score(photo)
    assert scores and all(0.0 <= value < 0.5 for value in scores.values())  # a cheetah is not explicit
    clean = moderator.check_image(photo)
    assert not clean.flagged and clean.provider == "local" and "max=" in (clean.detail or "")
    assert moderator.check_text("forbidden-word") == ModerationResult(False, "local")


@pytest.mark.parametrize(("threshold", "flagged"), [(0.0, True), (0.5, False), (1.01, False)])
def test_local_threshold_on_a_real_photo(threshold: float, flagged: bool) -> None:
    pytest.importorskip("nudenet", reason="the moderation-local extra is not installed")
    from arena.guards.moderation_local import LocalImageModerator

    moderator = LocalImageModerator(threshold)
    for image in (real_photo(), real_photo().convert("L"), real_photo().convert("RGBA")):
        result = moderator.check_image(image)
        assert result.flagged is flagged and result.provider == "local"
        assert result.category == ("sexual" if flagged else None)
