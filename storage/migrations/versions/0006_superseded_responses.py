"""regenerate: superseded responses stay stored; only the current answer per turn and side is unique

Revision ID: 0006
Revises: 0005

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT = "superseded = false"


def upgrade() -> None:
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.drop_constraint("uq_responses_turn_side", type_="unique")
    op.create_index(
        "uq_responses_turn_side_current",
        "responses",
        ["turn_id", "side"],
        unique=True,
        sqlite_where=sa.text(CURRENT),
        postgresql_where=sa.text(CURRENT),
    )


def downgrade() -> None:
    # Superseded answers cannot live under the old constraint: they go.
    op.execute(sa.text("DELETE FROM responses WHERE superseded = true"))
    op.drop_index("uq_responses_turn_side_current", table_name="responses")
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_responses_turn_side", ["turn_id", "side"])
        batch_op.drop_column("superseded")
