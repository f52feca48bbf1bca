"""The SQL attack corpus: statements a hostile user (or model) may send, each of which must be refused.

Importable by every suite that replays it (through the executor here, end to end through
``POST /v1/runs`` elsewhere). Each :class:`Attack` names its dialect, the statement and why it is
dangerous. Statements read or write the table ``sales(region, quarter, amount, day)`` unqualified
(executors put the scratch schema on the ``search_path``), the sequence ``ids`` on PostgreSQL, and
host paths that all start with :data:`tests.security.databases.ATTACK_PATH_PREFIX`, so a suite can
check that none of them appeared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Attack:
    dialect: Dialect
    statement: str
    why: str

    @property
    def id(self) -> str:
        """A short, unique test id."""
        return f"{self.dialect[:2]}:{self.statement[:60]}"


def _both(statement: str, why: str) -> list[Attack]:
    return [Attack("sqlite", statement, why), Attack("postgresql", statement, why)]


def _pg(statement: str, why: str) -> list[Attack]:
    return [Attack("postgresql", statement, why)]


def _lite(statement: str, why: str) -> list[Attack]:
    return [Attack("sqlite", statement, why)]


ATTACKS: tuple[Attack, ...] = tuple([
    # ---------------------------------------------------------------- writes
    *_both("INSERT INTO sales VALUES ('asia', 'Q1', 9, '2024-01-01')", "write"),
    *_both("UPDATE sales SET amount = 0", "write"),
    *_both("DELETE FROM sales", "write"),
    *_lite("REPLACE INTO sales VALUES ('eu', 'Q1', 0, '2024-01-02')", "write (SQLite REPLACE)"),
    *_lite("INSERT OR REPLACE INTO sales SELECT * FROM sales", "write (SQLite conflict clause)"),
    *_pg("INSERT INTO sales SELECT * FROM sales ON CONFLICT DO NOTHING", "write (upsert)"),
    *_pg("MERGE INTO sales s USING sales t ON false WHEN NOT MATCHED THEN INSERT VALUES ('x', 'Q1', 1, "
         "'2024-01-01')", "write (MERGE)"),
    *_pg("TRUNCATE sales", "write (TRUNCATE)"),
    *_both("WITH gone AS (DELETE FROM sales RETURNING *) SELECT count(*) FROM gone", "data-modifying CTE"),
    *_both("WITH RECURSIVE r(x) AS (SELECT 1) INSERT INTO sales SELECT 'r', 'Q1', x, '2024-01-01' FROM r",
           "write behind WITH"),
    *_pg("SELECT * INTO stolen FROM sales", "SELECT ... INTO creates a table"),
    *_pg("SELECT nextval('ids')", "advances a sequence outside the transaction"),
    *_pg("SELECT setval('ids', 1000)", "sets a sequence outside the transaction"),
    # ---------------------------------------------------------------- DDL and privileges
    *_both("DROP TABLE sales", "DDL"),
    *_both("CREATE TABLE evil(x int)", "DDL"),
    *_both("ALTER TABLE sales ADD COLUMN y int", "DDL"),
    *_both("CREATE INDEX evil_idx ON sales(region)", "DDL"),
    *_both("CREATE VIEW evil_view AS SELECT * FROM sales", "DDL"),
    *_both("CREATE TEMP TABLE evil_tmp AS SELECT 1 AS x", "temporary objects"),
    *_lite("CREATE TRIGGER evil_trg AFTER INSERT ON sales BEGIN DELETE FROM sales; END", "trigger"),
    *_lite("CREATE VIRTUAL TABLE evil_fts USING fts5(a)", "virtual table"),
    *_pg("CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS $$SELECT 1$$", "DDL: functions"),
    *_pg("CREATE EXTENSION IF NOT EXISTS dblink", "extension: other servers"),
    *_pg("CREATE ROLE evil SUPERUSER LOGIN", "role escalation"),
    *_pg("ALTER ROLE CURRENT_USER SUPERUSER", "role escalation"),
    *_pg("GRANT pg_execute_server_program TO CURRENT_USER", "privilege escalation"),
    *_pg("ALTER SYSTEM SET log_min_messages = 'panic'", "server configuration"),
    *_pg("COMMENT ON TABLE sales IS 'owned'", "catalog write"),
    # ---------------------------------------------------------------- COPY / LOAD / DO / CALL
    *_pg("COPY (SELECT 1) TO PROGRAM 'touch /tmp/cortex-attack-program'", "runs a program as the server's OS user"),
    *_pg("COPY sales TO '/tmp/cortex-attack-copy'", "writes a server file"),
    *_pg("COPY sales FROM '/etc/hostname'", "reads a server file into a table"),
    *_pg("COPY sales FROM PROGRAM 'id'", "runs a program"),
    *_pg("COPY sales TO STDOUT", "COPY out of the protocol"),
    *_pg("LOAD '/tmp/cortex-attack.so'", "loads a shared library"),
    *_pg("DO $$BEGIN PERFORM pg_sleep(0); END$$", "anonymous code block"),
    *_pg("CALL pg_catalog.evil()", "procedure call"),
    *_lite("SELECT load_extension('/tmp/cortex-attack.so')", "loads a shared library"),
    *_lite("ATTACH DATABASE '/tmp/cortex-attack.db' AS evil", "opens (and creates) another file"),
    *_lite("VACUUM INTO '/tmp/cortex-attack-vacuum.db'", "writes a copy of the database"),
    # ---------------------------------------------------------------- server files, programs, other servers
    *_pg("SELECT pg_read_file('/etc/passwd')", "reads a server file"),
    *_pg("SELECT pg_read_binary_file('/etc/passwd')", "reads a server file"),
    *_pg("SELECT * FROM pg_ls_dir('.')", "lists the data directory"),
    *_pg("SELECT pg_stat_file('/etc/passwd')", "probes server files"),
    *_pg("SELECT lo_import('/etc/passwd')", "reads a server file into a large object"),
    *_pg("SELECT lo_export(lo_create(0), '/tmp/cortex-attack-lo')", "writes a server file"),
    *_pg("SELECT rolname, rolpassword FROM pg_authid", "password hashes"),
    *_pg("SELECT dblink_exec('dbname=test', 'DROP TABLE sales')", "another connection escapes the transaction"),
    *_pg("SELECT query_to_xml('SELECT pg_read_file(''/etc/passwd'')', true, true, '')",
         "SQL hidden in a string"),
    *_lite("SELECT hex(fts3_tokenizer('simple'))", "leaks a native pointer"),
    *_lite("SELECT readfile('/etc/passwd')", "reads a host file (CLI extension)"),
    *_lite("SELECT writefile('/tmp/cortex-attack-write', 'x')", "writes a host file (CLI extension)"),
    # ---------------------------------------------------------------- session, transaction and lock state
    *_pg("SET search_path = pg_catalog", "session state"),
    *_pg("SET ROLE postgres", "identity switch"),
    *_pg("SET SESSION AUTHORIZATION postgres", "identity switch"),
    *_pg("RESET ALL", "undoes the read-only session default"),
    *_pg("SELECT set_config('default_transaction_read_only', 'off', false)", "turns read-only off"),
    *_pg("SELECT pg_advisory_lock(42)", "a lock that outlives the rollback"),
    *_pg("SELECT pg_try_advisory_lock(42)", "a lock that outlives the rollback"),
    *_pg("LISTEN cortex_attack", "session state"),
    *_pg("NOTIFY cortex_attack", "signals other sessions"),
    *_pg("SELECT pg_notify('cortex_attack', 'x')", "signals other sessions"),
    *_pg("PREPARE evil AS SELECT 1", "session state"),
    *_pg("EXECUTE evil", "session state"),
    *_pg("DISCARD ALL", "session state"),
    *_pg("DECLARE evil CURSOR WITH HOLD FOR SELECT * FROM sales", "a cursor that outlives the transaction"),
    *_pg("LOCK TABLE sales IN ACCESS EXCLUSIVE MODE", "blocks every other reader"),
    *_pg("SELECT * FROM sales FOR UPDATE", "row locks"),
    *_pg("SELECT * FROM sales FOR NO KEY UPDATE", "row locks"),
    *_pg("SELECT * FROM sales FOR SHARE", "row locks"),
    *_pg("SELECT pg_sleep(60)", "holds a connection"),
    *_pg("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
         "kills other sessions"),
    *_pg("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
         "cancels other sessions"),
    *_pg("SELECT pg_create_physical_replication_slot('cortex_attack', true)", "a slot that outlives the rollback"),
    *_pg("SELECT pg_create_logical_replication_slot('cortex_attack', 'test_decoding')", "a replication slot"),
    *_pg("SELECT pg_reload_conf()", "server control"),
    *_pg("SELECT txid_current()", "assigns a transaction id"),
    *_pg("VACUUM sales", "maintenance"),
    *_pg("ANALYZE sales", "maintenance"),
    *_pg("CHECKPOINT", "server control"),
    *_both("BEGIN", "transaction control"),
    *_both("COMMIT", "transaction control"),
    *_pg("SET TRANSACTION READ WRITE", "turns read-only off"),
    *_pg("START TRANSACTION READ WRITE", "transaction control"),
    *_lite("PRAGMA query_only = OFF", "turns read-only off"),
    *_lite("PRAGMA writable_schema = ON", "schema corruption"),
    *_lite("PRAGMA journal_mode = DELETE", "file state"),
    *_lite("PRAGMA temp_store_directory = '/tmp'", "file state"),
    *_lite("SAVEPOINT evil", "transaction control"),
    *_lite("BEGIN IMMEDIATE", "takes the write lock"),
    *_lite("VACUUM", "rewrites the file"),
    *_lite("REINDEX", "rewrites indexes"),
    *_lite("ANALYZE", "writes statistics"),
    *_lite("DETACH DATABASE main", "connection state"),
    # ---------------------------------------------------------------- multi-statement tricks
    *_both("SELECT 1; DELETE FROM sales", "a second statement"),
    *_both("SELECT 1;DROP TABLE sales;", "a second statement, no space"),
    *_both("SELECT 1 -- comment\n; DELETE FROM sales", "a second statement after a comment"),
    *_both("SELECT ';'; DELETE FROM sales", "a ';' in a literal, then a real one"),
    *_both("SELECT 1 /* ; */; DELETE FROM sales", "a ';' in a comment, then a real one"),
    *_both("sElEcT 1; dRoP tAbLe sales", "mixed case"),
    *_both("SELECT '\\'; DELETE FROM sales; --'", "a backslash that does not escape (standard strings)"),
    *_pg("SELECT $$;$$; DELETE FROM sales", "a dollar quote, then a real ';'"),
    *_pg("SELECT $a$ $$ ; $a$; DELETE FROM sales", "nested dollar tags"),
    *_pg("/* /* */ SELECT 1; */ DELETE FROM sales", "nested comments hide the SELECT, not the DELETE"),
    *_pg("SELECT 1 --\r; DELETE FROM sales", "a carriage return ends a comment on PostgreSQL (not on SQLite)"),
    *_lite("SELECT E'\\'; DELETE FROM sales; --'", "an escape string SQLite does not know"),
    *_lite("SELECT [;]; DELETE FROM sales", "a bracket identifier, then a real ';'"),
    *_lite("SELECT $$;$$; DELETE FROM sales", "dollar quotes are not strings on SQLite"),
    *_lite("/* /* */ SELECT 1; */ DELETE FROM sales", "SQLite comments do not nest"),
    # ---------------------------------------------------------------- comment and quoting tricks on functions
    *_pg('SELECT "pg_read_file"(\'/etc/passwd\')', "a quoted function name"),
    *_pg("SELECT pg_catalog . pg_ls_dir ('.')", "a schema-qualified, spaced function name"),
    *_pg("SELECT pg_read_file/**/('/etc/passwd')", "a comment between name and parenthesis"),
    *_pg("SELECT U&\"pg\\005fsleep\"(10)", "a unicode-escaped function name"),
    *_pg("SELECT PG_SLEEP(10)", "an upper-case function name"),
    *_pg("(SELECT 1) UNION ALL (SELECT pg_sleep(10)::text::int)", "a denied function in a parenthesised query"),
    # ---------------------------------------------------------------- runaway statements
    *_lite("SELECT randomblob(1000000000)", "a 1 GB value in one function call"),
    *_lite("SELECT zeroblob(1000000000)", "a 1 GB value in one function call"),
    *_lite("SELECT printf('%.*c', 2000000000, 'x')", "a 2^31-iteration loop in one function call"),
    *_lite("WITH RECURSIVE s(x) AS (SELECT 'x' UNION ALL SELECT x || x FROM s) SELECT max(length(x)) FROM s",
           "a value that doubles until memory runs out"),
    *_both("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
           "never ends"),
])


def attacks(dialect: Dialect) -> list[Attack]:
    """The corpus entries for one dialect."""
    return [a for a in ATTACKS if a.dialect == dialect]
