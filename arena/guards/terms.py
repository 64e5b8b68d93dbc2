"""The terms of use a voter accepts before the first battle: the text and its version."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TERMS = """### Terms of use
Before you start, please read and accept these terms.

- **Research use.** Your prompts, images, the models' answers and your votes are stored and may be
  published in anonymised research datasets and leaderboards.
- **No private data.** Do not upload images or write text that contain personal, private or
  confidential information, or anything you do not have the right to share.
- **No harmful content.** Do not submit illegal, sexual, hateful, violent or otherwise harmful
  content. Requests may be checked automatically and refused.
- **Vote honestly.** Judge the answers on their merits. Automated, random or coordinated voting is
  detected and removed from the leaderboard, and may get your session blocked.
- **Models make mistakes.** Answers come from experimental AI models and may be wrong or offensive;
  do not rely on them.
"""


@dataclass(frozen=True)
class Terms:
    """The terms shown to voters, and the version recorded with each acceptance."""

    text: str
    version: str

    @classmethod
    def load(cls, path: Path | None = None, version: str | None = None) -> Terms:
        """The terms from a Markdown file (or the built-in ones); the version defaults to a hash of the text."""
        text = DEFAULT_TERMS
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the terms of use from {path}: {exc}") from exc
            if not text.strip():
                raise ValueError(f"the terms of use file {path} is empty")
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return cls(text=text, version=(version or f"sha256:{digest}")[:64])
