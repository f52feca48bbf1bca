"""SQL stages: read-only executors per database, and SQL extraction from model output."""

from runtime.sql.executor import DEFAULT_MAX_RESULT_BYTES, SQLConfigError, SQLExecutor, SQLOutcome, SQLResult
from runtime.sql.extract import extract_sql, split_statements
from runtime.sql.policy import RefusedStatement, check_query

__all__ = ["DEFAULT_MAX_RESULT_BYTES", "RefusedStatement", "SQLConfigError", "SQLExecutor", "SQLOutcome",
           "SQLResult", "check_query", "extract_sql", "split_statements"]
