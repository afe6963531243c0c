"""wallets: holder-bound copies, OID4VCI offers and VC API exchanges, c_nonces

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wallet_copies",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("credential_id", sa.String(length=100), nullable=False, unique=True),
        sa.Column("original_id", sa.String(length=64), nullable=False),
        sa.Column("original_kind", sa.String(length=10), nullable=False),
        sa.Column("holder_did", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("offer_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_wallet_copies_original_id", "wallet_copies", ["original_id"])
    op.create_index("ix_wallet_copies_offer_id", "wallet_copies", ["offer_id"])
    op.create_table(
        "wallet_offers",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("original_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=True, unique=True),
        sa.Column("tx_code_hash", sa.String(length=64), nullable=True),
        sa.Column("tx_code_failures", sa.Integer(), nullable=False),
        sa.Column("access_token_hash", sa.String(length=64), nullable=True, unique=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("format", sa.String(length=20), nullable=True),
        sa.Column("challenge", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_wallet_offers_original_id", "wallet_offers", ["original_id"])
    op.create_table(
        "wallet_nonces",
        sa.Column("nonce_hash", sa.String(length=64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("wallet_nonces")
    op.drop_index("ix_wallet_offers_original_id", table_name="wallet_offers")
    op.drop_table("wallet_offers")
    op.drop_index("ix_wallet_copies_offer_id", table_name="wallet_copies")
    op.drop_index("ix_wallet_copies_original_id", table_name="wallet_copies")
    op.drop_table("wallet_copies")
