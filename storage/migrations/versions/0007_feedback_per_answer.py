"""direct chat feedback per answer: feedback.turn_id; one row per (battle, turn, session, kind), and
one per (battle, session, kind) for feedback on a battle as a whole (no turn)

Revision ID: 0007
Revises: 0006

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ON_ANSWER = "turn_id IS NOT NULL"
ON_BATTLE = "turn_id IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turn_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_feedback_turn_id_turns"), "turns", ["turn_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index(batch_op.f("ix_feedback_turn_id"), ["turn_id"], unique=False)
        batch_op.drop_constraint("uq_feedback_battle_session_kind", type_="unique")
    # Two partial unique indexes: a plain one over a nullable turn_id would let rows without a turn
    # repeat (NULLs differ), and both work as ON CONFLICT targets on SQLite and PostgreSQL alike.
    op.create_index(
        "uq_feedback_on_answer",
        "feedback",
        ["battle_id", "turn_id", "session_id", "kind"],
        unique=True,
        sqlite_where=sa.text(ON_ANSWER),
        postgresql_where=sa.text(ON_ANSWER),
    )
    op.create_index(
        "uq_feedback_on_battle",
        "feedback",
        ["battle_id", "session_id", "kind"],
        unique=True,
        sqlite_where=sa.text(ON_BATTLE),
        postgresql_where=sa.text(ON_BATTLE),
    )


def downgrade() -> None:
    # Feedback on single answers cannot live under the old one-per-battle constraint: it goes.
    op.execute(sa.text("DELETE FROM feedback WHERE turn_id IS NOT NULL"))
    op.drop_index("uq_feedback_on_battle", table_name="feedback")
    op.drop_index("uq_feedback_on_answer", table_name="feedback")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_feedback_battle_session_kind", ["battle_id", "session_id", "kind"]
        )
        batch_op.drop_index(batch_op.f("ix_feedback_turn_id"))
        batch_op.drop_constraint(batch_op.f("fk_feedback_turn_id_turns"), type_="foreignkey")
        batch_op.drop_column("turn_id")
