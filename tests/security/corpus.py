"""The SQL attack corpus: statements a hostile user (or model) may send, each of which must be refused.

Besides :data:`ATTACKS` (each must be refused): :data:`HARMLESS` (statements that look like
attacks but are one plain read, which may run and must change and show nothing they should not) and
:data:`RUNAWAYS` (huge results, cartesian products, giant values: each must end within the
executor's timeout plus some slack, its result cut or refused, without this process's memory
growing by what it asked for).

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
    # ---------------------------------------------------------------- added by the hostile-user pass (this session)
    # writable CTEs and row locks in other spellings
    *_both("WITH x AS (UPDATE sales SET amount = 0 RETURNING *) SELECT * FROM x", "data-modifying CTE (UPDATE)"),
    *_both("WITH x AS (INSERT INTO sales VALUES ('x', 'Q1', 1, '2024-01-01') RETURNING *) SELECT * FROM x",
           "data-modifying CTE (INSERT)"),
    *_lite("WITH x AS (SELECT 1) UPDATE sales SET amount = 0", "write behind WITH"),
    *_pg("WITH x AS MATERIALIZED (DELETE FROM sales RETURNING *) SELECT 1", "data-modifying CTE, materialised"),
    *_pg("SELECT * FROM sales FOR KEY SHARE", "row locks"),
    *_pg("SELECT * FROM sales FOR UPDATE SKIP LOCKED", "row locks"),
    *_pg("SELECT * FROM sales FOR UPDATE NOWAIT", "row locks"),
    *_pg("SELECT * FROM sales FOR/**/UPDATE", "row locks, a comment between the words"),
    *_pg("SELECT * FROM (SELECT * FROM sales FOR UPDATE) s", "row locks in a subquery"),
    *_pg("SELECT amount FROM sales UNION ALL SELECT amount FROM sales FOR UPDATE", "row locks after a UNION"),
    # side-effecting functions in other spellings
    *_pg("SELECT U&\"pg!005fsleep\" UESCAPE '!' (10)", "a UESCAPE clause between an escaped name and '('"),
    *_pg("SELECT U&\"pg!005fadvisory!005flock\" UESCAPE '!'(42)", "an escaped advisory lock"),
    *_pg("SELECT U&\"set!005fconfig\" UESCAPE '!'('default_transaction_read_only', 'off', false)",
         "an escaped set_config"),
    *_pg("SELECT pg_advisory_xact_lock(42)", "a transaction-level advisory lock"),
    *_pg("SELECT pg_advisory_lock_shared(42)", "a shared advisory lock"),
    *_pg("SELECT set_config('statement_timeout', '0', false)", "turns the server's timeout off"),
    *_pg("SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)", "session state"),
    *_pg("SELECT pg_sleep_for('10 seconds')", "holds a connection"),
    *_pg("SELECT pg_sleep_until(now() + interval '10 seconds')", "holds a connection"),
    *_pg("SELECT nextval('ids'::regclass)", "advances a sequence"),
    *_pg("SELECT \"nextval\"('ids')", "advances a sequence (quoted name)"),
    *_pg("SELECT pg_catalog.nextval('ids')", "advances a sequence (qualified name)"),
    *_pg("SELECT currval('ids')", "reads session state of a sequence"),
    *_pg("SELECT lo_from_bytea(0, 'x')", "creates a large object"),
    *_pg("SELECT lo_unlink(1)", "removes a large object"),
    *_pg("SELECT * FROM dblink('dbname=test', 'DELETE FROM sales RETURNING 1') AS t(x int)",
         "another connection escapes the read-only transaction"),
    *_pg("SELECT pg_read_file('postgresql.conf')", "reads a file of the data directory"),
    *_pg("SELECT pg_read_file('/etc/passwd', 0, 100)", "reads part of a server file"),
    *_pg("SELECT * FROM pg_ls_waldir()", "lists server files"),
    *_pg("SELECT * FROM pg_ls_logdir()", "lists server files"),
    *_pg("SELECT pg_logical_emit_message(true, 'cortex', 'x')", "writes to the WAL"),
    *_pg("SELECT pg_stat_reset()", "resets statistics"),
    *_pg("SELECT pg_stat_reset_shared('bgwriter')", "resets statistics"),
    *_pg("SELECT pg_switch_wal()", "server control"),
    *_pg("SELECT pg_current_xact_id()", "assigns a transaction id"),
    *_pg("SELECT query_to_xml('DELETE FROM sales RETURNING 1', true, true, '')", "a write hidden in a string"),
    *_pg("SELECT * FROM pg_file_settings", "reads the server's configuration files"),
    *_pg("SELECT * FROM pg_hba_file_rules", "reads the server's authentication file"),
    *_pg("SELECT current_setting('data_directory')", "the server's data directory"),
    *_pg("EXPLAIN ANALYZE DELETE FROM sales", "EXPLAIN ANALYZE runs the statement"),
    *_pg("COPY (SELECT 1) TO STDOUT WITH (FORMAT csv)", "COPY out of the protocol"),
    # quoting and comment tricks around statement boundaries
    *_pg("SELECT 1 AS a$$, pg_sleep(10) AS b$$", "'$$' inside an identifier is not a dollar quote"),
    *_pg("SELECT E'\\\\'; DELETE FROM sales; --'", "an escaped backslash ends the E-string"),
    *_pg("SELECT U&'\\0027'; DELETE FROM sales", "an escaped quote inside a U& string does not end it"),
    *_both("SELECT 1;\u00a0DELETE FROM sales", "a no-break space after ';'"),
    *_both("SELECT 1; /* */ DELETE FROM sales", "a comment between statements"),
    *_both("SELECT 1 \uff1b DELETE FROM sales", "a full-width ';' (a homoglyph)"),
    *_both("SELECT 1 \u037e DELETE FROM sales", "a Greek question mark (looks like ';')"),
    *_both("\uff24\uff25\uff2c\uff25\uff34\uff25 FROM sales", "a full-width DELETE (homoglyph keyword)"),
    *_both("D\u0415LETE FROM sales", "a Cyrillic E in DELETE (homoglyph keyword)"),
    # SQLite: pragmas, attach and functions in other spellings
    *_lite("PRAGMA database_list", "tells the database file's host path"),
    *_lite("SELECT file FROM pragma_database_list", "the same, as a table-valued function"),
    *_lite("PRAGMA temp_store_directory", "tells a host directory"),
    *_lite("PRAGMA main.query_only = 0", "turns read-only off (schema-qualified)"),
    *_lite("PRAGMA case_sensitive_like = 1", "connection state the next statement on the pooled connection sees"),
    *_lite("PRAGMA reverse_unordered_selects = 1", "connection state the next statement would see"),
    *_lite("PRAGMA cache_size = 1", "connection state"),
    *_lite("PRAGMA mmap_size = 1000000000", "maps the file"),
    *_lite("PRAGMA hard_heap_limit = 1", "starves the process's other SQLite connections"),
    *_lite("PRAGMA busy_timeout = 100000", "connection state"),
    *_lite("PRAGMA trusted_schema = 1", "lets schema code call unsafe functions"),
    *_lite("PRAGMA foreign_keys = OFF", "connection state"),
    *_lite("PRAGMA wal_checkpoint(TRUNCATE)", "writes the file"),
    *_lite("PRAGMA incremental_vacuum", "writes the file"),
    *_lite("ATTACH ':memory:' AS scratch", "a writable scratch database"),
    *_lite("ATTACH 'file:/tmp/cortex-attack-uri.db?mode=rwc' AS evil", "creates a file through a URI"),
    *_lite("SELECT 1; ATTACH '/tmp/cortex-attack-2.db' AS evil", "ATTACH as a second statement"),
    *_lite("SELECT \"load_extension\"('/tmp/cortex-attack.so')", "loads a library (quoted name)"),
    *_lite("SELECT LOAD_EXTENSION('/tmp/cortex-attack.so', 'sqlite3_extension_init')", "loads a library"),
    *_lite("SELECT format('%.*c', 2000000000, 'x')", "printf under another name"),
    *_lite("SELECT changes(), last_insert_rowid()", "connection state"),
    *_lite("SELECT sqlite_compileoption_get(0)", "build details"),
    *_lite("SELECT sqlite_offset(region) FROM sales", "file offsets"),
    *_lite("EXPLAIN QUERY PLAN DELETE FROM sales", "EXPLAIN of a write"),
    *_lite("EXPLAIN INSERT INTO sales VALUES ('x', 'Q1', 1, '2024-01-01')", "EXPLAIN of a write"),
    *_lite("CREATE TEMP VIEW evil_v AS SELECT 1", "temporary objects"),
    # ---------------------------------------------------------------- added by the hostile-user pass (round 3)
    # SQL given as a string (ts_stat, ts_rewrite) ran past the function check before round 3
    *_pg("SELECT * FROM ts_stat('SELECT to_tsvector(pg_advisory_lock(42)::text)')",
         "an advisory lock taken by SQL in a string (blocks other clients until check-in)"),
    *_pg("SELECT * FROM ts_stat('SELECT to_tsvector(set_config(''statement_timeout'', ''0'', false))')",
         "turns the server's timeout off from SQL in a string"),
    *_pg("SELECT * FROM pg_catalog.ts_stat('SELECT to_tsvector(pg_sleep(10)::text)')",
         "a sleep in SQL in a string"),
    *_pg("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, pg_advisory_lock(43)::text::tsquery')",
         "an advisory lock taken by ts_rewrite's query string"),
    *_pg("SELECT setseed(0.5)", "a random seed that survives DISCARD ALL on the pooled connection"),
    *_pg("SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
         "other users' requests' SQL (every executor session is the same role)"),
    *_pg("SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
         "other sessions' SQL through the functions behind pg_stat_activity"),
    *_pg("SELECT * FROM sales, LATERAL pg_sleep(10) s", "a sleep as a set-returning function in FROM"),
    *_pg("SELECT pg_sleep(seconds => 10)", "a sleep with a named argument"),
    *_pg("VALUES (pg_advisory_lock(42))", "an advisory lock in a VALUES list"),
    *_pg("WITH x AS (SELECT 1) SELECT pg_advisory_lock(1) FROM x", "an advisory lock behind WITH"),
    *_pg("SHOW data_directory", "the server's data directory"),
    *_pg("EXPLAIN (ANALYZE) SELECT pg_sleep(10)", "EXPLAIN ANALYZE runs its statement"),
    *_pg("SELECT * FROM pg_shadow", "password hashes"),
    *_pg("SELECT lowrite(lo_open(1, 131072), 'x')", "writes a large object"),
    *_pg("SELECT pg_sequence_last_value('ids')", "reads a sequence the role may not use"),
    *_pg("SELECT * FROM sales FOR -- a comment\n UPDATE", "row locks, a line comment between the words"),
    *_pg("PREPARE TRANSACTION 'cortex_attack'", "a prepared transaction outlives the session"),
    *_pg("SET LOCAL statement_timeout = 0", "turns the timeout off"),
    *_pg("DEALLOCATE ALL", "session state"),
    *_pg("CLOSE ALL", "session state"),
    *_pg("UNLISTEN *", "session state"),
    *_pg("REFRESH MATERIALIZED VIEW sales", "maintenance"),
    *_pg("CLUSTER sales", "rewrites a table"),
    *_pg("REINDEX TABLE sales", "rewrites indexes"),
    *_pg("IMPORT FOREIGN SCHEMA public FROM SERVER evil INTO public", "other servers"),
    *_lite("PRAGMA locking_mode = EXCLUSIVE", "holds the file's lock and blocks other clients"),
    *_lite("PRAGMA schema_version = 5", "corrupts the schema cache of every connection"),
    *_lite("PRAGMA user_version = 5", "writes the file header"),
    *_lite("PRAGMA max_page_count = 1", "connection state"),
    *_lite("PRAGMA synchronous = OFF", "connection state"),
    *_lite("PRAGMA temp.journal_mode = OFF", "connection state (schema-qualified)"),
    *_lite("EXPLAIN ATTACH '/tmp/cortex-attack-explain.db' AS evil", "ATTACH behind EXPLAIN"),
    *_lite("EXPLAIN PRAGMA query_only = OFF", "a pragma write behind EXPLAIN"),
    *_lite("VALUES (load_extension('/tmp/cortex-attack.so'))", "loads a library from a VALUES list"),
    *_lite("SELECT sqlite_source_id()", "build details"),
    *_lite("SELECT name FROM pragma_database_list", "the database file's host path, one column"),
    # ---------------------------------------------------------------- added by the hostile-user pass (round 4)
    # A relation named by a value, which no name check sees: table_to_xml showed another session's SQL literal.
    *_pg("SELECT table_to_xml('pg_catalog.pg_stat_activity', true, false, '')",
         "other users' requests' SQL, the view named by a string"),
    *_pg("SELECT table_to_xml('pg_stat_activity'::regclass::oid::regclass, true, true, '')",
         "other users' requests' SQL, the view named by an oid"),
    *_pg("SELECT table_to_xml_and_xmlschema('pg_stat_activity', true, false, '')", "the same, with its schema"),
    *_pg("SELECT schema_to_xml('pg_catalog', true, false, '')", "every catalog view at once, pg_stat_activity too"),
    # A ')' that closes the executor's own wrapper subquery moved its row bound onto a subquery of the
    # attacker's choosing: a 100 MB row then reached this process (peak memory +286 MiB, outcome ok).
    *_pg("SELECT '1' AS x) AS cortex_q UNION ALL SELECT repeat('x', 100000000) FROM (SELECT 1",
         "closes the row-bound wrapper early: an unbounded row"),
    *_pg("SELECT 1) AS a, (SELECT repeat('x', 100000000) AS big", "closes the row-bound wrapper early"),
    *_both("COMMIT; DROP TABLE sales", "ends the read-only transaction, then DDL"),
    *_both("SELECT 1) x; DELETE FROM sales --", "a stray ')' and a second statement"),
])


@dataclass(frozen=True)
class Harmless:
    """A statement that may run, but must change nothing and must not show ``forbidden`` in its result."""

    dialect: Dialect | Literal["both"]
    statement: str
    why: str
    forbidden: str = ""

    @property
    def id(self) -> str:
        return f"{self.dialect[:2]}:{self.statement[:60]}"


HARMLESS: tuple[Harmless, ...] = (
    Harmless("postgresql", "SELECT xmlparse(document '<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
                           "<x>&e;</x>')", "an XML external entity is not loaded", "root:"),
    Harmless("postgresql", "SELECT 1 --\u2028DELETE FROM sales", "U+2028 does not end a comment: one statement"),
    Harmless("sqlite", "SELECT 1 --\rDELETE FROM sales", "'\\r' does not end a comment on SQLite"),
    Harmless("sqlite", "PRAGMA optimize", "needs a write, which the read-only file refuses"),
    Harmless("sqlite", "SELECT * FROM sqlite_temp_master", "an empty temp schema"),
    Harmless("both", "SELECT 'x''; DELETE FROM sales; --'", "a doubled quote keeps the string open"),
    Harmless("both", "SELECT ' ; DELETE FROM sales'", "a ';' inside a string"),
    # The executor refuses two statements; model output through runtime.sql.extract drops the second part
    # as prose (it starts with a letter that no statement keyword does), and no server reads it as SQL.
    Harmless("both", "SELECT 1 WHERE 1 = 1; \uff24\uff32\uff2f\uff30 TABLE sales", "a full-width DROP after ';'"),
)
"""Run against both databases where ``dialect`` is ``both``."""


@dataclass(frozen=True)
class Runaway:
    """A statement that must end (a result cut at the limits, or an error) within the executor's timeout plus
    ``slack_s``, without this process's memory growing by the size of what it asked for."""

    dialect: Dialect
    statement: str
    why: str
    slack_s: float = 3.0

    @property
    def id(self) -> str:
        return f"{self.dialect[:2]}:{self.statement[:60]}"


