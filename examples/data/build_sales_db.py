"""Build the example sales database (SQLite) deterministically, without downloads.

Usage::

    python examples/data/build_sales_db.py [PATH] [--force] [--write-schema]

Builds Northstar Systems' sales history (see :mod:`examples.data.catalog`):
6 regions, 40 products, 30 employees, 300 customers, 5,000 sales lines over
2022-2024 and a quarterly quota per account executive. The generator is a
seeded ``random.Random``, so the same version of this file always produces the
same rows.

Contract of :func:`build`:

* idempotent: a database at ``path`` whose ``PRAGMA user_version`` equals
  :data:`BUILD_VERSION` is left untouched (unless ``force``); otherwise the
  database is written to a temporary file beside ``path`` and moved over it
  atomically, so readers never see a half-built file;
* foreign keys are enforced while loading, so every reference resolves;
* returns the absolute path of the database.

Bump :data:`BUILD_VERSION` whenever the generated content changes.

The shape of the data is meant to make questions worth asking: Q4 is the
strongest quarter and each year grows; enterprise customers buy in bulk and get
larger discounts; products are only sold from their launch year on; a few
customers are prospects with no purchases yet; quotas are missed as well as beaten.
"""

from __future__ import annotations

import argparse
import calendar
import math
import os
import random
import sqlite3
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.data import catalog  # noqa: E402
from examples.data.sales_schema import INDEXES_SQL, SCHEMA_SQL, write_schema_file  # noqa: E402

BUILD_VERSION = 2
SEED = 20240601
DEFAULT_DB = Path(__file__).resolve().with_name("sales.db")

N_CUSTOMERS = 300
N_PROSPECTS = 8  # customers with no sales yet
N_SALES = 5000
YEARS = {2022: 1.0, 2023: 1.18, 2024: 1.38}  # relative volume: steady growth
QUARTERS = {"Q1": 0.85, "Q2": 0.95, "Q3": 1.0, "Q4": 1.35}  # year-end budget flush

SEGMENTS = {"Enterprise": 0.15, "Mid-Market": 0.35, "SMB": 0.40, "Public Sector": 0.10}
SEGMENT_PURCHASE_WEIGHT = {"Enterprise": 6.0, "Mid-Market": 3.0, "SMB": 1.0, "Public Sector": 2.5}
SEGMENT_ORDER_SIZE = {"Enterprise": 8.0, "Mid-Market": 3.0, "SMB": 1.0, "Public Sector": 4.0}
REGION_SHARE = {1: 0.32, 2: 0.10, 3: 0.22, 4: 0.12, 5: 0.08, 6: 0.16}

INDUSTRY_NOUNS = {
    "Manufacturing": ("Manufacturing", "Industries", "Components", "Fabrication"),
    "Retail": ("Retail", "Outfitters", "Markets", "Stores"),
    "Financial Services": ("Capital", "Bank", "Insurance", "Partners"),
    "Healthcare": ("Health", "Clinics", "Medical", "Pharma"),
    "Logistics": ("Logistics", "Freight", "Shipping"),
    "Technology": ("Labs", "Software", "Analytics", "Networks"),
    "Media": ("Media", "Studios", "Publishing"),
    "Energy": ("Energy", "Power", "Renewables"),
    "Hospitality": ("Hotels", "Resorts", "Hospitality"),
    "Professional Services": ("Consulting", "Legal", "Advisory"),
    "Government": ("City Council", "County", "Transit Authority"),
    "Education": ("University", "College", "School District"),
}
PUBLIC_INDUSTRIES = ("Government", "Education", "Healthcare")
PRIVATE_INDUSTRIES = tuple(i for i in INDUSTRY_NOUNS if i not in ("Government", "Education"))
NAME_PREFIXES = (
    "Northwind", "Bluefin", "Harbor", "Cobalt", "Granite", "Juniper", "Redwood", "Silverline", "Beacon",
    "Crescent", "Evergreen", "Falcon", "Horizon", "Ironbridge", "Lakeside", "Oakridge", "Pinnacle",
    "Quantum", "Riverstone", "Sapphire", "Tidewater", "Unity", "Vantage", "Westfield", "Zenith", "Alder",
    "Brightwater", "Copperfield", "Driftwood", "Elmstead", "Foxglove", "Goldcrest", "Highland", "Jasper",
    "Kestrel", "Larkspur", "Maple", "Nimbus", "Orchid", "Pioneer", "Sterling", "Thistle", "Willow",
)

