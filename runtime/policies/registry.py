"""Policies by name, for the CLI and the experiments."""

from __future__ import annotations

from runtime.policies.autellix import ATLAS, PLAS
from runtime.policies.base import Policy
from runtime.policies.cortex import Cortex
from runtime.policies.fcfs import FCFS
from runtime.policies.hexagent import HexAGenT
from runtime.policies.hexgen import HexGenText2SQL

POLICIES: dict[str, type[Policy]] = {
    "fcfs": FCFS,
    "autellix-plas": PLAS,
    "autellix-atlas": ATLAS,
    "hexgen-text2sql": HexGenText2SQL,
    "cortex": Cortex,
    "hexagent": HexAGenT,
}


def make_policy(name: str) -> Policy:
    """A fresh policy by registry name; ValueError listing the known names otherwise."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
