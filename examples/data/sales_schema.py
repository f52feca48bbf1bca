"""The sales database schema: one text, used both to create the tables and to prompt models.

:data:`SCHEMA_SQL` is executed verbatim by :mod:`examples.data.build_sales_db`,
and the same text is checked in as ``examples/prompts/sales_schema.txt``, which
the nl2sql workflow passes to its prompts as ``schema``. A test keeps the two
identical; refresh the file with ``python examples/data/build_sales_db.py --write-schema``.

The text is kept lean for a 135M-parameter model (about 580 SmolLM2 tokens):
no NOT NULL noise, and comments that state the value formats
(``'Q1'``..``'Q4'``, ISO dates, fractions) it would otherwise guess.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_SQL = """\
CREATE TABLE regions (
  region_id INTEGER PRIMARY KEY,
  name TEXT UNIQUE,  -- 'North America', 'Latin America', 'Europe', 'UK & Ireland', 'Middle East & Africa', 'Asia Pacific'
  currency TEXT,     -- billing currency code, e.g. 'EUR'
  hq_city TEXT
);
CREATE TABLE products (
  product_id INTEGER PRIMARY KEY,
  name TEXT UNIQUE,
  category TEXT,     -- 'Laptops', 'Desktops', 'Monitors', 'Peripherals', 'Networking', 'Storage', 'Software', 'Services', 'Accessories'
  unit_price REAL,   -- list price in USD
  launch_year INTEGER
);
CREATE TABLE employees (
  employee_id INTEGER PRIMARY KEY,
  first_name TEXT,
  last_name TEXT,
  title TEXT,        -- 'VP of Sales', 'Regional Director', 'Senior Account Executive', 'Account Executive'
  region_id INTEGER REFERENCES regions(region_id),
  hire_date TEXT,    -- 'YYYY-MM-DD'
  manager_id INTEGER REFERENCES employees(employee_id)
);
CREATE TABLE customers (
  customer_id INTEGER PRIMARY KEY,
  name TEXT,
  segment TEXT,      -- 'Enterprise', 'Mid-Market', 'SMB', 'Public Sector'
  industry TEXT,
  region_id INTEGER REFERENCES regions(region_id),
  city TEXT,
  account_manager_id INTEGER REFERENCES employees(employee_id)
);
CREATE TABLE sales (
  sale_id INTEGER PRIMARY KEY,
  sale_date TEXT,    -- 'YYYY-MM-DD', 2022 to 2024
  year INTEGER,
  quarter TEXT,      -- 'Q1', 'Q2', 'Q3', 'Q4'
  customer_id INTEGER REFERENCES customers(customer_id),
  product_id INTEGER REFERENCES products(product_id),
  employee_id INTEGER REFERENCES employees(employee_id),  -- the sales rep
  quantity INTEGER,
  discount REAL,     -- fraction of list price, 0.15 = 15% off
  revenue REAL       -- USD after discount
);
CREATE TABLE quotas (
  employee_id INTEGER REFERENCES employees(employee_id),
  year INTEGER,
  quarter TEXT,      -- 'Q1', 'Q2', 'Q3', 'Q4'
  amount REAL,       -- revenue target in USD
  PRIMARY KEY (employee_id, year, quarter)
);
"""

INDEXES_SQL = """\
CREATE INDEX sales_by_period ON sales (year, quarter);
CREATE INDEX sales_by_customer ON sales (customer_id);
CREATE INDEX sales_by_product ON sales (product_id);
CREATE INDEX sales_by_employee ON sales (employee_id);
CREATE INDEX customers_by_region ON customers (region_id);
"""
"""Indexes are created by the builder but left out of the prompt text: they cost tokens and tell a model nothing."""

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "prompts" / "sales_schema.txt"
"""The checked-in copy of :data:`SCHEMA_SQL` that the nl2sql workflow reads."""


def schema_text() -> str:
    """The CREATE TABLE statements of the sales database, as given to prompts."""
    return SCHEMA_SQL


def write_schema_file(path: Path = SCHEMA_FILE) -> Path:
    """Write :data:`SCHEMA_SQL` to ``path`` (default: the checked-in prompt copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCHEMA_SQL, encoding="utf-8")
    return path
