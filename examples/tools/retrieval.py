"""Retrieval tools over the shipped knowledge base: sparse (BM25), "dense" and "web" search.

Tool entries (``tool(ctx) -> dict``, see :mod:`examples.tools.context` for how the
query is found):

* :func:`bm25_search`   — Okapi BM25 over title + text;
* :func:`dense_search`  — cosine similarity of hashed bag-of-features vectors;
* :func:`web_search`    — a simulated web search engine over the same corpus:
  title-boosted BM25, URL + snippet results, and a simulated network delay.

Each returns ``{"query", "hits": [{"doc_id", "title", "url", "score", "text"|"snippet"}],
"observation"}``; ``observation`` is a short plain-text digest for agent prompts.

BM25 (Robertson/Sparck Jones, Lucene's non-negative idf)::

    score(q, d) = sum over terms t of q:
                  idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

"Dense" search here is a lightweight stand-in for a learned embedding model,
not one: a document is the sum of its features (word unigrams, word bigrams and
character trigrams of each word), each weighted ``(1 + ln tf) * idf`` and
feature-hashed (signed, blake2b) into ``DIM`` dimensions, then L2-normalised;
relevance is the cosine with the query's vector. The character trigrams give it
the fuzzy matching BM25 lacks ("discounted" ~ "discount"); it knows no synonyms.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from .context import query_from
from .corpus import Document, load_corpus, tokenize

DEFAULT_K = 5
WEB_DEFAULT_DELAY_S = 0.12
DIM = 1024
FEATURE_WEIGHTS = {"w": 1.0, "b": 0.5, "c": 0.3}  # unigram, bigram, char trigram


class BM25Index:
    """Okapi BM25 over a fixed list of token lists (see the module docstring for the formula)."""

    def __init__(self, docs: Sequence[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tfs = [Counter(d) for d in docs]
        self.lengths = [len(d) for d in docs]
        self.avgdl = sum(self.lengths) / max(len(docs), 1) or 1.0
        df = Counter(t for tf in self.tfs for t in tf)
        n = len(docs)
        self.idf = {t: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: list[str]) -> list[float]:
        out = []
        for tf, length in zip(self.tfs, self.lengths):
            norm = self.k1 * (1.0 - self.b + self.b * length / self.avgdl)
            out.append(sum(
                self.idf[t] * tf[t] * (self.k1 + 1.0) / (tf[t] + norm) for t in query if t in tf
            ))
        return out


def _features(text: str) -> Counter:
    words = tokenize(text)
    feats: Counter = Counter(f"w:{w}" for w in words)
    feats.update(f"b:{a}_{b}" for a, b in zip(words, words[1:]))
    for w in words:
        padded = f"#{w}#"
        feats.update(f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2))
    return feats


def _slot(feature: str) -> tuple[int, float]:
    """Hash a feature to (dimension, sign); blake2b, not ``hash()``, so it is stable across processes."""
    h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return h % DIM, 1.0 if (h >> 63) & 1 else -1.0


class HashedEmbeddingIndex:
    """Cosine search over hashed tf-idf feature vectors (a stand-in embedding; see the module docstring)."""

    def __init__(self, texts: Sequence[str]) -> None:
        per_doc = [_features(t) for t in texts]
        df = Counter(f for feats in per_doc for f in feats)
        n = len(texts)
        self.idf = {f: math.log((1.0 + n) / (1.0 + c)) + 1.0 for f, c in df.items()}
        self.unseen_idf = math.log(1.0 + n) + 1.0
        self.matrix = np.stack([self.embed_features(f) for f in per_doc]) if per_doc else np.zeros((0, DIM))

    def embed_features(self, feats: Counter) -> np.ndarray:
        vec = np.zeros(DIM, dtype=np.float64)
        for feature, tf in feats.items():
            dim, sign = _slot(feature)
            weight = FEATURE_WEIGHTS[feature[0]] * (1.0 + math.log(tf)) * self.idf.get(feature, self.unseen_idf)
            vec[dim] += sign * weight
        norm = np.linalg.norm(vec)
        return vec / norm if norm > 0 else vec

    def embed(self, text: str) -> np.ndarray:
        return self.embed_features(_features(text))

    def scores(self, query: str) -> list[float]:
        return (self.matrix @ self.embed(query)).tolist()


@lru_cache(maxsize=4)
def _indexes(docs: tuple[Document, ...]) -> tuple[BM25Index, HashedEmbeddingIndex, BM25Index]:
    """(BM25 over title + text, hashed embeddings, title-boosted BM25 for the web engine)."""
    sparse = BM25Index([tokenize(f"{d.title} {d.text}") for d in docs])
    dense = HashedEmbeddingIndex([f"{d.title}. {d.text}" for d in docs])
    web = BM25Index([tokenize(f"{d.title} {d.title} {d.title} {d.text}") for d in docs], k1=1.2, b=0.6)
    return sparse, dense, web


def _top(docs: Sequence[Document], scores: list[float], k: int) -> list[tuple[Document, float]]:
    ranked = sorted(zip(docs, scores), key=lambda ds: (-ds[1], ds[0].doc_id))
    return [(d, s) for d, s in ranked[:k] if s > 0]


def _observation(query: str, hits: list[dict]) -> str:
    if not hits:
        return f"No documents match {query!r}."
    return "\n".join(f"[{h['doc_id']}] {h['title']}: {h.get('text') or h.get('snippet')}" for h in hits[:3])


def search_documents(query: str, method: str, k: int = DEFAULT_K,
                     docs: tuple[Document, ...] | None = None) -> list[tuple[Document, float]]:
    """The top ``k`` documents for ``query`` by ``method`` ('bm25', 'dense' or 'web'), best first.

    Documents scoring 0 (no overlap at all) are never returned.
    """
    docs = load_corpus() if docs is None else docs
    sparse, dense, web = _indexes(docs)
    if method == "bm25":
        scores = sparse.scores(tokenize(query))
    elif method == "dense":
        scores = dense.scores(query)
    elif method == "web":
        scores = web.scores(tokenize(query))
    else:
        raise ValueError(f"unknown search method {method!r}; expected 'bm25', 'dense' or 'web'")
    return _top(docs, scores, k)


def _result(query: str, ranked: list[tuple[Document, float]], *, snippets: bool) -> dict:
    hits = []
    for doc, score in ranked:
        hit = {"doc_id": doc.doc_id, "title": doc.title, "url": doc.url, "score": round(score, 4)}
        if snippets:
            hit["snippet"] = doc.text if len(doc.text) <= 160 else doc.text[:157].rsplit(" ", 1)[0] + " ..."
        else:
            hit["text"] = doc.text
        hits.append(hit)
    return {"query": query, "hits": hits, "observation": _observation(query, hits)}


def bm25_search(ctx: dict) -> dict:
    """Tool: sparse keyword search (BM25), top 5 documents with their full text."""
    query = query_from(ctx)
    return _result(query, search_documents(query, "bm25"), snippets=False)


def dense_search(ctx: dict) -> dict:
    """Tool: "dense" search with the hashed stand-in embedding, top 5 documents with their full text."""
    query = query_from(ctx)
    return _result(query, search_documents(query, "dense"), snippets=False)


def make_web_search(delay_s: float = WEB_DEFAULT_DELAY_S, jitter: float = 0.5, k: int = 4,
                    sleep: Callable[[float], None] = time.sleep) -> Callable[[dict], dict]:
    """A simulated web-search tool: results are URLs and snippets, after a simulated network delay.

    The delay is ``delay_s * (1 + jitter * u)`` with ``u`` in [-1, 1) derived
    from a hash of the query, so a given query always waits the same time.
    ``sleep`` is injectable so tests need not wait.
    """
    if delay_s < 0 or not 0 <= jitter <= 1:
        raise ValueError("delay_s must be >= 0 and jitter in [0, 1]")

    def web_search(ctx: dict) -> dict:
        query = query_from(ctx)
        digest = hashlib.blake2b(query.encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "little") / 2**63 - 1.0
        delay = delay_s * (1.0 + jitter * u)
        if delay > 0:
            sleep(delay)
        result = _result(query, search_documents(query, "web", k=k), snippets=True)
        result["latency_s"] = round(delay, 4)
        return result

    web_search.__doc__ = "Tool: simulated web search (title-boosted BM25, URL + snippet, simulated delay)."
    return web_search


web_search = make_web_search()
