"""votes worth counting: identity-leak evidence, vote decision time, accepted terms of use; an index
on battles.created_at for time windows

Revision ID: 0005
Revises: 0004

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity_leak_term", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("identity_leak_side", sa.String(length=1), nullable=True))
        batch_op.create_index(batch_op.f("ix_battles_created_at"), ["created_at"], unique=False)
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision_s", sa.Float(), nullable=True))
    with op.batch_alter_table("voter_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("terms_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("terms_accepted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("voter_sessions", schema=None) as batch_op:
        batch_op.drop_column("terms_accepted_at")
        batch_op.drop_column("terms_version")
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_column("decision_s")
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battles_created_at"))
        batch_op.drop_column("identity_leak_side")
        batch_op.drop_column("identity_leak_term")
