"""SQL stages: read-only executors per database, and SQL extraction from model output."""

from runtime.sql.executor import SQLConfigError, SQLExecutor, SQLOutcome, SQLResult
from runtime.sql.extract import extract_sql, split_statements

__all__ = ["SQLConfigError", "SQLExecutor", "SQLOutcome", "SQLResult", "extract_sql", "split_statements"]
