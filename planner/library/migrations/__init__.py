"""Alembic migrations of the case library, run by :func:`planner.library.open_library`."""
