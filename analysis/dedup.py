"""Duplicate first turns: the same question pasted again and again, with the same (or a re-encoded)
picture. Pure functions; ``storage.dedup`` reads the first turns and keeps the image hashes.

**Normalised text** (``normalize_prompt``): Unicode NFKC, ``str.casefold``, NFKC again (the caseless
match of the Unicode standard); every run of Unicode whitespace becomes one space; then Unicode
punctuation (categories P*: ``.,!?¿¡"'()[]…``) and whitespace are stripped from both ends (never from
inside: "what's this?" and "whats this" differ). Symbols and emoji are kept.

**Image tokens** (``image_token``): an image's pHash (16 hex digits, 64 bits) when known, else
``sha256:<hash>`` (a file the store lacks, an imported placeholder): such a token only ever matches
itself.

**Groups** (``duplicate_groups``): two first turns are duplicates when their normalised texts are
equal and their images can be paired one to one (as multisets: order does not matter) with every
pair within ``max_distance`` bits of Hamming distance (0 = exact pHash match only); groups are the
connected components of that relation (single linkage). A turn with neither text nor images (an
imported record without conversations) is never grouped.

**Cost.** Turns are bucketed by (normalised text, image count) in one pass, and turns with identical
image-token multisets are merged within a bucket by a dict: O(N) for N turns. Near-duplicates are
then looked for only among the u distinct image sets of one bucket, with the pigeonhole index of
multi-index hashing: two 64-bit hashes within k bits agree exactly on at least one of k+1 disjoint
bit blocks, so each set is compared (a bottleneck matching, via ``linear_sum_assignment`` for several
images) only with the sets that share a block value with its first near-matchable image. That is
O(u * (k+1) + C) per bucket for C candidate pairs: near-linear for spread-out hashes, quadratic
in u only when most hashes of one bucket share blocks (many near-identical pictures).

**Cap** (``default_cap``, ``capped_out``): as Chatbot Arena, each group keeps at most N battles, by
default N = the 99.99th percentile of the group sizes (every group counted once, singletons
included; numpy's linear interpolation, rounded down, at least 1). The battles kept are the EARLIEST
N of a group, in the order the turns are given (vote order): deterministic, no seed.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from storage.dedup import FirstTurn

#: Default near-duplicate threshold: bits (of 64) in which two pictures' pHashes may differ.
DEFAULT_MAX_DISTANCE = 6
#: Default cap percentile of group sizes (Chatbot Arena's 99.99th).
DEFAULT_CAP_PERCENTILE = 99.99
#: Bits in a pHash.
HASH_BITS = 64
_HEX = frozenset("0123456789abcdef")


def normalize_prompt(text: str) -> str:
    """The text two prompts must share to be duplicates (see the module docstring for the rules)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    collapsed = " ".join(folded.split())
    start, end = 0, len(collapsed)
    while start < end and _strippable(collapsed[start]):
        start += 1
    while end > start and _strippable(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end]


