"""The ``local`` moderation provider: an offline nudity detector for uploaded images.

It uses NudeNet (``pip install 'vlm-arena[moderation-local]'``), whose wheel ships its own ONNX
detector (``nudenet/320n.onnx``, 12 MB), so nothing is downloaded at first use. NudeNet's LICENSE file
is the GNU AGPL-3.0 (its package metadata says MIT; the LICENSE file decides), so it stays an optional
extra, imported only here and only when this provider is built.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from arena.guards.moderation import ModerationConfigError, ModerationResult

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vlm-arena[moderation-local]'"

EXPLICIT_CLASSES = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
"""NudeNet's detector classes that count towards the score (faces, feet, covered parts do not)."""


def explicit_scores(detections: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The highest detection score of each explicit class in NudeNet's detections (0.0 when absent)."""
    scores = dict.fromkeys(EXPLICIT_CLASSES, 0.0)
    for detection in detections:
        label = str(detection.get("class"))
        if label in scores:
            scores[label] = max(scores[label], float(detection.get("score", 0.0)))
    return scores


def bgr_array(image: Image.Image) -> np.ndarray:
    """The image (first frame) as the 3-channel BGR uint8 array NudeNet reads from a file."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


class LocalImageModerator:
    """Flags an image whose explicit-content score (the highest NudeNet detection of an explicit class)
    is at or above ``threshold``; the detail lists the scores. Text is never flagged by it."""

    name = "local"

    def __init__(self, threshold: float = 0.5, fail_closed: bool = False) -> None:
        self.threshold = threshold
        self.fail_closed = fail_closed
        try:
            nudenet = importlib.import_module("nudenet")
        except ImportError as exc:
            raise ModerationConfigError(
                f"ARENA_MODERATION=local needs the optional NudeNet detector ({exc}); install it with: "
                f"{INSTALL_HINT}"
            ) from exc
        self.detector: Any = nudenet.NudeDetector()  # loads the ONNX model shipped in the wheel (~0.1 s)

    def score(self, image: Image.Image) -> dict[str, float]:
        """The explicit-content score of each class for one image."""
        return explicit_scores(self.detector.detect(bgr_array(image)))

    def check_text(self, text: str) -> ModerationResult:
        """Never flagged: this provider reads images only."""
        return ModerationResult(flagged=False, provider=self.name)

    def check_image(self, image: Image.Image) -> ModerationResult:
        """Flagged (category ``"sexual"``) when the highest explicit score reaches the threshold."""
        try:
            scores = self.score(image)
        except Exception as exc:  # the detector must never break a battle: fail open or closed, logged
            action = "refusing" if self.fail_closed else "allowing"
            log.warning("local moderation could not score an image (%s); %s it", exc, action, exc_info=True)
            return ModerationResult(
                flagged=self.fail_closed, provider=self.name, category="unavailable", detail=str(exc)[:500]
            )
        top = max(scores.values())
        detail = f"max={top:.3f}; " + ", ".join(f"{key}={value:.3f}" for key, value in scores.items())
        if top >= self.threshold:
            return ModerationResult(flagged=True, provider=self.name, category="sexual", detail=detail)
        return ModerationResult(flagged=False, provider=self.name, detail=detail)
