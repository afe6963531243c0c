"""audit chain: sequence number, previous hash and own hash on every audit entry; the one-row chain head

Existing entries are chained here, in id order (the order they were written in).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PAGE = 5000


def upgrade() -> None:
    from issuer import audit  # the hash is defined once, there

    op.add_column("audit_log", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("audit_log", sa.Column("entry_hash", sa.String(length=64), nullable=True))
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_head_one_row"),
    )

    log = sa.table("audit_log", sa.column("id", sa.Integer()), sa.column("at", sa.DateTime(timezone=True)),
                   sa.column("actor", sa.String()), sa.column("action", sa.String()),
                   sa.column("subject", sa.String()), sa.column("detail", sa.JSON()),
                   sa.column("seq", sa.BigInteger()), sa.column("prev_hash", sa.String()),
                   sa.column("entry_hash", sa.String()))
    conn = op.get_bind()
    seq, prev, last_id = 0, audit.GENESIS, 0
    while True:
        rows = conn.execute(sa.select(log.c.id, log.c.at, log.c.actor, log.c.action, log.c.subject, log.c.detail)
                            .where(log.c.id > last_id).order_by(log.c.id).limit(PAGE)).all()
        if not rows:
            break
        values = []
        for row in rows:
            seq += 1
            own = audit.link(seq, audit.body(row.at, row.actor, row.action, row.subject, row.detail), prev)
            values.append({"row_id": row.id, "seq": seq, "prev_hash": prev, "entry_hash": own})
            prev = own
        conn.execute(log.update().where(log.c.id == sa.bindparam("row_id"))
                     .values(seq=sa.bindparam("seq"), prev_hash=sa.bindparam("prev_hash"),
                             entry_hash=sa.bindparam("entry_hash")), values)
        last_id = rows[-1].id
    op.bulk_insert(head, [{"id": 1, "seq": seq, "hash": prev}])

    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("entry_hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint("uq_audit_log_seq", ["seq"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_constraint("uq_audit_log_seq", type_="unique")
        batch.drop_column("entry_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
    op.drop_table("audit_chain_head")