CATEGORY_WEIGHT = {
    "Laptops": 3.0, "Desktops": 1.5, "Monitors": 2.5, "Peripherals": 3.0, "Networking": 1.0,
    "Storage": 1.0, "Software": 2.0, "Services": 1.5, "Accessories": 2.0,
}
SEGMENT_CATEGORY_BOOST = {
    "Enterprise": {"Networking": 2.0, "Storage": 2.0, "Software": 1.5, "Services": 1.7},
    "Public Sector": {"Laptops": 1.3, "Services": 1.4},
    "SMB": {"Networking": 0.6, "Storage": 0.6},
}
# Typical quantity range of one order line for an SMB buyer, by what a unit is.
UNIT_QUANTITY = {
    "laptop": (1, 12), "desktop": (1, 10), "monitor": (1, 14), "keyboard": (2, 25), "mouse": (2, 30),
    "headset": (2, 20), "dock": (1, 12), "webcam": (1, 10), "switch": (1, 4), "access point": (1, 8),
    "appliance": (1, 2), "drive": (1, 10), "seat-year": (10, 120), "TB-year": (2, 20),
    "device-year": (5, 60), "visit": (1, 2), "workshop": (1, 1), "charger": (2, 20), "bag": (2, 20),
    "filter": (2, 15),
}
BULK_UNITS = {"appliance", "visit", "workshop"}  # grow with the square root of the buyer's size


@dataclass(frozen=True)
class Customer:
    customer_id: int
    name: str
    segment: str
    industry: str
    region_id: int
    city: str
    account_manager_id: int


def _weighted(rng: random.Random, weights: dict):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def make_customers(rng: random.Random) -> list[Customer]:
    """Customers with unique names, each owned by an account executive of their region."""
    customers: list[Customer] = []
    used: set[str] = set()
    for customer_id in range(1, N_CUSTOMERS + 1):
        segment = _weighted(rng, SEGMENTS)
        industry = rng.choice(PUBLIC_INDUSTRIES if segment == "Public Sector" else PRIVATE_INDUSTRIES)
        while True:
            name = f"{rng.choice(NAME_PREFIXES)} {rng.choice(INDUSTRY_NOUNS[industry])}"
            if name not in used:
                used.add(name)
                break
        region = catalog.region_by_id(_weighted(rng, REGION_SHARE))
        owner = rng.choice(catalog.account_executives(region.region_id))
        customers.append(Customer(customer_id, name, segment, industry, region.region_id,
                                  rng.choice(region.cities), owner.employee_id))
    return customers


def _random_date(rng: random.Random, year: int, quarter: str) -> str:
    month = 3 * (int(quarter[1]) - 1) + rng.randint(1, 3)
    day = rng.randint(1, calendar.monthrange(year, month)[1])
    return f"{year}-{month:02d}-{day:02d}"


def _quantity(rng: random.Random, product: catalog.Product, segment: str) -> int:
    lo, hi = UNIT_QUANTITY[product.unit]
    size = SEGMENT_ORDER_SIZE[segment]
    scale = math.sqrt(size) if product.unit in BULK_UNITS else size
    return max(1, round(rng.randint(lo, hi) * scale * rng.lognormvariate(0.0, 0.3)))


def _discount(rng: random.Random, list_total: float, segment: str) -> float:
    """Volume tier, plus contract pricing for large accounts and the odd promotion."""
    tiers = ((1_000, 0.0), (10_000, 0.05), (50_000, 0.10), (150_000, 0.15))
    discount = next((d for limit, d in tiers if list_total < limit), 0.20)
    discount += {"Enterprise": 0.05, "Public Sector": 0.03}.get(segment, 0.0)
    if rng.random() < 0.08:
        discount += 0.05
    return round(min(discount, 0.35), 2)