def _strippable(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def image_token(sha256: str, phash: str | None) -> str:
    """The token an image contributes to a prompt's key: its pHash, else ``sha256:<hash>``."""
    return phash.lower() if phash else f"sha256:{sha256}"


def is_phash(token: str) -> bool:
    """Whether a token is a pHash (16 hex digits), which can match others within a distance."""
    return len(token) == HASH_BITS // 4 and set(token) <= _HEX


def hamming(a: str, b: str) -> int:
    """Bits in which two pHash tokens differ (0 for equal tokens, ``HASH_BITS + 1`` when either is
    not a pHash and they differ)."""
    if a == b:
        return 0
    if not (is_phash(a) and is_phash(b)):
        return HASH_BITS + 1
    return (int(a, 16) ^ int(b, 16)).bit_count()


def images_match(a: Sequence[str], b: Sequence[str], max_distance: int) -> bool:
    """Whether two images multisets pair up one to one with every pair within ``max_distance``."""
    if len(a) != len(b):
        return False
    if len(a) <= 1:
        return all(hamming(x, y) <= max_distance for x, y in zip(a, b, strict=True))
    from scipy.optimize import linear_sum_assignment

    # 0 where a pair is close enough, 1 elsewhere: a perfect matching of cost 0 exists iff they match
    cost = np.array([[0 if hamming(x, y) <= max_distance else 1 for y in b] for x in a])
    rows, cols = linear_sum_assignment(cost)
    return int(cost[rows, cols].sum()) == 0


class PromptRecord(NamedTuple):
    """A first turn as the grouping sees it: raw text, image tokens, and what the listing shows."""

    battle_id: str
    text: str
    images: tuple[str, ...]
    model_a: str = ""
    model_b: str = ""
    winner: str = ""


def prompt_records(turns: Iterable[FirstTurn]) -> list[PromptRecord]:
    """``storage.dedup.FirstTurn`` rows as ``PromptRecord`` s, in the same order."""
    return [
        PromptRecord(
            t.battle_id,
            t.prompt,
            tuple(image_token(sha, phash) for sha, phash in t.images),
            t.model_a,
            t.model_b,
            t.winner,
        )
        for t in turns
    ]


def frame_prompt_records(frame: pd.DataFrame) -> list[PromptRecord]:
    """Battle-file rows as ``PromptRecord`` s, ``battle_id`` = the row's position: the text of the
    first user message of ``conversation_a`` (text parts of a list content joined by spaces) and the
    first turn's ``images`` hashes as ``sha256:`` tokens (a file carries no pictures to pHash)."""
    n = len(frame)

    def column(name: str) -> list[Any]:
        return frame[name].astype(object).tolist() if name in frame.columns else [None] * n

    conversations, images = column("conversation_a"), column("images")
    model_a, model_b, winner = column("model_a"), column("model_b"), column("winner")
    records = []
    for pos in range(n):
        first_images = _first(images[pos])
        hashes = () if first_images is None else tuple(image_token(str(h), None) for h in first_images)
        records.append(
            PromptRecord(
                str(pos),
                _first_user_text(conversations[pos]),
                hashes,
                "" if model_a[pos] is None else str(model_a[pos]),
                "" if model_b[pos] is None else str(model_b[pos]),
                "" if winner[pos] is None else str(winner[pos]),
            )
        )
    return records


def _first(value: object) -> Any:
    """The first item of a list-like value (a list, tuple or numpy array), else None."""
    if isinstance(value, list | tuple | np.ndarray) and len(value):
        return value[0]
    return None


def _first_user_text(conversation: object) -> str:
    if not isinstance(conversation, list | tuple | np.ndarray):
        return ""
    for message in conversation:
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list | tuple | np.ndarray):
                parts = [
                    c if isinstance(c, str) else c.get("text")
                    for c in content
                    if isinstance(c, str | Mapping)
                ]
                return " ".join(p for p in parts if isinstance(p, str))
            return ""
    return ""


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _index_plan(max_distance: int) -> tuple[list[tuple[int, int]], list[int]]:
    """The blocks of the multi-index: (shift, mask) of m <= 4 disjoint bit blocks, and the XOR masks
    of every block value within r = max_distance // m bits of another. Two hashes within
    ``max_distance`` bits differ in at most r bits in some block (else they would differ in at least
    m * (r + 1) > max_distance), so probing each block's values within r bits finds every match."""
    count = min(max_distance + 1, 4)
    radius = max_distance // count
    bounds = [round(i * HASH_BITS / count) for i in range(count + 1)]
    blocks = [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(bounds)]
    width = HASH_BITS // count
    flips = [0]
    for r in range(1, radius + 1):
        flips += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), r)]
    return blocks, flips


