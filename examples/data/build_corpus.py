"""Build the retrieval corpus: Northstar Systems' internal knowledge base, ~100 short documents.

Usage::

    python examples/data/build_corpus.py [PATH]   # default: examples/data/corpus.jsonl

One JSON object per line: ``{"id", "title", "url", "kind", "text"}``. The
corpus is checked in; a test rebuilds it and compares, so edit this file, not
the JSONL. Sources:

* a product sheet per catalogue product and a profile per sales region,
  generated from :mod:`examples.data.catalog` (so they agree with the sales DB);
* a bio per employee, from the same seeded organisation;
* hand-written policy, pricing, support and how-to articles (:data:`ARTICLES`),
  whose figures (discount tiers, approval limits) match how the sales DB was generated.

Everything is deterministic: no randomness beyond the catalogue's seeded one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.data import catalog  # noqa: E402

DEFAULT_CORPUS = Path(__file__).resolve().with_name("corpus.jsonl")
BASE_URL = "https://kb.northstar.example"

ARTICLES: tuple[tuple[str, str, str], ...] = (
    ("policy", "Company overview",
     "Northstar Systems is a business-to-business IT reseller founded in 2009 and headquartered in Chicago. "
     "It sells laptops, desktops, monitors, peripherals, networking and storage hardware, software "
     "subscriptions and support services to companies and public bodies in six sales regions: North America, "
     "Latin America, Europe, UK & Ireland, Middle East & Africa and Asia Pacific. The sales organisation has a "
     "VP of Sales, one Regional Director per region and 23 account executives."),
    ("policy", "Customer segments",
     "Every customer belongs to one segment. Enterprise: more than 5,000 employees. Mid-Market: 500 to 5,000 "
     "employees. SMB: fewer than 500 employees. Public Sector: government, education and public health bodies "
     "of any size. Segments decide contract pricing and the default support plan offered at renewal."),
    ("policy", "Volume discount tiers",
     "Order lines earn a volume discount on the list value of the line (quantity times list price): below "
     "$1,000 no discount; $1,000 to $9,999 5%; $10,000 to $49,999 10%; $50,000 to $149,999 15%; $150,000 or "
     "more 20%. Enterprise contracts add 5 points of contract pricing and Public Sector contracts add 3 points. "
     "A quarterly promotion may add 5 more points. The total discount never exceeds 35%."),
    ("policy", "Discount approval matrix",
     "Discounts need approval by level. Account executives may approve up to 10% on their own. Regional "
     "Directors approve up to 20%. The VP of Sales approves up to 30%. Anything above 30% needs the CFO and is "
     "only granted for multi-year Enterprise agreements. Approvals are recorded on the quote before it is sent."),
    ("policy", "Quarterly promotions",
     "Marketing runs one promotion per quarter, usually on a product line that is being refreshed. A promotion "
     "adds 5 percentage points of discount on top of volume and contract pricing. Roughly one order line in "
     "twelve uses a promotion. Promotions cannot be combined with trade-in credit on the same line."),
    ("policy", "Returns and refunds",
     "Unopened hardware can be returned within 30 days of delivery for a full refund. Opened hardware that is "
     "not defective carries a 15% restocking fee. Enterprise contracts extend the return window to 45 days. "
     "Software subscriptions are non-refundable once activated; unused seats can be removed at the next "
     "renewal. Services already delivered are not refundable."),
    ("policy", "Hardware warranty and RMA",
     "Every hardware product ships with the manufacturer warranty shown on its product sheet, from 12 to 60 "
     "months. To claim, open a return merchandise authorisation (RMA) in the support portal with the serial "
     "number. Standard RMAs ship a replacement after the faulty unit arrives; customers on Support Plan "
     "Premier get an advance replacement shipped the same day."),
    ("policy", "Support plans compared",
     "Support Plan Standard costs $99 per device per year and gives next-business-day hardware replacement and "
     "business-hours phone support. Support Plan Premier costs $249 per device per year and adds 4-hour on-site "
     "response, 24x7 phone support, advance RMA replacement and a named support engineer. Enterprise renewals "
     "default to Premier; other segments default to Standard."),
    ("policy", "Shipping and delivery times",
     "Orders ship from regional warehouses in Chicago, Sao Paulo, Frankfurt, Manchester, Dubai and Singapore. "
     "Typical delivery: 2 business days in North America, UK & Ireland and Europe; 4 in Asia Pacific; 5 in "
     "Latin America and Middle East & Africa. Orders above $50,000 include free freight. Network and storage "
     "appliances can be shipped pre-configured for an extra on-site installation visit."),
    ("policy", "Sales quotas and commission plan",
     "Each account executive carries a quarterly revenue quota set by their Regional Director. Commission is 6% "
     "of booked revenue up to quota and 9% above quota (a 1.5x accelerator). Quota attainment is booked revenue "
     "divided by quota. Commission on an order is clawed back if the customer returns it within the return "
     "window. Directors are paid on their team's combined attainment."),
    ("policy", "Account ownership and coverage",
     "Every customer has one account manager, an account executive in the customer's region. When the account "
     "manager is away, another account executive in the same region may close the sale; the closing rep gets "
     "the quota credit and the account manager gets a 20% overlay credit. Accounts move between reps only at "
     "the start of a fiscal year."),
    ("policy", "Fiscal calendar and bookings",
     "Northstar's fiscal year is the calendar year: Q1 is January to March, Q2 April to June, Q3 July to "
     "September and Q4 October to December. Revenue is booked on the sale date, after discount, in US dollars. "
     "Q4 is traditionally the strongest quarter because public and enterprise customers spend remaining budget."),
    ("policy", "Billing currencies",
     "Invoices are issued in the region's billing currency: USD in North America, BRL in Latin America, EUR in "
     "Europe, GBP in UK & Ireland, AED in Middle East & Africa and SGD in Asia Pacific. Reporting converts every "
     "sale to US dollars at the month's average rate, so revenue figures are always in USD."),
    ("policy", "Customer data privacy and retention",
     "Customer records are stored in the customer's region. Data for customers in Europe and UK & Ireland is "
     "processed under GDPR and UK GDPR. Quotes are kept for 3 years and invoices for 10 years. Customers can ask "
     "for an export of their data through their account manager; requests are answered within 30 days."),
    ("policy", "Security certifications",
     "Northstar Systems is ISO/IEC 27001 certified and publishes a SOC 2 Type II report every year. Customer "
     "portals use single sign-on with mandatory multi-factor authentication. Security questionnaires from "
     "customers are answered by the trust team within 10 business days."),
    ("policy", "Laptop trade-in program",
     "Customers buying new Aurora or Terra laptops can trade in working laptops older than four years for a "
     "credit of up to $150 per unit, or $60 for non-working units. Trade-in devices are wiped to NIST 800-88 and "
     "recycled or refurbished. Trade-in credit cannot be combined with a quarterly promotion on the same line."),
    ("policy", "Leasing and financing",
     "Orders above $25,000 can be leased over 24 or 36 months through Northstar Financial Services. A 36-month "
     "lease includes Support Plan Standard for the full term and an optional refresh to current models at month "
     "30. Public Sector customers can use their framework agreements instead of leasing."),
    ("policy", "E-waste and sustainability",
     "Northstar takes back packaging and end-of-life hardware from customers in every region at no charge for "
     "orders above 20 units. Laptops and monitors are refurbished where possible; the rest is recycled by "
     "certified partners. Annual sustainability reports list the tonnes of equipment recovered per region."),
    ("howto", "Updating Dock One firmware",
     "Dock One USB-C Dock firmware is updated from a connected Aurora or Terra laptop with the Northstar Update "
     "utility. Close video calls, connect the laptop to power, run the utility and choose Dock One; the update "
     "takes about four minutes and the dock restarts twice. Firmware 2.4 fixes flicker on dual 4K displays."),
    ("howto", "Configuring VLANs on Meridian switches",
     "Meridian switches are configured from the cloud console or the local web interface. Create the VLAN under "
     "Switching, VLANs, assign access ports to it, and tag the uplink port with every VLAN it must carry. PoE "
     "budgets on the 48-port model are shared across all ports, so plan access points and cameras first."),
    ("howto", "Resetting the Vault NAS administrator password",
     "To reset the administrator password of a Vault NAS 4-Bay, hold the reset button on the back for 4 seconds "
     "until it beeps once. This resets the admin password and network settings but keeps the volumes and their "
     "data. Holding it for 10 seconds (two beeps) restores factory settings and must not be used on a live unit."),
    ("howto", "Deploying Sentinel Endpoint Security",
     "Sentinel Endpoint Security is deployed with Atlas Device Manager or any MDM that can install signed "
     "packages. Create a deployment group, upload the tenant token, and push the agent; devices report in within "
     "15 minutes. Licences are counted per active seat per year, so retire devices in the console when they leave."),
    ("howto", "Atlas Backup retention and immutability",
     "Atlas Backup keeps daily snapshots for 30 days, weekly for 12 weeks and monthly for 12 months by default. "
     "Immutable copies cannot be deleted by anyone, including administrators, until their retention ends, which "
     "protects against ransomware. Billing is per protected terabyte per year, measured at the monthly peak."),
    ("howto", "Migrating to CloudDesk Office Suite",
     "A CloudDesk migration has four steps: verify the email domain, create users from the directory, migrate "
     "mailboxes and files in batches of at most 200 users, then switch mail exchange records. Most Mid-Market "
     "customers finish in two weeks. The Onboarding Workshop covers admin roles, retention and sharing policies."),
    ("howto", "Onboarding Workshop agenda",
     "The Onboarding Workshop is a one-day session for up to 12 administrators. Morning: Atlas Device Manager "
     "enrolment, Sentinel policies and patching. Afternoon: CloudDesk administration, Atlas Backup restores and "
     "a tabletop ransomware exercise. It is delivered on site or remotely and is priced at $1,800 per workshop."),
    ("howto", "Choosing a monitor for design teams",
     "For colour-critical work choose the Vista 32 Pro Color, which covers 99% of DCI-P3 and supports hardware "
     "calibration. The Vista 27 4K is factory-calibrated and suits developers and analysts. Both daisy-chain over "
     "DisplayPort; pair them with Dock One to drive two displays from one USB-C cable."),
)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _product_doc(p: catalog.Product) -> dict:
    warranty = f"a {p.warranty_months}-month warranty" if p.warranty_months else "no hardware warranty (a service)"
    text = (
        f"{p.name} ({p.category} catalogue, Northstar Systems): {p.summary}. "
        f"List price ${p.unit_price:,.2f} per {p.unit}, available since {p.launch_year}, with {warranty}. "
        f"Volume discounts apply from $1,000 of list value per order line."
    )
    return {"kind": "product", "title": p.name, "text": text}


def _region_doc(r: catalog.Region) -> dict:
    director = next(e for e in catalog.employees() if e.title == "Regional Director" and e.region_id == r.region_id)
    reps = catalog.account_executives(r.region_id)
    text = (
        f"The {r.name} region ({r.code}) covers {', '.join(r.countries)}. Its office is in {r.hq_city} and "
        f"customers are billed in {r.currency}. {director.full_name} is the Regional Director and leads "
        f"{len(reps)} account executives. Customers are served from cities including {', '.join(r.cities)}."
    )
    return {"kind": "region", "title": f"{r.name} region", "text": text}


def _article(title: str) -> str:
    if title == "VP of Sales":
        return "the"
    return "an" if title[0] in "AEIOU" else "a"


def _employee_doc(e: catalog.Employee) -> dict:
    region = catalog.region_by_id(e.region_id)
    reports = f"reports to {catalog.employee_by_id(e.manager_id).full_name}" if e.manager_id else "reports to the CEO"
    text = (
        f"{e.full_name} is {_article(e.title)} {e.title} at Northstar Systems, "
        f"based in the {region.name} region ({region.hq_city} office). {e.first_name} joined on {e.hire_date} "
        f"and {reports}."
    )
    return {"kind": "person", "title": e.full_name, "text": text}


def corpus_documents() -> list[dict]:
    """The corpus, in a stable order, each document with a unique ``id`` and ``url``."""
    docs = [_product_doc(p) for p in catalog.PRODUCTS]
    docs += [_region_doc(r) for r in catalog.REGIONS]
    docs += [_employee_doc(e) for e in catalog.employees()]
    docs += [{"kind": kind, "title": title, "text": text} for kind, title, text in ARTICLES]
    out = []
    for i, doc in enumerate(docs, start=1):
        section = {"product": "products", "region": "regions", "person": "people"}.get(doc["kind"], doc["kind"])
        out.append({"id": f"d{i:03d}", "title": doc["title"], "url": f"{BASE_URL}/{section}/{slug(doc['title'])}",
                    "kind": doc["kind"], "text": doc["text"]})
    return out


def render(docs: list[dict]) -> str:
    """The JSONL text of ``docs`` (sorted keys, one document per line)."""
    return "".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in docs)


def build(path: str | Path = DEFAULT_CORPUS) -> Path:
    """Write the corpus to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(corpus_documents()), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DEFAULT_CORPUS
    try:
        path = build(target)
    except OSError as exc:
        print(f"error: cannot write {target}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(corpus_documents())} documents to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
