"""The bundled example inputs: deterministic, accepted by the image store, and true to their prompts."""

from __future__ import annotations

import io
import random
from collections import deque

import numpy as np
import pytest
from PIL import Image

from arena.examples import COUNT_COLORS, Example, examples, pick
from storage.images import ImageStore

EXPECTED_SIZES = {
    "bar-chart": [(680, 500)],
    "line-chart": [(720, 500)],
    "receipt": [(520, 760)],
    "count-circles": [(660, 500)],
    "flow-diagram": [(800, 540)],
    "spot-the-difference": [(560, 420), (560, 420)],
    "clock": [(560, 560)],
}


def by_key(key: str) -> Example:
    return next(example for example in examples() if example.key == key)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def blobs(mask: np.ndarray, min_pixels: int = 50) -> list[int]:
    """Sizes of the 4-connected components of a boolean mask (ignoring specks below ``min_pixels``)."""
    seen = np.zeros_like(mask, dtype=bool)
    sizes = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        size = 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if size >= min_pixels:
            sizes.append(size)
    return sizes


def colour_mask(rgb: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> np.ndarray:
    return np.all(np.abs(rgb - np.array(colour, dtype=np.int16)) <= tolerance, axis=-1)


def test_at_least_six_examples_with_unique_keys_and_prompts():
    found = examples()
    assert len(found) >= 6
    assert len({e.key for e in found}) == len(found)
    assert len({e.prompt for e in found}) == len(found)
    assert {e.key for e in found} == set(EXPECTED_SIZES)
    assert any(len(e.images) >= 2 for e in found), "one example compares two images"
    assert all(e.prompt.strip() and e.images for e in found)


def test_bytes_are_deterministic_across_calls():
    first = examples()
    examples.cache_clear()
    second = examples()
    assert first is not second
    assert [e.images for e in first] == [e.images for e in second]
    assert first == second


def test_every_image_passes_the_store_and_has_the_expected_size(tmp_path):
    store = ImageStore(tmp_path / "images")
    hashes = set()
    for example in examples():
        sizes = []
        for data in example.images:
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            assert len(data) < 200_000
            prepared = store.prepare(data)
            assert prepared.format == "PNG"
            sizes.append((prepared.width, prepared.height))
            hashes.add(prepared.sha256)
            assert 512 <= max(prepared.width, prepared.height) <= 800
        assert sizes == EXPECTED_SIZES[example.key], example.key
    assert len(hashes) == sum(len(e.images) for e in examples()), "no two images are the same"


def test_counting_scene_has_the_number_of_objects_the_prompt_implies():
    example = by_key("count-circles")
    assert "seven circles" in example.prompt and "red" in example.prompt
    rgb = pixels(example.images[0])
    counts = {name: len(blobs(colour_mask(rgb, colour))) for name, colour in COUNT_COLORS.items()}
    assert sum(counts.values()) == 7
    assert counts == {"red": 3, "blue": 2, "green": 2}


def test_blob_counter_can_fail():
    """The pixel counter really separates objects: two touching circles would be one blob."""
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    img.paste((220, 40, 40), (10, 10, 60, 60))
    img.paste((220, 40, 40), (100, 10, 150, 60))
    rgb = np.asarray(img, dtype=np.int16)
    assert len(blobs(colour_mask(rgb, COUNT_COLORS["red"]))) == 2
    img.paste((220, 40, 40), (60, 20, 100, 30))
    assert len(blobs(colour_mask(np.asarray(img, dtype=np.int16), COUNT_COLORS["red"]))) == 1


@pytest.mark.parametrize(
    ("key", "min_marks"),
    [("bar-chart", 100), ("line-chart", 100), ("receipt", 250), ("flow-diagram", 150), ("clock", 15)],
)
def test_text_images_are_not_blank(key, min_marks):
    rgb = pixels(by_key(key).images[0])
    grey = rgb.mean(axis=-1)
    assert grey.std() > 20
    dark = grey < 100
    assert dark.mean() > 0.01, "there is ink (text, lines) on the image"
    # Text shows up as many small dark components (letters, digits), not one big shape.
    assert len(blobs(dark, min_pixels=5)) >= min_marks


def test_spot_the_difference_pictures_differ_in_places():
    first, second = (pixels(data) for data in by_key("spot-the-difference").images)
    assert first.shape == second.shape
    changed = np.any(first != second, axis=-1)
    assert 0.005 < changed.mean() < 0.2
    assert len(blobs(changed)) == 3


def test_pick_is_deterministic_for_a_seed_and_reaches_every_example():
    assert pick(random.Random(7)) == pick(random.Random(7))
    rng = random.Random(0)
    assert {pick(rng).key for _ in range(200)} == {e.key for e in examples()}
