"""The shipped knowledge-base corpus (``examples/data/corpus.jsonl``) and its tokenizer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CORPUS_PATH = Path(__file__).resolve().parents[1] / "data" / "corpus.jsonl"

# Function words that carry no topic; kept short on purpose (numbers and product words stay).
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its of on or our per that the "
    "their them there this to was we what when where which who why will with you your".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    url: str
    kind: str
    text: str


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric runs, minus :data:`STOPWORDS`."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


@lru_cache(maxsize=8)
def load_corpus(path: Path = CORPUS_PATH) -> tuple[Document, ...]:
    """The documents of a corpus JSONL file, in file order.

    Raises ``FileNotFoundError`` with the command that rebuilds the file when it is missing.
    """
    if not path.is_file():
        raise FileNotFoundError(f"corpus not found at {path}; run: python examples/data/build_corpus.py")
    docs = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            docs.append(Document(raw["id"], raw["title"], raw["url"], raw["kind"], raw["text"]))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}:{line_no}: not a corpus document ({exc})") from exc
    return tuple(docs)
