"""knowing what was asked: model-run battle labels (category, language, image need) and who set each
tag, image descriptions for text-only judges, and perceptual image hashes for near-duplicate prompts

Revision ID: 0008
Revises: 0007

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "battle_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("battle_id", sa.String(length=64), nullable=False),
        sa.Column("tagger", sa.String(length=200), nullable=False),
        sa.Column("template_version", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"], ["battles.id"], name=op.f("fk_battle_labels_battle_id_battles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battle_labels")),
        sa.UniqueConstraint("battle_id", "tagger", "template_version", "task", name="uq_battle_labels_key"),
    )
    op.create_index(op.f("ix_battle_labels_battle_id"), "battle_labels", ["battle_id"], unique=False)
    op.create_index(op.f("ix_battle_labels_task"), "battle_labels", ["task"], unique=False)
    op.create_table(
        "image_descriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("describer", sa.String(length=200), nullable=False),
        sa.Column("template_version", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_sha256"],
            ["images.sha256"],
            name=op.f("fk_image_descriptions_image_sha256_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_descriptions")),
        sa.UniqueConstraint("image_sha256", "describer", "template_version", name="uq_image_descriptions_key"),
    )
    op.create_index(
        op.f("ix_image_descriptions_image_sha256"), "image_descriptions", ["image_sha256"], unique=False
    )
    with op.batch_alter_table("battle_tags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=240), nullable=True))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phash", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_images_phash"), ["phash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_phash"))
        batch_op.drop_column("phash")
    with op.batch_alter_table("battle_tags", schema=None) as batch_op:
        batch_op.drop_column("source")
    op.drop_index(op.f("ix_image_descriptions_image_sha256"), table_name="image_descriptions")
    op.drop_table("image_descriptions")
    op.drop_index(op.f("ix_battle_labels_task"), table_name="battle_labels")
    op.drop_index(op.f("ix_battle_labels_battle_id"), table_name="battle_labels")
    op.drop_table("battle_labels")