#: Above this many probes per block the index costs more than it saves: compare all pairs.
MAX_PROBES = 4096


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def _hash_components(
    values: np.ndarray, blocks: list[tuple[int, int]], flips: list[int], max_distance: int
) -> np.ndarray:
    """Component label of each 64-bit hash (single linkage within ``max_distance``), vectorised: per
    block and probe the sorted block values give each hash's candidates by ``searchsorted``."""
    n = len(values)
    ids = np.arange(n)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for shift, mask in blocks:
        chunk = (values >> np.uint64(shift)) & np.uint64(mask)
        order = np.argsort(chunk, kind="stable")
        ordered = chunk[order]
        for flip in flips:
            query = chunk ^ np.uint64(flip)
            lo = np.searchsorted(ordered, query, "left")
            counts = np.searchsorted(ordered, query, "right") - lo
            total = int(counts.sum())
            if not total:
                continue
            i = np.repeat(ids, counts)
            j = order[np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(total)]
            keep = i < j
            i, j = i[keep], j[keep]
            close = _popcount(values[i] ^ values[j]) <= max_distance
            rows.append(i[close])
            cols.append(j[close])
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _near_components(sets: list[tuple[str, ...]], max_distance: int) -> list[int]:
    """Component label of each distinct image set of one bucket (sets within ``max_distance``)."""
    uf = _UnionFind(len(sets))
    blocks, flips = _index_plan(max_distance)
    probes = [next((int(t, 16) for t in images if is_phash(t)), None) for images in sets]
    if len(flips) <= MAX_PROBES and all(len(images) == 1 for images in sets):
        hashed = [i for i, p in enumerate(probes) if p is not None]
        labels = _hash_components(
            np.array([probes[i] for i in hashed], dtype=np.uint64), blocks, flips, max_distance
        )
        out = list(range(len(sets)))
        for i, label in zip(hashed, labels.tolist(), strict=True):
            out[i] = len(sets) + label
        return out
    if len(flips) > MAX_PROBES:
        for i, j in itertools.combinations(range(len(sets)), 2):
            if (
                probes[i] is not None
                and uf.find(i) != uf.find(j)
                and images_match(sets[i], sets[j], max_distance)
            ):
                uf.union(i, j)
        return [uf.find(i) for i in range(len(sets))]
    index: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, images in enumerate(sets):
        for value in {int(t, 16) for t in images if is_phash(t)}:
            for b, (shift, mask) in enumerate(blocks):
                index[(b, (value >> shift) & mask)].append(i)
    for i, probe in enumerate(probes):
        if probe is None:  # no pHash at all: only the exact merge applies
            continue
        seen: set[int] = set()
        for b, (shift, mask) in enumerate(blocks):
            chunk = (probe >> shift) & mask
            for flip in flips:
                for j in index.get((b, chunk ^ flip), ()):
                    if j <= i or j in seen:
                        continue
                    seen.add(j)
                    if uf.find(i) == uf.find(j):
                        continue
                    if images_match(sets[i], sets[j], max_distance):
                        uf.union(i, j)
    return [uf.find(i) for i in range(len(sets))]


