"""Entity lookup over the catalogue."""

from __future__ import annotations

import pytest

from examples.data import catalog
from examples.tools.lookup import entities, find, lookup


def test_every_catalogue_entity_is_known() -> None:
    kinds = [e.kind for e in entities()]
    assert kinds.count("product") == len(catalog.PRODUCTS)
    assert kinds.count("region") == len(catalog.REGIONS)
    assert kinds.count("employee") == len(catalog.employees())


@pytest.mark.parametrize("query, name", [
    ("Aurora 14 Pro", "Aurora 14 Pro"),
    ("what is the list price of the Vista 27 4K?", "Vista 27 4K"),
    ("APAC", "Asia Pacific"),
    ("who runs UK & Ireland", "UK & Ireland"),
    ("tanaka", "Grace Tanaka"),
])
def test_finds_the_intended_entity(query: str, name: str) -> None:
    entity, _ = find(query)
    assert entity is not None and entity.name == name


def test_product_facts_come_from_the_catalogue() -> None:
    result = lookup({"think": {"action": "lookup", "input": "Terra 14 Rugged"}})
    assert result["found"] and result["kind"] == "product"
    assert result["facts"]["unit_price_usd"] == 1899.0
    assert "list price $1,899.00 per laptop" in result["observation"]
    assert "unit price usd" not in result["observation"]


def test_ambiguous_names_report_the_other_candidates() -> None:
    result = lookup({"query": "Vista 27"})
    assert result["found"] and {result["name"], *result["candidates"]} == {"Vista 27 QHD", "Vista 27 4K"}


def test_a_miss_is_an_ok_result_with_suggestions() -> None:
    result = lookup({"query": "Aurora"})
    assert not result["found"] and result["facts"] == {}
    assert "Aurora 14 Pro" in result["candidates"] and "Did you mean" in result["observation"]
    nothing = lookup({"query": "flux capacitor"})
    assert not nothing["found"] and nothing["candidates"] == []