def make_sales(rng: random.Random, customers: list[Customer]) -> list[tuple]:
    """Sales lines ``(sale_id, sale_date, year, quarter, customer_id, product_id, employee_id,
    quantity, discount, revenue)``, ids increasing with the date."""
    prospects = set(rng.sample([c.customer_id for c in customers], N_PROSPECTS))
    buyers = [c for c in customers if c.customer_id not in prospects]
    buyer_weights = [SEGMENT_PURCHASE_WEIGHT[c.segment] for c in buyers]
    lines = []
    for _ in range(N_SALES):
        year = _weighted(rng, YEARS)
        quarter = _weighted(rng, QUARTERS)
        customer = rng.choices(buyers, weights=buyer_weights)[0]
        boost = SEGMENT_CATEGORY_BOOST.get(customer.segment, {})
        category = _weighted(rng, {c: w * boost.get(c, 1.0) for c, w in CATEGORY_WEIGHT.items()})
        launched = [p for p in catalog.PRODUCTS if p.category == category and p.launch_year <= year]
        if customer.segment == "SMB":  # a small business does not buy a SAN
            launched = [p for p in launched if p.unit_price < 10_000]
        product = rng.choice(launched)
        quantity = _quantity(rng, product, customer.segment)
        discount = _discount(rng, quantity * product.unit_price, customer.segment)
        revenue = round(quantity * product.unit_price * (1.0 - discount), 2)
        if rng.random() < 0.9:
            rep = customer.account_manager_id
        else:  # covering for a colleague in the same region
            rep = rng.choice(catalog.account_executives(customer.region_id)).employee_id
        lines.append((_random_date(rng, year, quarter), year, quarter, customer.customer_id,
                      product.product_id, rep, quantity, discount, revenue))
    lines.sort()
    return [(i, *line) for i, line in enumerate(lines, start=1)]


def make_quotas(rng: random.Random, sales: list[tuple]) -> list[tuple]:
    """One quota per account executive and quarter, set around what the rep went on to sell."""
    booked: dict[tuple[int, int, str], float] = defaultdict(float)
    for _, _, year, quarter, _, _, rep, _, _, revenue in sales:
        booked[(rep, year, quarter)] += revenue
    quotas = []
    for rep in catalog.account_executives():
        for year in YEARS:
            for quarter in QUARTERS:
                actual = max(booked[(rep.employee_id, year, quarter)], 20_000.0)
                quotas.append((rep.employee_id, year, quarter, round(actual * rng.uniform(0.8, 1.3), -3)))
    return quotas


def _populate(conn: sqlite3.Connection) -> dict[str, int]:
    rng = random.Random(SEED)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(SCHEMA_SQL)
    conn.executemany("INSERT INTO regions VALUES (?, ?, ?, ?)",
                     [(r.region_id, r.name, r.currency, r.hq_city) for r in catalog.REGIONS])
    conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)",
                     [(p.product_id, p.name, p.category, p.unit_price, p.launch_year) for p in catalog.PRODUCTS])
    conn.executemany("INSERT INTO employees VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(e.employee_id, e.first_name, e.last_name, e.title, e.region_id, e.hire_date, e.manager_id)
                      for e in catalog.employees()])
    customers = make_customers(rng)
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(c.customer_id, c.name, c.segment, c.industry, c.region_id, c.city, c.account_manager_id)
                      for c in customers])
    sales = make_sales(rng, customers)
    conn.executemany("INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", sales)
    conn.executemany("INSERT INTO quotas VALUES (?, ?, ?, ?)", make_quotas(rng, sales))
    conn.executescript(INDEXES_SQL)
    conn.execute(f"PRAGMA user_version = {BUILD_VERSION}")
    conn.commit()
    return table_counts(conn)


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row count of every table, by name."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {n: conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}


def is_current(path: Path) -> bool:
    """Whether ``path`` holds a database built by this version of the builder."""
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0] == BUILD_VERSION
    except sqlite3.DatabaseError:
        return False


def build(path: str | os.PathLike = DEFAULT_DB, *, force: bool = False, verbose: bool = False) -> Path:
    """Build the sales database at ``path`` (see the module docstring for the contract)."""
    path = Path(path).resolve()
    if not force and is_current(path):
        if verbose:
            print(f"{path} is up to date (build version {BUILD_VERSION}); use --force to rebuild")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp)
        try:
            counts = _populate(conn)
            total = conn.execute("SELECT ROUND(SUM(revenue), 2) FROM sales").fetchone()[0]
        finally:
            conn.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if verbose:
        print(f"built {path} (build version {BUILD_VERSION}, seed {SEED})")
        for table, n in counts.items():
            print(f"  {table:<10} {n:>6} rows")
        print(f"  sales revenue 2022-2024: ${total:,.2f}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Cortex example sales database (SQLite).")
    parser.add_argument("path", nargs="?", default=str(DEFAULT_DB), help=f"database file (default: {DEFAULT_DB})")
    parser.add_argument("--force", action="store_true", help="rebuild even if the database is up to date")
    parser.add_argument("--write-schema", action="store_true",
                        help="also refresh examples/prompts/sales_schema.txt from the schema")
    args = parser.parse_args(argv)
    try:
        build(args.path, force=args.force, verbose=True)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot build {args.path}: {exc}", file=sys.stderr)
        return 1
    if args.write_schema:
        print(f"wrote {write_schema_file()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
