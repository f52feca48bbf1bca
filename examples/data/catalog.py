"""The fictional company behind every example: Northstar Systems, a B2B IT reseller.

This module holds the *master data* shared by the sales database
(:mod:`examples.data.build_sales_db`), the retrieval corpus
(:mod:`examples.data.build_corpus`) and the lookup tool: regions, the product
catalogue and the sales organisation. It is pure data plus one seeded
generator, so every consumer sees the same names, prices and reporting lines.

Contract: :func:`employees` is deterministic (seeded ``random.Random``) and
returns the same list on every call and every Python >= 3.11.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

COMPANY = "Northstar Systems"
EMPLOYEE_SEED = 2024


@dataclass(frozen=True)
class Region:
    region_id: int
    name: str
    code: str
    currency: str
    hq_city: str
    countries: tuple[str, ...]
    cities: tuple[str, ...]


@dataclass(frozen=True)
class Product:
    product_id: int
    name: str
    category: str
    unit_price: float  # list price, USD
    launch_year: int
    warranty_months: int
    unit: str  # what one unit of quantity buys
    summary: str


@dataclass(frozen=True)
class Employee:
    employee_id: int
    first_name: str
    last_name: str
    title: str
    region_id: int
    hire_date: str  # ISO date
    manager_id: int | None

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


REGIONS: tuple[Region, ...] = (
    Region(1, "North America", "NA", "USD", "Chicago", ("United States", "Canada"),
           ("New York", "Chicago", "Toronto", "Austin", "Seattle", "Atlanta")),
    Region(2, "Latin America", "LATAM", "BRL", "Sao Paulo", ("Brazil", "Mexico", "Chile", "Colombia"),
           ("Sao Paulo", "Mexico City", "Santiago", "Bogota", "Monterrey")),
    Region(3, "Europe", "EU", "EUR", "Frankfurt", ("Germany", "France", "Netherlands", "Spain", "Italy"),
           ("Frankfurt", "Paris", "Amsterdam", "Madrid", "Milan", "Munich")),
    Region(4, "UK & Ireland", "UKI", "GBP", "London", ("United Kingdom", "Ireland"),
           ("London", "Manchester", "Dublin", "Edinburgh")),
    Region(5, "Middle East & Africa", "MEA", "AED", "Dubai", ("United Arab Emirates", "Saudi Arabia", "South Africa", "Kenya"),
           ("Dubai", "Riyadh", "Johannesburg", "Nairobi")),
    Region(6, "Asia Pacific", "APAC", "SGD", "Singapore", ("Singapore", "Japan", "Australia", "India"),
           ("Singapore", "Tokyo", "Sydney", "Mumbai", "Melbourne")),
)

_P = Product
PRODUCTS: tuple[Product, ...] = (
    _P(1, "Aurora 13 Ultrabook", "Laptops", 1199.0, 2022, 24, "laptop", "13-inch 1.1 kg ultrabook, 16 GB RAM, 512 GB SSD, 14-hour battery"),
    _P(2, "Aurora 14 Pro", "Laptops", 1649.0, 2023, 36, "laptop", "14-inch 2.8K display, 32 GB RAM, 1 TB SSD, vPro management"),
    _P(3, "Aurora 16 Workstation", "Laptops", 2499.0, 2023, 36, "laptop", "16-inch mobile workstation with a professional GPU and 64 GB RAM"),
    _P(4, "Terra 15 Business", "Laptops", 899.0, 2021, 12, "laptop", "15.6-inch value business laptop, 8 GB RAM, spill-resistant keyboard"),
    _P(5, "Terra 14 Rugged", "Laptops", 1899.0, 2022, 36, "laptop", "MIL-STD-810H rugged laptop with hot-swap batteries for field teams"),
    _P(6, "Summit Mini PC", "Desktops", 649.0, 2022, 24, "desktop", "palm-sized desktop, VESA mountable, 16 GB RAM"),
    _P(7, "Summit Tower", "Desktops", 1099.0, 2021, 24, "desktop", "mid-tower office desktop, tool-less chassis, 4 displays supported"),
    _P(8, "Summit Tower Pro", "Desktops", 1899.0, 2023, 36, "desktop", "tower workstation with 24-core CPU and ECC memory"),
    _P(9, "Vista 24 FHD", "Monitors", 179.0, 2021, 36, "monitor", "24-inch 1080p IPS monitor with height-adjustable stand"),
    _P(10, "Vista 27 QHD", "Monitors", 329.0, 2022, 36, "monitor", "27-inch 1440p IPS monitor with USB-C power delivery (65 W)"),
    _P(11, "Vista 27 4K", "Monitors", 449.0, 2023, 36, "monitor", "27-inch 4K monitor, factory-calibrated, daisy-chain DisplayPort"),
    _P(12, "Vista 34 Ultrawide", "Monitors", 699.0, 2022, 36, "monitor", "34-inch curved 3440x1440 monitor with built-in KVM"),
    _P(13, "Vista 32 Pro Color", "Monitors", 1299.0, 2024, 36, "monitor", "32-inch 4K reference monitor, 99% DCI-P3, hardware calibration"),
    _P(14, "Keystone Wireless Keyboard", "Peripherals", 79.0, 2021, 12, "keyboard", "low-profile wireless keyboard, three-device switching"),
    _P(15, "Keystone Mechanical Keyboard", "Peripherals", 129.0, 2022, 24, "keyboard", "quiet mechanical keyboard with hot-swappable switches"),
    _P(16, "Glide Mouse", "Peripherals", 39.0, 2021, 12, "mouse", "ambidextrous wireless mouse, 24-month battery life"),
    _P(17, "Glide Pro Mouse", "Peripherals", 89.0, 2023, 24, "mouse", "ergonomic rechargeable mouse with programmable buttons"),
    _P(18, "Echo USB Headset", "Peripherals", 69.0, 2021, 12, "headset", "USB-A/USB-C stereo headset certified for major meeting platforms"),
    _P(19, "Echo ANC Headset", "Peripherals", 189.0, 2023, 24, "headset", "wireless headset with active noise cancellation and a boom mic"),
    _P(20, "Dock One USB-C Dock", "Peripherals", 229.0, 2022, 36, "dock", "USB-C dock, 100 W charging, dual 4K output, 2.5 GbE"),
    _P(21, "Lumen 4K Webcam", "Peripherals", 149.0, 2023, 24, "webcam", "4K webcam with auto-framing and a privacy shutter"),
    _P(22, "Meridian 24-Port Switch", "Networking", 589.0, 2021, 60, "switch", "managed 24-port gigabit switch with 4 SFP+ uplinks"),
    _P(23, "Meridian 48-Port PoE Switch", "Networking", 1890.0, 2022, 60, "switch", "48-port PoE+ switch, 740 W budget, stackable"),
    _P(24, "Meridian Wi-Fi 6E Access Point", "Networking", 349.0, 2023, 60, "access point", "tri-band Wi-Fi 6E ceiling access point, cloud managed"),
    _P(25, "Meridian Edge Firewall", "Networking", 1290.0, 2022, 36, "appliance", "next-generation firewall for branch offices, 5 Gbps threat throughput"),
    _P(26, "Vault 2TB NVMe SSD", "Storage", 219.0, 2022, 60, "drive", "2 TB PCIe 4.0 NVMe SSD, 1.2 PB written endurance"),
    _P(27, "Vault 8TB NAS Drive", "Storage", 279.0, 2021, 36, "drive", "8 TB 7200 rpm drive rated for 24x7 NAS use"),
    _P(28, "Vault NAS 4-Bay", "Storage", 799.0, 2022, 36, "appliance", "4-bay NAS with snapshots, 10 GbE and encrypted volumes"),
    _P(29, "Vault SAN Array", "Storage", 12900.0, 2023, 60, "appliance", "dual-controller all-flash SAN array, 60 TB raw"),
    _P(30, "Sentinel Endpoint Security", "Software", 48.0, 2021, 12, "seat-year", "endpoint protection and EDR, priced per seat per year"),
    _P(31, "CloudDesk Office Suite", "Software", 144.0, 2021, 12, "seat-year", "email, documents and video meetings, per seat per year"),
    _P(32, "Atlas Backup", "Software", 120.0, 2022, 12, "TB-year", "cloud backup with immutable copies, priced per protected TB per year"),
    _P(33, "Atlas Device Manager", "Software", 36.0, 2023, 12, "device-year", "device management for laptops and phones, per device per year"),
    _P(34, "Support Plan Standard", "Services", 99.0, 2021, 12, "device-year", "next-business-day hardware support, per device per year"),
    _P(35, "Support Plan Premier", "Services", 249.0, 2021, 12, "device-year", "4-hour on-site support with a named engineer, per device per year"),
    _P(36, "On-site Installation", "Services", 450.0, 2021, 0, "visit", "one technician visit for racking, cabling and setup"),
    _P(37, "Onboarding Workshop", "Services", 1800.0, 2022, 0, "workshop", "one-day admin training for device and security tooling"),
    _P(38, "Aurora Travel Charger", "Accessories", 59.0, 2022, 12, "charger", "65 W GaN USB-C travel charger"),
    _P(39, "Carbon Laptop Backpack", "Accessories", 99.0, 2021, 12, "bag", "water-resistant 16-inch laptop backpack with a luggage strap"),
    _P(40, "Privacy Screen Filter", "Accessories", 45.0, 2022, 12, "filter", "magnetic privacy filter for 13-16-inch laptops"),
)

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(p.category for p in PRODUCTS))

# Reps per region; the VP sits in North America and every region has one director.
_REPS_PER_REGION = {1: 6, 2: 3, 3: 5, 4: 3, 5: 2, 6: 4}
_FIRST_NAMES = (
    "Maria", "James", "Aisha", "Kenji", "Sofia", "Liam", "Priya", "Mateo", "Chloe", "Omar",
    "Hannah", "Lucas", "Mei", "Daniel", "Fatima", "Noah", "Elena", "Ravi", "Grace", "Tomas",
    "Amara", "Ethan", "Yuki", "Diego", "Nadia", "Samuel", "Leila", "Oliver", "Ines", "Arjun",
)
_LAST_NAMES = (
    "Chen", "Okafor", "Schmidt", "Tanaka", "Garcia", "Murphy", "Patel", "Rossi", "Dubois", "Haddad",
    "Kowalski", "Silva", "Nguyen", "Johansson", "Mensah", "Walsh", "Moreau", "Kapoor", "Lopez", "Becker",
    "Sato", "Fernandes", "Novak", "Ibrahim", "Evans", "Costa", "Kim", "Brennan", "Vega", "Larsen",
)


@lru_cache(maxsize=1)
def employees() -> tuple[Employee, ...]:
    """The sales organisation: one VP, a director per region, account executives under them.

    Names are drawn without replacement (first and last names independently),
    so every full name is unique.
    """
    rng = random.Random(EMPLOYEE_SEED)
    firsts = rng.sample(_FIRST_NAMES, len(_FIRST_NAMES))
    lasts = rng.sample(_LAST_NAMES, len(_LAST_NAMES))
    people: list[Employee] = []

    def hire(title: str, region_id: int, manager_id: int | None, years: tuple[int, int]) -> Employee:
        i = len(people)
        date = f"{rng.randint(*years)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        person = Employee(i + 1, firsts[i], lasts[i], title, region_id, date, manager_id)
        people.append(person)
        return person

    vp = hire("VP of Sales", 1, None, (2012, 2014))
    directors = {r.region_id: hire("Regional Director", r.region_id, vp.employee_id, (2014, 2018)) for r in REGIONS}
    for region_id, count in _REPS_PER_REGION.items():
        for _ in range(count):
            senior = rng.random() < 0.35
            title = "Senior Account Executive" if senior else "Account Executive"
            hire(title, region_id, directors[region_id].employee_id, (2015, 2019) if senior else (2018, 2021))
    return tuple(people)


def account_executives(region_id: int | None = None) -> tuple[Employee, ...]:
    """Employees who carry a quota (account executives), optionally in one region."""
    return tuple(
        e for e in employees()
        if e.title.endswith("Account Executive") and (region_id is None or e.region_id == region_id)
    )


def region_by_id(region_id: int) -> Region:
    return next(r for r in REGIONS if r.region_id == region_id)


def employee_by_id(employee_id: int) -> Employee:
    return next(e for e in employees() if e.employee_id == employee_id)
