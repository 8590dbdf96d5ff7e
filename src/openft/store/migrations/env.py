"""Alembic environment: runs migrations on the connection openft hands over (or the configured URL)."""

from alembic import context
from sqlalchemy import create_engine

import openft.store.distill_tables  # noqa: F401  (distillations and their teacher cache)
import openft.store.eval_tables  # noqa: F401  (registers the eval tables on Base.metadata)
import openft.store.moderation_tables  # noqa: F401  (moderation policy per organization)
import openft.store.openai_eval_tables  # noqa: F401  (OpenAI Evals API: evals, runs, output items)
import openft.store.queue_tables  # noqa: F401  (the work queue)
from openft.store.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