def duplicate_groups(
    records: Sequence[PromptRecord], max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[list[int]]:
    """Every group of duplicate first turns (singletons included), as positions in ``records``.

    Members keep the order of ``records`` (give them in vote order: the cap keeps the first ones);
    groups come largest first, then by their first member. Records with neither text nor images are
    left out. ``max_distance`` must be 0..63.
    """
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be 0..{HASH_BITS - 1} bits, got {max_distance}")
    buckets: dict[tuple[str, int], dict[tuple[str, ...], list[int]]] = defaultdict(dict)
    for pos, record in enumerate(records):
        text = normalize_prompt(record.text)
        if not text and not record.images:
            continue
        exact = buckets[(text, len(record.images))]
        exact.setdefault(tuple(sorted(record.images)), []).append(pos)
    groups: list[list[int]] = []
    for (_, n_images), exact in buckets.items():
        sets = list(exact)
        if max_distance == 0 or n_images == 0 or len(sets) == 1:
            groups.extend(exact.values())
            continue
        merged: dict[int, list[int]] = defaultdict(list)
        for images, label in zip(sets, _near_components(sets, max_distance), strict=True):
            merged[label].extend(exact[images])
        groups.extend(sorted(members) for members in merged.values())
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups


def default_cap(sizes: Sequence[int], percentile: float = DEFAULT_CAP_PERCENTILE) -> int:
    """Chatbot Arena's cap: the ``percentile`` of the group sizes, rounded down, at least 1."""
    if not len(sizes):
        return 1
    return max(1, math.floor(float(np.percentile(np.asarray(sizes, dtype=np.float64), percentile))))


def capped_out(groups: Iterable[Sequence[int]], cap: int) -> list[int]:
    """Positions beyond the first ``cap`` members of each group (what ``--dedup`` leaves out), sorted."""
    if cap < 1:
        raise ValueError(f"the cap must be at least 1, got {cap}")
    return sorted(pos for members in groups for pos in members[cap:])


@dataclass(frozen=True)
class DuplicateGroup:
    """A group of duplicate first turns as listed for people: its size, the normalised prompt and the
    image tokens of its earliest member, its battles (earliest first), votes per outcome and battles
    per model."""

    size: int
    prompt: str
    images: tuple[str, ...]
    battle_ids: tuple[str, ...]
    outcomes: dict[str, int] = field(default_factory=dict)
    models: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form (``python -m analysis duplicates --format json``)."""
        return {
            "size": self.size,
            "prompt": self.prompt,
            "images": list(self.images),
            "battle_ids": list(self.battle_ids),
            "outcomes": dict(self.outcomes),
            "models": dict(self.models),
        }


def describe_groups(
    records: Sequence[PromptRecord], groups: Iterable[Sequence[int]], *, min_size: int = 2
) -> list[DuplicateGroup]:
    """The groups of at least ``min_size`` members, in the order given, as ``DuplicateGroup`` s."""
    out = []
    for members in groups:
        if len(members) < min_size:
            continue
        chosen = [records[p] for p in members]
        models: Counter[str] = Counter()
        for r in chosen:
            models.update(m for m in (r.model_a, r.model_b) if m)
        outcomes = Counter(r.winner for r in chosen if r.winner)
        out.append(
            DuplicateGroup(
                size=len(members),
                prompt=normalize_prompt(chosen[0].text),
                images=chosen[0].images,
                battle_ids=tuple(r.battle_id for r in chosen),
                outcomes=dict(sorted(outcomes.items())),
                models=dict(sorted(models.items(), key=lambda kv: (-kv[1], kv[0]))),
            )
        )
    return out


@dataclass(frozen=True)
class DedupPlan:
    """What ``--dedup`` does to a set of first turns: the cap used, how many groups it cut, and the
    battle ids it leaves out."""

    cap: int
    groups_capped: int
    excluded: frozenset[str]


def dedup_plan(
    records: Sequence[PromptRecord], *, cap: int | None = None, max_distance: int = DEFAULT_MAX_DISTANCE
) -> DedupPlan:
    """Group ``records`` (in vote order) and cap every group at ``cap`` (None: ``default_cap``)."""
    groups = duplicate_groups(records, max_distance)
    limit = default_cap([len(g) for g in groups]) if cap is None else cap
    out = capped_out(groups, limit)
    return DedupPlan(
        cap=limit,
        groups_capped=sum(1 for g in groups if len(g) > limit),
        excluded=frozenset(records[p].battle_id for p in out),
    )


__all__ = [
    "DEFAULT_CAP_PERCENTILE",
    "DEFAULT_MAX_DISTANCE",
    "HASH_BITS",
    "DedupPlan",
    "DuplicateGroup",
    "PromptRecord",
    "capped_out",
    "dedup_plan",
    "default_cap",
    "describe_groups",
    "duplicate_groups",
    "frame_prompt_records",
    "hamming",
    "image_token",
    "images_match",
    "is_phash",
    "normalize_prompt",
    "prompt_records",
]
