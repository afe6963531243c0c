"""qr codes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('qr_png', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('qr_svg', sa.Text(), nullable=True))

    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('qr_png', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('qr_svg', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_column('qr_svg')
        batch_op.drop_column('qr_png')

    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.drop_column('qr_svg')
        batch_op.drop_column('qr_png')
