"""The per-side style columns style control needs, taken from whatever a battle frame carries.

``analysis.style`` fits Bradley-Terry with answer-length and markdown covariates; this module finds
those covariates in a frame: ready-made ``len_a``/``len_b`` columns, the answer texts (from a
database), FastChat conversations (from a file) or Chatbot Arena's ``conv_metadata`` counts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.style import add_style_columns


def with_style_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The battles with the per-side style columns style control needs (``len_a``/``len_b`` and markdown
    counts), taken from what the records carry, in this order of preference:

    * ``len_a``/``len_b`` already present: kept as they are;
    * ``answer_a``/``answer_b`` texts (``analysis.io.load_battles_db(..., answers=True)``);
    * ``conversation_a``/``conversation_b`` (FastChat / our export): the assistant turns' text;
    * ``conv_metadata`` (Chatbot Arena's clean battles): its token and markdown counts.

    Raises ``ValueError`` naming these options when none is there.
    """
    if {"len_a", "len_b"} <= set(df.columns):
        return df
    if {"answer_a", "answer_b"} <= set(df.columns):
        return add_style_columns(df, "answer_a", "answer_b")
    if {"conversation_a", "conversation_b"} <= set(df.columns):
        out = df.assign(
            answer_a=[_assistant_text(c) for c in df["conversation_a"]],
            answer_b=[_assistant_text(c) for c in df["conversation_b"]],
        )
        return add_style_columns(out, "answer_a", "answer_b")
    if "conv_metadata" in df.columns:
        return _style_from_metadata(df)
    raise ValueError(
        "style control needs each battle's answers: len_a/len_b columns, conversation_a/conversation_b, "
        "conv_metadata, or a database (read with answers)"
    )


def _assistant_text(conversation: Any) -> str:
    """The assistant turns of a FastChat conversation (a list of {role, content}) joined by blank lines."""
    if hasattr(conversation, "tolist"):
        conversation = conversation.tolist()
    if not isinstance(conversation, list):
        return ""
    return "\n\n".join(
        str(m.get("content") or "")
        for m in conversation
        if isinstance(m, dict) and m.get("role") == "assistant"
    )


def _style_from_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """Style columns from Chatbot Arena's ``conv_metadata`` (assistant token counts, markdown counts)."""
    out = df.copy()
    meta = [m if isinstance(m, dict) else {} for m in df["conv_metadata"]]
    for side in ("a", "b"):
        out[f"len_{side}"] = [int(m.get(f"sum_assistant_{side}_tokens") or 0) for m in meta]
        for feature in ("header_count", "list_count", "bold_count"):
            out[f"{feature}_{side}"] = [
                int(sum((m.get(f"{feature}_{side}") or {}).values()))
                if isinstance(m.get(f"{feature}_{side}"), dict)
                else int(m.get(f"{feature}_{side}") or 0)
                for m in meta
            ]
    return out


__all__ = ["with_style_columns"]
