"""Entity lookup over Northstar's master data: products, sales regions and employees.

Tool entry :func:`lookup` (``ctx -> dict``) takes the agent's input (see
:func:`examples.tools.context.query_from`), e.g. ``"Aurora 14 Pro"``,
``"price of the Vista 27 4K"`` or ``"Grace Tanaka"``, and returns::

    {"query", "found": bool, "kind": "product"|"region"|"employee"|None,
     "name", "facts": {...}, "candidates": [names], "observation": str}

Matching: an entity's *aliases* (its name, and a region's code) are tokenised
like the corpus; an alias matches when the query contains all of its tokens,
and the longest such alias wins (so "Vista 27 4K" beats "Vista 27 QHD" and
"Aurora 14 Pro" beats nothing shorter). Failing that, the entity whose name has
the highest share of its tokens in the query wins if that share is at least
1/2; ties are reported in ``candidates`` so the agent can ask again, and on
a miss the best partial matches are offered as suggestions. A miss is
an ``ok`` result with ``found = false`` — it is an observation, not a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .context import query_from
from .corpus import tokenize
from .masterdata import catalog

MIN_SHARE = 0.5
MAX_SUGGESTIONS = 5
_NOT_SHOWN = {"unit_price_usd"}  # machine-readable twin of list_price


@dataclass(frozen=True, eq=False)
class Entity:
    kind: str
    name: str
    aliases: tuple[str, ...]
    facts: dict

    def observation(self) -> str:
        shown = {k: v for k, v in self.facts.items() if k not in _NOT_SHOWN}
        details = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in shown.items())
        return f"{self.name} ({self.kind}): {details}."


@lru_cache(maxsize=1)
def entities() -> tuple[Entity, ...]:
    """Every entity the tool knows, built from :mod:`examples.data.catalog`."""
    found: list[Entity] = []
    for p in catalog.PRODUCTS:
        found.append(Entity("product", p.name, (p.name,), {
            "category": p.category, "list_price": f"${p.unit_price:,.2f} per {p.unit}",
            "unit_price_usd": p.unit_price, "launch_year": p.launch_year,
            "warranty_months": p.warranty_months,
        }))
    for r in catalog.REGIONS:
        director = next(e for e in catalog.employees()
                        if e.title == "Regional Director" and e.region_id == r.region_id)
        found.append(Entity("region", r.name, (r.name, r.code), {
            "code": r.code, "currency": r.currency, "office": r.hq_city,
            "countries": ", ".join(r.countries), "regional_director": director.full_name,
        }))
    for e in catalog.employees():
        manager = catalog.employee_by_id(e.manager_id).full_name if e.manager_id else None
        found.append(Entity("employee", e.full_name, (e.full_name,), {
            "title": e.title, "region": catalog.region_by_id(e.region_id).name,
            "hire_date": e.hire_date, "manager": manager or "none (reports to the CEO)",
        }))
    return tuple(found)


def find(query: str) -> tuple[Entity | None, list[str]]:
    """The best entity for ``query`` and the names of equally good candidates (see the module docstring)."""
    words = set(tokenize(query))
    contained = [
        (len(tokenize(alias)), entity) for entity in entities() for alias in entity.aliases
        if tokenize(alias) and set(tokenize(alias)) <= words
    ]
    if contained:
        best_len = max(n for n, _ in contained)
        best = list({e.name: e for n, e in contained if n == best_len}.values())
        return best[0], [e.name for e in best[1:]]
    shares = []
    for entity in entities():
        name_tokens = set(tokenize(entity.name))
        shares.append((len(name_tokens & words) / len(name_tokens), entity))
    top = max(s for s, _ in shares)
    tied = [e for s, e in shares if s == top]
    if top < MIN_SHARE:  # no match; partial overlaps become suggestions
        return None, [e.name for e in tied[:MAX_SUGGESTIONS]] if top > 0 else []
    return tied[0], [e.name for e in tied[1:]]


def lookup(ctx: dict) -> dict:
    """Tool: look up a product, region or employee by name."""
    query = query_from(ctx)
    entity, others = find(query)
    if entity is None:
        observation = f"No product, region or employee matches {query!r}."
        if others:
            observation += f" Did you mean: {', '.join(others)}?"
        return {"query": query, "found": False, "kind": None, "name": None, "facts": {}, "candidates": others,
                "observation": observation}
    observation = entity.observation()
    if others:
        observation += f" Other matches: {', '.join(others)}."
    return {"query": query, "found": True, "kind": entity.kind, "name": entity.name, "facts": dict(entity.facts),
            "candidates": others, "observation": observation}
