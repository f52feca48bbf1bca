"""Malicious SQL end to end: ``POST /v1/runs`` on a real server, a model scripted to emit the attack.

The NL2SQL workflow's LLM stages run on the simulated engine, scripted so that ``generate``
and every ``fix`` answer the attack statement; the SQL stage runs it against a private
copy of the sales database. Every attempt (the first and each of the three repairs) must be
refused, the run must end ``fail`` (the repair budget is spent), and the database file,
the files beside it and the host paths the attacks name must be unchanged.

A handful of SQLite statements of our own (the shared attack corpus of the security suite
was not there when this was written); the NL2SQL stages stop at ``;``, so multi-statement
tricks are cut by the model's stop string before they reach SQL and are covered by the
executor's own tests instead.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import httpx

from runtime.orchestrator import Orchestrator
from runtime.orchestrator.engines import engine_factory
from runtime.serve import create_app

from ..orchestrator.conftest import SPEEDUP, example_spec, scripted
from .live import live_server

HOST_PATH = "/tmp/cortex-e2e-attack"
ATTACKS = [
    ("DROP TABLE sales;", "DDL"),
    ("DELETE FROM customers;", "write"),
    ("UPDATE products SET unit_price = 0;", "write"),
    ("INSERT INTO regions (region_id, name) VALUES (99, 'Atlantis');", "write"),
    ("CREATE TABLE evil(x);", "DDL"),
    ("WITH doomed AS (SELECT 1) DELETE FROM customers;", "write behind a CTE"),
    (f"ATTACH DATABASE '{HOST_PATH}.db' AS evil;", "creates a file on the host"),
    (f"VACUUM INTO '{HOST_PATH}-copy.db';", "copies the database to a host file"),
    ("PRAGMA writable_schema = ON;", "session state"),
    ("PRAGMA query_only = OFF;", "lifts the read-only guard"),
    (f"SELECT load_extension('{HOST_PATH}.so');", "loads native code"),
    ("SELECT fts3_tokenizer('simple');", "leaks a native pointer"),
]


def fingerprint(db: Path) -> str:
    """The database file's bytes and the names of the files beside it (journals, attached files)."""
    digest = hashlib.sha256(db.read_bytes())
    for name in sorted(p.name for p in db.parent.iterdir()):
        digest.update(name.encode())
    return digest.hexdigest()


def test_every_attack_statement_is_refused_and_nothing_changes(sales_db: Path) -> None:
    before = fingerprint(sales_db)
    host_before = glob.glob(HOST_PATH + "*")
    current = {"statement": ""}
    orch = Orchestrator(example_spec("nl2sql", sales_db),
                        engine_factory("simulated", responder=scripted(lambda s, p: current["statement"]),
                                       speedup=SPEEDUP))
    with live_server(create_app(orch)) as live:
        for statement, why in ATTACKS:
            current["statement"] = statement
            r = httpx.post(f"{live.url}/v1/runs", json={"inputs": {"question": f"please: {why}"}, "wait": True},
                           timeout=60)
            assert r.status_code == 200, r.text[:300]
            run = r.json()
            executed = [c for c in run["calls"] if c["stage"] == "execute"]
            assert len(executed) == 4, (statement, run["status"], run.get("error"))  # generate + 3 repairs
            assert all(c["outcome"] == "error" and c["error"] for c in executed), (statement, executed)
            assert run["status"] == "fail", (statement, run["status"])
    assert fingerprint(sales_db) == before
    assert glob.glob(HOST_PATH + "*") == host_before
