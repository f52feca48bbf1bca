"""Taking the SQL out of model output (never cut to its first statement); splitting without breaking literals."""

from __future__ import annotations

import pytest

from runtime.sql.extract import extract_sql, split_statements


@pytest.mark.parametrize(
    ("output", "statement"),
    [
        ("```sql\nSELECT region FROM sales;\n```\nThis query...", "SELECT region FROM sales"),
        ("```sql\nSELECT * FROM sales WHERE region = 'Europe'", "SELECT * FROM sales WHERE region = 'Europe'"),
        ("```SELECT 1```", "SELECT 1"),
        # Later statements are kept, so the executor refuses the whole output instead of running part of it.
        ("Here is the query: SELECT a FROM t; DROP TABLE t;", "SELECT a FROM t;\nDROP TABLE t"),
        ("  select ';' as semi, 'it''s' from t; select 2", "select ';' as semi, 'it''s' from t;\nselect 2"),
        ("SELECT 1 -- note; DROP\n; COPY t TO PROGRAM 'id'", "SELECT 1 -- note; DROP;\nCOPY t TO PROGRAM 'id'"),
        # Prose after the query is not a statement; code that is not a statement is kept (and refused).
        ("SELECT a FROM t; This query lists every a.", "SELECT a FROM t"),
        ("/* /* */ SELECT 1; */ DELETE FROM t", "/* /* */ SELECT 1;\n*/ DELETE FROM t"),
        # A statement keyword the prose skipper does not know still starts the SQL.
        ("REPLACE INTO t VALUES (1)", "REPLACE INTO t VALUES (1)"),
        ("Sure: COPY t TO PROGRAM 'id'", "COPY t TO PROGRAM 'id'"),
        ("I will copy this: SELECT 1", "SELECT 1"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH x AS (SELECT 1) SELECT * FROM x"),
        ("I cannot answer that.", "I cannot answer that."),
        ("", ""),
        ("```sql\n-- only a comment\n```", ""),
    ],
)
def test_extract_sql(output: str, statement: str) -> None:
    assert extract_sql(output) == statement


def test_split_respects_quotes_comments_and_dollar_quotes() -> None:
    sql = """select 'a;b', "c;d" from t -- x; y
    ; /* ; */ select $tag$ ; $tag$, $$;$$ ;;  -- trailing ;
    """
    assert split_statements(sql) == [
        "select 'a;b', \"c;d\" from t -- x; y",
        "/* ; */ select $tag$ ; $tag$, $$;$$",
    ]


def test_split_finds_hidden_second_statements() -> None:
    assert len(split_statements("select 1;delete from t")) == 2
    assert len(split_statements("select 1 -- ;\n")) == 1
    assert split_statements("  ;  ; ") == []
