"""Corpus adapters: one module per corpus family, looked up by name.

``ADAPTERS`` maps each adapter ``NAME`` to its module. The modules (and pandas/soundfile with
them) are imported on first use of ``ADAPTERS`` or :func:`load`, so ``import sqa.data.corpora`` stays
cheap. What adapters share lives in :mod:`sqa.data.corpora.base`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqa.data.corpora.base import CorpusLoad

#: adapter NAME -> module in this package
_MODULES: dict[str, str] = {
    "nisqa": "nisqa",
    "conferencingspeech": "conferencingspeech",
    "bvcc": "bvcc",
    "tcd-voip": "tcd_voip",
    "genspeech": "genspeech",
    "blizzard": "blizzard",
    "dns-challenge": "dns_challenge",
    "plc-challenge": "plc_challenge",
    "generic-csv": "generic_csv",
    "demo": "demo",
    "pool": "pool",
    "ratings": "listening",
}


def names() -> list[str]:
    """Adapter names, in registry order."""
    return list(_MODULES)


def adapter(name: str) -> ModuleType:
    """The adapter module called ``name``."""
    if name not in _MODULES:
        raise ValueError(f"unknown corpus adapter {name!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(f".{_MODULES[name]}", __name__)


def load(name: str, root: Path | str, **options: Any) -> CorpusLoad:
    """Load corpus family ``name`` from ``root``; ``options`` go to the adapter's ``load``."""
    return adapter(name).load(root, **options)


def __getattr__(attr: str) -> Any:
    if attr == "ADAPTERS":
        return {name: adapter(name) for name in _MODULES}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
