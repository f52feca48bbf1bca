"""The orchestrator tests' fixtures (a private copy of the sales database) for the API tests."""

from tests.runtime.orchestrator.conftest import sales_db, sales_db_master  # noqa: F401  (pytest fixtures)
