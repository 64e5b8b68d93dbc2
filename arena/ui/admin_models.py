"""The admin page's Models tab: every model's settings, votes and recent performance, a form to
change a model (enabled, sampling weight, deprecated) and the audit log of operator actions.

Callbacks only turn Gradio values into :class:`arena.admin.AdminService` calls and its records into
tables; the service validates and audits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import gradio as gr
import pandas as pd

from arena.admin import AdminError, AdminService, AuditRow, ModelOverview
from arena.ui.loading import TabLoader

MODEL_COLUMNS = [
    "Model",
    "Display name",
    "Enabled",
    "Weight",
    "Deprecated",
    "Drawn",
    "Votes",
    "Votes (24 h)",
    "Share of battles (24 h)",
    "Health",
    "TTFT p50 (s)",
    "TTFT p95 (s)",
    "Tokens/s",
    "Error rate",
]
AUDIT_COLUMNS = ["When (UTC)", "Who", "Action", "Target", "Old", "New"]


def when(moment: datetime | None) -> str:
    """A timestamp as the admin page prints it (UTC, to the second)."""
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def actor_of(request: gr.Request | None) -> str:
    """Who the audit log names for a change made on the page: ``admin:<signed-in user>``."""
    user = getattr(request, "username", None) if request is not None else None
    return f"admin:{user or 'unknown'}"


def _number(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(value, digits)


def models_frame(rows: Sequence[ModelOverview]) -> pd.DataFrame:
    """The overview as the Models table shows it."""
    return pd.DataFrame(
        [
            [
                r.name,
                r.display_name,
                "yes" if r.enabled else "no",
                r.sampling_weight,
                "yes" if r.deprecated else "no",
                "yes" if r.sampled else "no",
                r.votes_total,
                r.votes_24h,
                "" if r.battle_share_24h is None else f"{100 * r.battle_share_24h:.1f}%",
                r.health,
                _number(r.ttft_median_s, 2),
                _number(r.ttft_p95_s, 2),
                _number(r.tokens_per_s, 1),
                "" if r.error_rate is None else f"{100 * r.error_rate:.1f}%",
            ]
            for r in rows
        ],
        columns=MODEL_COLUMNS,
    )


def audit_frame(rows: Sequence[AuditRow]) -> pd.DataFrame:
    """The audit log as a table, newest first."""
    return pd.DataFrame(
        [
            [when(r.created_at), r.actor, r.action, r.target, json.dumps(r.old), json.dumps(r.new)]
            for r in rows
        ],
        columns=AUDIT_COLUMNS,
    )


def build_models_tab(admin: AdminService) -> TabLoader:
    """Lay out the Models tab in the current Blocks context; returns how it fills itself when opened."""
    table = gr.Dataframe(
        value=models_frame([]), interactive=False, wrap=True, elem_id="admin-models-table", label="Models"
    )
    refresh = gr.Button("Refresh", elem_id="admin-models-refresh", size="sm")
    gr.Markdown(
        "### Change a model\nThe change is stored in the database and every running arena process "
        "applies it within `ARENA_MODEL_REFRESH_S` seconds (default 5). A deprecated model, a disabled "
        "one, or one with weight 0 is never drawn in battles; its votes stay on the leaderboards."
    )
    with gr.Row():
        name = gr.Dropdown(choices=[], label="Model", elem_id="admin-model-name", scale=2)
        enabled = gr.Checkbox(label="Enabled", elem_id="admin-model-enabled")
        deprecated = gr.Checkbox(label="Deprecated", elem_id="admin-model-deprecated")
        weight = gr.Number(label="Sampling weight (≥ 0)", elem_id="admin-model-weight")
    apply = gr.Button("Apply", variant="primary", elem_id="admin-model-apply")
    message = gr.Markdown("", elem_id="admin-model-message")
    gr.Markdown("### Audit log")
    audit = gr.Dataframe(
        value=audit_frame([]), interactive=False, wrap=True, elem_id="admin-audit-table", label="Audit log"
    )

    def load(selected: str | None = None) -> tuple[Any, ...]:
        rows = admin.models_overview()
        names = [r.name for r in rows]
        keep = selected if selected in names else (names[0] if names else None)
        return (
            models_frame(rows),
            gr.update(choices=names, value=keep),
            *_form_values(rows, keep),
            audit_frame(admin.audit_log()),
        )

    def pick(selected: str | None) -> tuple[Any, Any, Any]:
        return _form_values(admin.models_overview(), selected)

    def on_apply(
        selected: str | None,
        is_enabled: bool,
        is_deprecated: bool,
        new_weight: float | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        if not selected:
            return (*load(selected), "Choose a model first.")
        try:
            row = admin.set_model(
                actor_of(request), selected, enabled=is_enabled, weight=new_weight, deprecated=is_deprecated
            )
        except AdminError as exc:
            return (*load(selected), f"❌ Not changed: {exc}")
        state = "drawn in battles" if row.sampled else "not drawn in battles"
        note = (
            f"✅ {row.name}: enabled={row.enabled}, weight={row.sampling_weight:g}, "
            f"deprecated={row.deprecated} ({state})."
        )
        return (*load(selected), note)

    outputs = [table, name, enabled, deprecated, weight, audit]
    refresh.click(load, [name], outputs, api_visibility="private")
    name.change(pick, [name], [enabled, deprecated, weight], api_visibility="private")
    apply.click(on_apply, [name, enabled, deprecated, weight], [*outputs, message], api_visibility="private")
    return TabLoader(load, [name], outputs)


def _form_values(rows: Sequence[ModelOverview], selected: str | None) -> tuple[Any, Any, Any]:
    """The form's enabled / deprecated / weight for the selected model."""
    for row in rows:
        if row.name == selected:
            return row.enabled, row.deprecated, row.sampling_weight
    return False, False, None
