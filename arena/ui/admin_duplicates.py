"""The admin page's Duplicates tab: the largest groups of duplicate first turns (the same question
pasted again and again, with the same or a near-identical picture), which ``python -m analysis ratings
--dedup`` caps. Read from :meth:`arena.admin.AdminService.duplicate_groups` when the tab is opened.
"""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr
import pandas as pd

from analysis.dedup import DuplicateGroup
from arena.admin import AdminService
from arena.ui.loading import TabLoader
from storage.vocabulary import WINNERS

COLUMNS = [
    "Size",
    "Prompt (normalised)",
    "Images (pHash)",
    "Votes A / B / tie / both bad",
    "Models",
    "First battle",
]
#: Characters of the normalised prompt shown (the cell is plain text: Gradio escapes it).
PROMPT_CHARS = 160
#: Models listed per group (the most frequent first).
MODELS_SHOWN = 4


def duplicates_frame(groups: Sequence[DuplicateGroup]) -> pd.DataFrame:
    """One row per group: size, the prompt cut at ``PROMPT_CHARS``, the pictures' hashes, the votes
    by outcome, the models most often in it and its earliest battle."""
    rows = []
    for g in groups:
        prompt = g.prompt if len(g.prompt) <= PROMPT_CHARS else g.prompt[: PROMPT_CHARS - 1] + "…"
        models = list(g.models.items())
        shown = ", ".join(f"{m} ×{n}" for m, n in models[:MODELS_SHOWN])
        if len(models) > MODELS_SHOWN:
            shown += f", +{len(models) - MODELS_SHOWN} more"
        rows.append(
            [
                g.size,
                prompt or "(no text)",
                " ".join(g.images) or "(text only)",
                " / ".join(str(g.outcomes.get(w, 0)) for w in WINNERS),
                shown,
                g.battle_ids[0],
            ]
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def build_duplicates_tab(admin: AdminService, top: int = 20) -> TabLoader:
    """Lay out the Duplicates tab in the current Blocks context; returns how it fills itself."""
    gr.Markdown(
        f"The {top} largest groups of duplicate prompts among the votes the leaderboard counts: same "
        "first-turn text once normalised (case, Unicode form, spaces, punctuation at the ends) and the "
        "same pictures up to a few pHash bits. `python -m analysis ratings --dedup` caps each group "
        "(by default at the 99.99th percentile of group sizes); `python -m analysis duplicates` lists "
        "them too. Open a battle by its id in the Battles & voters tab."
    )
    table = gr.Dataframe(
        value=duplicates_frame([]), interactive=False, wrap=True, elem_id="admin-duplicates-table"
    )
    refresh = gr.Button("Refresh", elem_id="admin-duplicates-refresh", size="sm")

    def load() -> pd.DataFrame:
        return duplicates_frame(admin.duplicate_groups(top=top))

    refresh.click(load, None, [table], api_visibility="private")
    return TabLoader(load, [], [table])
