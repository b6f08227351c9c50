"""articles.classified_version

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # classify_pending found its work with an anti-join against classifications, which reads
    # every article on each run (8 ms per pending article at a million). The version of the
    # current decision, kept on the article and indexed, makes the queue an index range.
    # A nullable column without a default: a plain ALTER TABLE on both backends, no table copy.
    op.add_column("articles", sa.Column("classified_version", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE articles SET classified_version = "
        "(SELECT c.version FROM classifications c WHERE c.article_id = articles.id) "
        "WHERE EXISTS (SELECT 1 FROM classifications c WHERE c.article_id = articles.id)"
    )
    op.create_index("ix_articles_classified_version", "articles", ["classified_version"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_articles_classified_version", table_name="articles")
    # In place (SQLite >= 3.35), not a batch copy: with foreign keys on, dropping the old
    # articles table would cascade into classifications, URLs and the dedupe index rows.
    op.drop_column("articles", "classified_version")
