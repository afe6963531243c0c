"""awards

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('awards',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('credential_url', sa.String(length=500), nullable=False),
    sa.Column('recipient_email', sa.String(length=320), nullable=True),
    sa.Column('recipient_did', sa.String(length=500), nullable=True),
    sa.Column('level', sa.String(length=40), nullable=False),
    sa.Column('pathway', sa.String(length=80), nullable=False),
    sa.Column('title_en', sa.String(length=300), nullable=False),
    sa.Column('achievement_id', sa.String(length=500), nullable=False),
    sa.Column('credits', sa.Double(), nullable=False),
    sa.Column('qf_level', sa.Integer(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('document_sha256', sa.String(length=64), nullable=False),
    sa.Column('jwt', sa.Text(), nullable=True),
    sa.Column('issued_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('credential_url')
    )
    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_awards_recipient_did'), ['recipient_did'], unique=False)
        batch_op.create_index(batch_op.f('ix_awards_recipient_email'), ['recipient_email'], unique=False)

    op.create_table('used_challenges',
    sa.Column('challenge', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('challenge')
    )
    with op.batch_alter_table('used_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_challenges_expires_at'), ['expires_at'], unique=False)

    op.create_table('award_badges',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('award_id', sa.String(length=64), nullable=False),
    sa.Column('badge_id', sa.String(length=500), nullable=False),
    sa.Column('pathway', sa.String(length=80), nullable=False),
    sa.Column('credits', sa.Double(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['award_id'], ['awards.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('badge_id', 'pathway', name='uq_badge_pathway')
    )
    with op.batch_alter_table('award_badges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_award_badges_award_id'), ['award_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_award_badges_badge_id'), ['badge_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('award_badges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_award_badges_badge_id'))
        batch_op.drop_index(batch_op.f('ix_award_badges_award_id'))

    op.drop_table('award_badges')
    with op.batch_alter_table('used_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_challenges_expires_at'))

    op.drop_table('used_challenges')
    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_awards_recipient_email'))
        batch_op.drop_index(batch_op.f('ix_awards_recipient_did'))

    op.drop_table('awards')
