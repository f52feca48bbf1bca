"""The attack corpus through the SQL executors: every statement refused, nothing changed anywhere.

For each entry of :data:`tests.security.corpus.ATTACKS`, on a scratch database of its dialect
(PostgreSQL as the SELECT-only role; skipped with a reason when the server does not answer):

* the executor's outcome is ``error`` (a refusal or the server's own);
* the database fingerprint (table contents and schema; on PostgreSQL also roles, role settings,
  replication slots, large objects, prepared transactions, extensions and the reader's advisory
  locks) is unchanged, and no file appeared at the corpus's host paths;
* the executor still answers a plain query.

Look-alikes (:data:`~tests.security.corpus.HARMLESS`) may run but change and show nothing they
should not; runaways (:data:`~tests.security.corpus.RUNAWAYS`) must end within the timeout plus
their slack, cut or refused, without this process's peak memory growing by what they asked for.

A second PostgreSQL test replays the corpus *around* the executor's own checks, straight into a
pooled read-only session as the SELECT-only role, and shows that the database layer alone changes
nothing either: the role and the read-only transaction are the enforcement, the checks defence in
depth.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cortexlang.ir import Database
from runtime.sql import SQLExecutor
from tests.security.corpus import ATTACKS, Attack, Harmless, Runaway, attacks, harmless, runaways
from tests.security.databases import (
    attack_files,
    make_sqlite,
    postgres_fingerprint,
    postgres_schema,
    reader_url_for,
    sqlite_fingerprint,
)

TIMEOUT_S = 0.5


def test_the_corpus_is_large_and_covers_both_dialects() -> None:
    assert len(ATTACKS) >= 60
    assert len(attacks("sqlite")) >= 30 and len(attacks("postgresql")) >= 60
    assert len({(a.dialect, a.statement) for a in ATTACKS}) == len(ATTACKS)  # no duplicates


# ------------------------------------------------------------------ SQLite
@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sqlite(tmp_path_factory.mktemp("attacks") / "shop.db")


@pytest.fixture(scope="module")
def sqlite_executor(sqlite_db: Path) -> Iterator[SQLExecutor]:
    ex = SQLExecutor(Database(name="lite", url=f"sqlite:///{sqlite_db}", pool_size=2, statement_timeout_s=TIMEOUT_S))
    ex.warm()
    yield ex
    ex.close()


@pytest.mark.parametrize("attack", attacks("sqlite"), ids=lambda a: a.id)
def test_sqlite_refuses_and_nothing_changes(sqlite_executor: SQLExecutor, sqlite_db: Path, attack: Attack) -> None:
    before = sqlite_fingerprint(sqlite_db)
    result = sqlite_executor.execute_sync(attack.statement)
    assert result.outcome == "error", (attack.why, result)
    assert sqlite_fingerprint(sqlite_db) == before, attack.why
    assert attack_files() == [], attack.why
    assert sqlite_executor.execute_sync("SELECT count(*) FROM sales").rows == ((3,),)


@pytest.mark.parametrize("case", harmless("sqlite"), ids=lambda h: h.id)
def test_sqlite_harmless_lookalikes_change_nothing(sqlite_executor: SQLExecutor, sqlite_db: Path,
                                                   case: Harmless) -> None:
    before = sqlite_fingerprint(sqlite_db)
    result = sqlite_executor.execute_sync(case.statement)
    assert_harmless(result, case, [str(sqlite_db)])
    assert sqlite_fingerprint(sqlite_db) == before, case.why


@pytest.mark.parametrize("case", runaways("sqlite"), ids=lambda r: r.id)
def test_sqlite_runaways_are_bounded(sqlite_executor: SQLExecutor, sqlite_db: Path, case: Runaway) -> None:
    before = sqlite_fingerprint(sqlite_db)
    assert_bounded(sqlite_executor, case)
    assert sqlite_fingerprint(sqlite_db) == before, case.why


# ------------------------------------------------------------------ shared checks
def assert_harmless(result: object, case: Harmless, secrets: list[str]) -> None:
    """Nothing in the result that the statement should not reach (``forbidden``, host paths)."""
    shown = repr(result)
    for secret in [case.forbidden, *secrets]:
        assert not secret or secret not in shown, (case.why, shown[:300])
    assert attack_files() == [], case.why


MEMORY_SLACK_MIB = 150
"""Peak memory this process may gain over one runaway statement (the smallest asks for 200 MB)."""


def assert_bounded(executor: SQLExecutor, case: Runaway) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = executor.execute_sync(case.statement)
    elapsed = time.monotonic() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert elapsed < executor.database.statement_timeout_s + case.slack_s, (case.why, elapsed, result.error)
    assert result.outcome == "error" or result.truncated, (case.why, result.outcome, len(result.rows))
    assert grown_mib < MEMORY_SLACK_MIB, (case.why, grown_mib)
    assert executor.execute_sync("SELECT count(*) FROM sales").rows == ((3,),)


# ------------------------------------------------------------------ PostgreSQL
@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    with postgres_schema("cortex_attack") as name:
        yield name


@pytest.fixture(scope="module")
def pg_executor(pg_schema: str) -> Iterator[SQLExecutor]:
    ex = SQLExecutor(Database(name="pg", url=reader_url_for(pg_schema), pool_size=2, statement_timeout_s=TIMEOUT_S))
    ex.warm()
    yield ex
    ex.close()


@pytest.mark.services
@pytest.mark.parametrize("attack", attacks("postgresql"), ids=lambda a: a.id)
def test_postgres_refuses_and_nothing_changes(pg_executor: SQLExecutor, pg_schema: str, attack: Attack) -> None:
    before = postgres_fingerprint(pg_schema)
    result = pg_executor.execute_sync(attack.statement)
    assert result.outcome == "error", (attack.why, result)
    assert postgres_fingerprint(pg_schema) == before, attack.why
    assert attack_files() == [], attack.why
    assert pg_executor.execute_sync("SELECT count(*) FROM sales").rows == ((3,),)


@pytest.mark.services
@pytest.mark.parametrize("case", harmless("postgresql"), ids=lambda h: h.id)
def test_postgres_harmless_lookalikes_change_nothing(pg_executor: SQLExecutor, pg_schema: str,
                                                     case: Harmless) -> None:
    before = postgres_fingerprint(pg_schema)
    assert_harmless(pg_executor.execute_sync(case.statement), case, [])
    assert postgres_fingerprint(pg_schema) == before, case.why


@pytest.mark.services
@pytest.mark.parametrize("case", runaways("postgresql"), ids=lambda r: r.id)
def test_postgres_runaways_are_bounded(pg_executor: SQLExecutor, pg_schema: str, case: Runaway) -> None:
    """Found by the hostile-user pass: a row arrives whole, so before the server-side row bound
    (runtime.sql.postgres_backend.row_bounded) the 500 MB ``string_agg`` grew this process by 1.4 GB
    before the byte limit could refuse the row."""
    before = postgres_fingerprint(pg_schema)
    assert_bounded(pg_executor, case)
    assert postgres_fingerprint(pg_schema) == before, case.why


_HARMS_OTHERS = ("pg_terminate_backend", "pg_cancel_backend")
"""Allowed to the role against its own other sessions (other tests' pools): not replayed raw."""


@pytest.mark.services
def test_postgres_database_layer_alone_changes_nothing(pg_executor: SQLExecutor, pg_schema: str) -> None:
    before = postgres_fingerprint(pg_schema)
    replayed = [a for a in attacks("postgresql") if not any(f in a.statement for f in _HARMS_OTHERS)]
    refused_by_server = 0
    for attack in replayed:
        with pg_executor.engine.connect() as conn:  # checked in afterwards: rollback + DISCARD ALL
            try:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql(attack.statement)
            except Exception:  # noqa: BLE001 - the server's refusal is the expected outcome
                refused_by_server += 1
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - e.g. a COPY TO STDOUT left in progress: drop the connection
                conn.invalidate()
    assert postgres_fingerprint(pg_schema) == before
    assert attack_files() == []
    # Most are refused outright (permissions, read-only); the rest (locks, SET, LISTEN) are undone at check-in.
    assert refused_by_server >= len(replayed) * 3 // 4, (refused_by_server, len(replayed))
    assert pg_executor.execute_sync("SELECT count(*) FROM sales").rows == ((3,),)