_WIDE = ", ".join(f"sales t{i}" for i in range(20))
RUNAWAYS: tuple[Runaway, ...] = (
    Runaway("sqlite", f"SELECT count(*) FROM {_WIDE}", "a 3^20-row cartesian product, counted"),
    Runaway("sqlite", f"SELECT * FROM {_WIDE}", "a 3^20-row cartesian product, every row (80 columns)"),
    Runaway("sqlite", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
            "endless rows"),
    Runaway("sqlite", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT group_concat(x) FROM c",
            "one endless value"),
    Runaway("sqlite", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000) "
                      "SELECT group_concat(a.x || b.x) FROM c a, c b", "a 25-million-row join into one value"),
    Runaway("postgresql", "SELECT generate_series(1, 1000000000000)", "a trillion rows"),
    Runaway("postgresql", "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
            "a 10^10-row cartesian product"),
    Runaway("postgresql", "SELECT * FROM sales a, sales b, sales c, sales d, sales e, sales f, sales g, sales h, "
                          "sales i, sales j, sales k, sales l, sales m, sales n, sales o, sales p",
            "a 3^16-row cartesian product, every row"),
    Runaway("postgresql", "SELECT repeat('x', 200000000)", "one 200 MB value"),
    Runaway("postgresql", "SELECT repeat('x', 3000000) FROM generate_series(1, 1000)", "3 GB in 3 MB rows"),
    Runaway("postgresql", "SELECT repeat('x', 1000) || g FROM generate_series(1, 1000000000) g",
            "many rows that together are over the byte limit"),
    Runaway("postgresql", "SELECT string_agg(repeat('x', 1000000), '') FROM generate_series(1, 500)",
            "a 500 MB aggregate (PostgreSQL finishes the aggregate before it sees the cancel)", slack_s=6.0),
    Runaway("postgresql", "SELECT array_fill(1, ARRAY[30000000])", "a 30-million-element array", slack_s=8.0),
    Runaway("postgresql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            "never ends"),
)


def attacks(dialect: Dialect) -> list[Attack]:
    """The corpus entries for one dialect."""
    return [a for a in ATTACKS if a.dialect == dialect]


def harmless(dialect: Dialect) -> list[Harmless]:
    return [h for h in HARMLESS if h.dialect in (dialect, "both")]


def runaways(dialect: Dialect) -> list[Runaway]:
    return [r for r in RUNAWAYS if r.dialect == dialect]
