"""Retrieval tools: the BM25 formula, the hashed embedding, the simulated web search, and the tool contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from examples.tools import retrieval
from examples.tools.context import ToolInputError
from examples.tools.corpus import Document


def test_bm25_matches_the_formula_on_a_toy_corpus() -> None:
    docs = [["gpu", "gpu", "memory"], ["cpu", "memory"], ["disk"]]
    index = retrieval.BM25Index(docs, k1=1.5, b=0.75)
    avgdl = 2.0
    idf_gpu = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    idf_memory = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    norm0 = 1.5 * (1 - 0.75 + 0.75 * 3 / avgdl)
    expected0 = idf_gpu * 2 * 2.5 / (2 + norm0) + idf_memory * 1 * 2.5 / (1 + norm0)
    scores = index.scores(["gpu", "memory"])
    assert scores[0] == pytest.approx(expected0)
    assert scores[1] == pytest.approx(idf_memory * 2.5 / (1 + 1.5 * (1 - 0.75 + 0.75 * 2 / avgdl)))
    assert scores[2] == 0.0


def test_hashed_embeddings_are_unit_vectors_and_deterministic() -> None:
    index = retrieval.HashedEmbeddingIndex(["returns within 30 days", "discount approval matrix"])
    vec = index.embed("discount approvals")
    assert np.linalg.norm(vec) == pytest.approx(1.0)
    assert np.array_equal(vec, retrieval.HashedEmbeddingIndex(
        ["returns within 30 days", "discount approval matrix"]).embed("discount approvals"))
    # blake2b slots, not Python's per-process salted hash(): a fixed feature has a fixed slot
    assert retrieval._slot("w:discount") == retrieval._slot("w:discount")
    scores = index.scores("discount approvals")
    assert scores[1] > scores[0]


def test_dense_search_matches_inflected_words_that_bm25_misses() -> None:
    docs = (Document("a", "A", "u:a", "policy", "discount approval by level"),
            Document("b", "B", "u:b", "policy", "shipping times by region"))
    assert retrieval.search_documents("discounted", "bm25", docs=docs) == []
    dense = retrieval.search_documents("discounted", "dense", docs=docs)
    assert dense and dense[0][0].doc_id == "a"


@pytest.mark.parametrize("method", ["bm25", "dense", "web"])
@pytest.mark.parametrize("query, title", [
    ("who approves a discount above 20%", "Discount approval matrix"),
    ("return window for opened hardware", "Returns and refunds"),
    ("reset the NAS admin password", "Resetting the Vault NAS administrator password"),
])
def test_every_method_finds_the_obvious_document(method: str, query: str, title: str) -> None:
    top = retrieval.search_documents(query, method, k=3)
    assert title in [doc.title for doc, _ in top]
    scores = [score for _, score in top]
    assert scores == sorted(scores, reverse=True)


def test_unknown_method_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown search method"):
        retrieval.search_documents("x", "semantic")


def test_search_tools_follow_the_tool_contract() -> None:
    ctx = {"question": "What does Support Plan Premier include?",
           "rewrite": {"text": "Support Plan Premier response time"}}
    for tool in (retrieval.bm25_search, retrieval.dense_search):
        result = tool(ctx)
        assert result["query"] == "Support Plan Premier response time"
        assert 1 <= len(result["hits"]) <= retrieval.DEFAULT_K
        assert {"doc_id", "title", "url", "score", "text"} <= set(result["hits"][0])
        assert result["hits"][0]["doc_id"] in result["observation"]


def test_no_match_is_an_empty_result_not_an_error() -> None:
    result = retrieval.bm25_search({"query": "zzzz qqqq"})
    assert result["hits"] == [] and "No documents match" in result["observation"]


def test_web_search_waits_a_deterministic_simulated_delay() -> None:
    waits: list[float] = []
    web = retrieval.make_web_search(delay_s=0.2, jitter=0.5, sleep=waits.append)
    first = web({"query": "laptop trade-in credit"})
    again = web({"query": "laptop trade-in credit"})
    web({"query": "shipping to Latin America"})
    assert waits[0] == waits[1] and 0.1 <= min(waits) and max(waits) <= 0.3
    assert first["latency_s"] == pytest.approx(waits[0], abs=1e-4)
    assert first["hits"] == again["hits"]
    assert {"url", "snippet"} <= set(first["hits"][0]) and "text" not in first["hits"][0]
    assert first["hits"][0]["title"] == "Laptop trade-in program"


def test_web_search_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        retrieval.make_web_search(delay_s=-1)


def test_a_context_without_any_query_is_reported() -> None:
    with pytest.raises(ToolInputError, match="no query"):
        retrieval.bm25_search({"question": "   "})
