"""Duplicate prompts, known answers: text normalisation, pHash near-duplicates of real re-encoded
pictures, grouping (exact, near, different image, different text, text only), the cap."""

from __future__ import annotations

import io
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from analysis.dedup import (
    PromptRecord,
    capped_out,
    dedup_plan,
    default_cap,
    describe_groups,
    duplicate_groups,
    frame_prompt_records,
    hamming,
    image_token,
    images_match,
    normalize_prompt,
)
from storage.dedup import image_phash, phash_of_bytes


def picture(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A picture of a dozen coloured ellipses (different seeds: different pictures)."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        w, h = rng.randrange(20, 90), rng.randrange(20, 90)
        draw.ellipse([x, y, x + w, y + h], fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def reencoded(img: Image.Image) -> bytes:
    """The same picture with a small black mark in a corner, at half size, as a low-quality JPEG
    (what a re-upload of a screenshot often is): a few pHash bits differ (4 with these pictures)."""
    marked = img.copy()
    ImageDraw.Draw(marked).rectangle([0, 0, 18, 18], fill="black")
    buf = io.BytesIO()
    marked.resize((img.width // 2, img.height // 2)).save(buf, "JPEG", quality=60)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  What's   THIS?! ", "what's this"),
        ("what's this", "what's this"),
        ("ＷＨＡＴ　is this", "what is this"),  # full-width letters and space (NFKC)
        ("Straße", "strasse"),  # casefold
        ("¿Qué es esto?", "qué es esto"),
        ("«Describe\n\tthe\u00a0image»…", "describe the image"),
        ("«Describe» it", "describe» it"),
        ("a, b. c", "a, b. c"),  # punctuation inside is kept
        ("🐱?", "🐱"),  # symbols are kept
        ("...", ""),
        ("", ""),
    ],
)
def test_normalize_prompt(text: str, expected: str) -> None:
    assert normalize_prompt(text) == expected


def test_phash_of_a_reencoded_picture_is_near_and_of_another_far() -> None:
    original = picture(1)
    same = image_phash(original)
    assert len(same) == 16 and int(same, 16) >= 0
    copy = phash_of_bytes(reencoded(original))
    assert copy is not None
    assert 0 < hamming(same, copy) <= 6
    assert hamming(same, image_phash(picture(2))) > 20
    assert phash_of_bytes(b"not a picture") is None


def test_hamming_and_tokens() -> None:
    assert hamming("0000000000000000", "000000000000000f") == 4
    assert hamming("ffffffffffffffff", "0000000000000000") == 64
    assert hamming("sha256:ab", "sha256:ab") == 0
    assert hamming("sha256:ab", "sha256:ac") > 63  # a token without pHash matches only itself
    assert image_token("ab" * 32, None) == "sha256:" + "ab" * 32
    assert image_token("ab" * 32, "00FF00FF00FF00FF") == "00ff00ff00ff00ff"


def test_images_match_as_multisets() -> None:
    a, b, c = "0000000000000000", "00000000ffffffff", "ffffffff00000000"
    near_a, near_b = "0000000000000007", "00000000fffffff0"
    assert images_match((a, b), (near_b, near_a), 4)  # order does not matter
    assert not images_match((a, b), (near_b, near_a), 3)
    assert not images_match((a, b), (a, a), 6)  # one to one: a cannot stand in for b
    assert not images_match((a, b, c), (a, b), 6)
    assert images_match((), (), 0)
    pairs = records_of(
        ("m0", "Compare these", (a, b)),
        ("m1", "compare these", (near_b, near_a)),
        ("m2", "compare these", (a, c)),
        ("m3", "compare these", (b, "sha256:" + "0" * 64)),
    )
    assert duplicate_groups(pairs, max_distance=4) == [[0, 1], [2], [3]]
    assert duplicate_groups(pairs, max_distance=3) == [[0], [1], [2], [3]]


def records_of(*items: tuple[str, str, tuple[str, ...]]) -> list[PromptRecord]:
    return [PromptRecord(battle_id, text, images) for battle_id, text, images in items]


def test_groups_exact_near_different_image_different_text_and_text_only() -> None:
    cat = image_phash(picture(1))
    cat_copy = phash_of_bytes(reencoded(picture(1)))
    dog = image_phash(picture(2))
    assert cat_copy is not None and cat_copy != cat
    records = records_of(
        ("b0", "What is this?", (cat,)),
        ("b1", "what is this", (cat,)),  # exact duplicate of b0 (normalised text, same pHash)
        ("b2", "  WHAT IS THIS!! ", (cat_copy,)),  # near duplicate: re-encoded, resized picture
        ("b3", "What is this?", (dog,)),  # another picture: not a duplicate
        ("b4", "What is that?", (cat,)),  # other text: not a duplicate
        ("b5", "Tell me a joke", ()),  # text only
        ("b6", "tell me a joke.", ()),  # text only, duplicate of b5
        ("b7", "", ()),  # nothing to compare: never grouped
        ("b8", "", ()),
        ("b9", "What is this?", (cat, dog)),  # two pictures: not the one-picture group
    )
    groups = duplicate_groups(records)
    assert groups == [[0, 1, 2], [5, 6], [3], [4], [9]]
    assert duplicate_groups(records, max_distance=0) == [[0, 1], [5, 6], [2], [3], [4], [9]]
    listed = describe_groups(records, groups)
    assert [(g.size, g.prompt, g.images) for g in listed] == [
        (3, "what is this", (cat,)),
        (2, "tell me a joke", ()),
    ]
    assert listed[0].battle_ids == ("b0", "b1", "b2")
    with pytest.raises(ValueError, match="max_distance"):
        duplicate_groups(records, max_distance=64)


def test_near_groups_match_brute_force_single_linkage() -> None:
    """The pigeonhole index finds exactly the groups an all-pairs comparison finds."""
    rng = np.random.default_rng(7)
    centres = [int(rng.integers(0, 2**63)) for _ in range(25)]
    hashes = []
    for _ in range(400):
        value = centres[int(rng.integers(len(centres)))]
        for bit in rng.choice(64, size=int(rng.integers(0, 5)), replace=False):
            value ^= 1 << int(bit)
        hashes.append(f"{value:016x}")
    records = records_of(*((f"b{i}", "same text", (h,)) for i, h in enumerate(hashes)))
    for k in (0, 3, 6):
        label = list(range(len(hashes)))  # component label by flooding, all pairs compared
        for i in range(len(hashes)):
            for j in range(i + 1, len(hashes)):
                if hamming(hashes[i], hashes[j]) <= k and label[i] != label[j]:
                    old, new = max(label[i], label[j]), min(label[i], label[j])
                    label = [new if x == old else x for x in label]
        brute: dict[int, list[int]] = {}
        for i, root in enumerate(label):
            brute.setdefault(root, []).append(i)
        expected = sorted(brute.values(), key=lambda g: (-len(g), g[0]))
        assert duplicate_groups(records, max_distance=k) == expected


def test_cap_default_percentile_and_earliest_kept() -> None:
    assert default_cap([50] + [1] * 40) == 49  # 1 + 0.996 * 49 = 49.8, rounded down
    assert default_cap([1, 1, 1]) == 1
    assert default_cap([]) == 1
    assert capped_out([[0, 1, 2, 3], [4], [5, 6]], 2) == [2, 3]
    with pytest.raises(ValueError):
        capped_out([[0]], 0)
    records = records_of(*((f"spam{i}", "Pasted question", ()) for i in range(5)), ("solo", "other", ()))
    plan = dedup_plan(records, cap=2)
    assert (plan.cap, plan.groups_capped, plan.excluded) == (2, 1, frozenset({"spam2", "spam3", "spam4"}))


def test_battle_file_rows() -> None:
    frame = pd.DataFrame(
        {
            "model_a": ["x", "y", "x"],
            "model_b": ["y", "x", "y"],
            "winner": ["model_a", "tie", "model_b"],
            "conversation_a": [
                [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello"}],
                [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}],
                None,
            ],
            "images": [[["aa"]], [["aa"], ["bb"]], None],
        }
    )
    records = frame_prompt_records(frame)
    assert [(r.battle_id, r.text, r.images) for r in records] == [
        ("0", "Hi!", ("sha256:aa",)),
        ("1", "hi", ("sha256:aa",)),
        ("2", "", ()),
    ]
    assert records[1].winner == "tie"
    assert duplicate_groups(records) == [[0, 1]]
