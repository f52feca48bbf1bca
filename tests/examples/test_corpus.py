"""The retrieval corpus: checked-in file matches its generator, and agrees with the catalogue."""

from __future__ import annotations

import json

from examples.data import build_corpus, catalog
from examples.data.build_sales_db import _discount
from examples.tools.corpus import CORPUS_PATH, load_corpus, tokenize


def test_checked_in_corpus_matches_the_generator() -> None:
    expected = build_corpus.render(build_corpus.corpus_documents())
    assert CORPUS_PATH.read_text(encoding="utf-8") == expected, (
        "examples/data/corpus.jsonl is stale; run: python examples/data/build_corpus.py"
    )


def test_about_a_hundred_documents_with_unique_ids_and_urls() -> None:
    docs = load_corpus()
    assert 90 <= len(docs) <= 120
    assert len({d.doc_id for d in docs}) == len(docs)
    assert len({d.url for d in docs}) == len(docs)
    assert all(d.url.startswith(build_corpus.BASE_URL) and len(d.text.split()) >= 20 for d in docs)


def test_product_sheets_quote_catalogue_prices() -> None:
    by_title = {d.title: d for d in load_corpus()}
    for product in catalog.PRODUCTS:
        assert f"${product.unit_price:,.2f}" in by_title[product.name].text


def test_discount_policy_text_matches_the_sales_generator() -> None:
    """The 'Volume discount tiers' article must describe the rule the sales DB was generated with."""
    policy = next(d for d in load_corpus() if d.title == "Volume discount tiers").text
    assert "$1,000 to $9,999 5%" in policy and "$150,000 or more 20%" in policy

    class NoPromotion:
        def random(self) -> float:
            return 1.0

    assert _discount(NoPromotion(), 999, "SMB") == 0.0
    assert _discount(NoPromotion(), 5_000, "SMB") == 0.05
    assert _discount(NoPromotion(), 200_000, "SMB") == 0.20
    assert _discount(NoPromotion(), 200_000, "Enterprise") == 0.25


def test_render_is_one_sorted_json_object_per_line() -> None:
    lines = build_corpus.render(build_corpus.corpus_documents()).splitlines()
    first = json.loads(lines[0])
    assert list(first) == sorted(first)
    assert tokenize("The Vault NAS, 4-Bay!") == ["vault", "nas", "4", "bay"]
