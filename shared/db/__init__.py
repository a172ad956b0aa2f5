"""Database access: the async engine factory, the tables and the Alembic migrations."""
