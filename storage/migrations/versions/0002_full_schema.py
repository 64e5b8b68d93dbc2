"""full schema: model metadata, voter flags, direct chats, tags, feedback, judge verdicts, moderation

Revision ID: 0002
Revises: 0001

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "battle_tags",
        sa.Column("battle_id", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"], ["battles.id"], name=op.f("fk_battle_tags_battle_id_battles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("battle_id", "tag", name=op.f("pk_battle_tags")),
    )
    with op.batch_alter_table("battle_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_battle_tags_tag"), ["tag"], unique=False)

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("battle_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('up', 'down', 'flag')", name=op.f("ck_feedback_kind")),
        sa.ForeignKeyConstraint(
            ["battle_id"], ["battles.id"], name=op.f("fk_feedback_battle_id_battles"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["voter_sessions.id"],
            name=op.f("fk_feedback_session_id_voter_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
        sa.UniqueConstraint("battle_id", "session_id", "kind", name="uq_feedback_battle_session_kind"),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_battle_id"), ["battle_id"], unique=False)

    op.create_table(
        "judge_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("battle_id", sa.String(length=64), nullable=False),
        sa.Column("judge_model", sa.String(length=200), nullable=False),
        sa.Column("template_version", sa.String(length=32), nullable=False),
        sa.Column("answer_order", sa.String(length=2), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=True),
        sa.Column("raw_output", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("answer_order IN ('ab', 'ba')", name=op.f("ck_judge_verdicts_answer_order")),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_judge_verdicts_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_judge_verdicts")),
        sa.UniqueConstraint(
            "battle_id", "judge_model", "template_version", "answer_order", name="uq_judge_verdicts_key"
        ),
    )
    with op.batch_alter_table("judge_verdicts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_judge_verdicts_battle_id"), ["battle_id"], unique=False)

    op.create_table(
        "moderation_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("battle_id", sa.String(length=64), nullable=True),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("resolved", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_moderation_flags_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_sha256"],
            ["images.sha256"],
            name=op.f("fk_moderation_flags_image_sha256_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["voter_sessions.id"],
            name=op.f("fk_moderation_flags_session_id_voter_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_flags")),
    )
    with op.batch_alter_table("moderation_flags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_moderation_flags_battle_id"), ["battle_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_moderation_flags_session_id"), ["session_id"], unique=False)

    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("identity_leak", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("language", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=16), server_default="arena", nullable=False))
        batch_op.alter_column("model_b_id", existing_type=sa.INTEGER(), nullable=True)
        # Direct chats have one model: model_b_id may be NULL, and only for them.
        batch_op.drop_constraint(op.f("ck_battles_mode"), type_="check")
        batch_op.drop_constraint(op.f("ck_battles_distinct_models"), type_="check")
        batch_op.create_check_constraint("mode", "mode IN ('anony', 'named', 'direct')")
        batch_op.create_check_constraint("distinct_models", "model_b_id IS NULL OR model_a_id <> model_b_id")
        batch_op.create_check_constraint("direct_has_one_model", "(mode = 'direct') = (model_b_id IS NULL)")
        batch_op.drop_constraint(batch_op.f("fk_battles_session_id_voter_sessions"), type_="foreignkey")
        batch_op.create_foreign_key(
            batch_op.f("fk_battles_session_id_voter_sessions"),
            "voter_sessions",
            ["session_id"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("license", sa.String(length=200), server_default="", nullable=False))
        batch_op.add_column(sa.Column("link", sa.String(length=500), server_default="", nullable=False))
        batch_op.add_column(sa.Column("knowledge_cutoff", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("deprecated", sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("output_tokens", sa.Integer(), nullable=True))

    with op.batch_alter_table("voter_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ip_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("banned", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("anomalous", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(batch_op.f("ix_voter_sessions_ip_hash"), ["ip_hash"], unique=False)

    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("judge", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("client_token", sa.String(length=64), nullable=True))
        batch_op.drop_constraint(batch_op.f("fk_votes_session_id_voter_sessions"), type_="foreignkey")
        batch_op.create_foreign_key(
            batch_op.f("fk_votes_session_id_voter_sessions"),
            "voter_sessions",
            ["session_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_votes_session_id_voter_sessions"), type_="foreignkey")
        batch_op.create_foreign_key(
            batch_op.f("fk_votes_session_id_voter_sessions"), "voter_sessions", ["session_id"], ["id"]
        )
        batch_op.drop_column("client_token")
        batch_op.drop_column("reason")
        batch_op.drop_column("judge")

    with op.batch_alter_table("voter_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voter_sessions_ip_hash"))
        batch_op.drop_column("anomalous")
        batch_op.drop_column("banned")
        batch_op.drop_column("ip_hash")

    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_column("output_tokens")

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("deprecated")
        batch_op.drop_column("knowledge_cutoff")
        batch_op.drop_column("link")
        batch_op.drop_column("license")

    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_battles_session_id_voter_sessions"), type_="foreignkey")
        batch_op.create_foreign_key(
            batch_op.f("fk_battles_session_id_voter_sessions"), "voter_sessions", ["session_id"], ["id"]
        )
        batch_op.drop_constraint(op.f("ck_battles_direct_has_one_model"), type_="check")
        batch_op.drop_constraint(op.f("ck_battles_distinct_models"), type_="check")
        batch_op.drop_constraint(op.f("ck_battles_mode"), type_="check")
        batch_op.create_check_constraint("mode", "mode IN ('anony', 'named')")
        batch_op.create_check_constraint("distinct_models", "model_a_id <> model_b_id")
        batch_op.alter_column("model_b_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("source")
        batch_op.drop_column("language")
        batch_op.drop_column("identity_leak")

    with op.batch_alter_table("moderation_flags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_moderation_flags_session_id"))
        batch_op.drop_index(batch_op.f("ix_moderation_flags_battle_id"))

    op.drop_table("moderation_flags")
    with op.batch_alter_table("judge_verdicts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_judge_verdicts_battle_id"))

    op.drop_table("judge_verdicts")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feedback_battle_id"))

    op.drop_table("feedback")
    with op.batch_alter_table("battle_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battle_tags_tag"))

    op.drop_table("battle_tags")
