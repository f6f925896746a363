"""Alembic migrations of the gateway's database; the gateway upgrades to head at startup (see Store.migrate)."""
