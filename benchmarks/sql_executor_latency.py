"""Per-statement latency of the SQL executors (what the read-only layers cost a query).

Sequential ``execute_sync`` of a small aggregate on the example's ``sales``
table, ``--n`` times after a warm-up, on SQLite (a scratch copy of the table)
and on PostgreSQL as the SELECT-only role (skipped when no server answers on
127.0.0.1:5432); p50/p95 in milliseconds, and the cost of the query policy
alone (lexing and checking the statement). Set ``PYTHONPATH`` to another
checkout's ``runtime`` to compare versions on the same machine.

    .venv/bin/python benchmarks/sql_executor_latency.py [--n 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cortexlang.ir import Database  # noqa: E402
from runtime.sql import SQLExecutor  # noqa: E402

QUERY = "SELECT region, quarter, SUM(amount) AS total FROM sales GROUP BY region, quarter ORDER BY total DESC"


def measure(ex: SQLExecutor, n: int) -> tuple[float, float]:
    for _ in range(20):
        assert ex.execute_sync(QUERY).outcome == "ok"
    times = []
    for _ in range(n):
        started = time.perf_counter()
        ex.execute_sync(QUERY)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    from tests.security.databases import make_sqlite, postgres_schema, reader_url_for

    with tempfile.TemporaryDirectory() as tmp:
        lite = SQLExecutor(Database(name="lite", url=f"sqlite:///{make_sqlite(Path(tmp) / 's.db')}", pool_size=1))
        p50, p95 = measure(lite, args.n)
        lite.close()
        print(f"sqlite      p50 {p50:.3f} ms  p95 {p95:.3f} ms")
    try:
        import pytest

        with postgres_schema("cortex_bench") as schema:
            pg = SQLExecutor(Database(name="pg", url=reader_url_for(schema), pool_size=1))
            p50, p95 = measure(pg, args.n)
            pg.close()
            print(f"postgresql  p50 {p50:.3f} ms  p95 {p95:.3f} ms")
    except pytest.skip.Exception as exc:
        print(f"postgresql  skipped: {exc}")
    try:
        from runtime.sql.policy import check_query
    except ImportError:
        return 0
    started = time.perf_counter()
    for _ in range(args.n):
        check_query(QUERY, "postgresql")
    print(f"policy      {(time.perf_counter() - started) * 1000 / args.n:.3f} ms per statement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
