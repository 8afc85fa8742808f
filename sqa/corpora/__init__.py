"""Corpus adapters: one module per corpus family, looked up by name.

``ADAPTERS`` maps each adapter ``NAME`` to its module. The modules (and pandas/soundfile with
them) are imported on first use of ``ADAPTERS`` or :func:`load`, so ``import sqa.corpora`` stays
cheap. Helpers for adapters: :func:`combine` joins the loads of several tables or sub-corpora
into one result, :func:`skipped_only` reports rows an adapter rejects before
:func:`base.finalize`, :func:`rel_path` normalises a published path relative to the root.
"""

from __future__ import annotations

import importlib
import posixpath
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import CorpusLoad

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
    "ratings": "ratings",
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


def combine(loads: list[CorpusLoad]) -> CorpusLoad:
    """One result from several: manifests merged (utt_id clashes raise), skipped rows stacked."""
    import pandas as pd

    from .. import manifest
    from .base import SKIP_COLUMNS, CorpusLoad

    frames = [ld.manifest for ld in loads if not ld.manifest.empty]
    skipped = [ld.skipped for ld in loads if not ld.skipped.empty]
    return CorpusLoad(manifest.merge(frames) if frames else manifest.empty(),
                      pd.concat(skipped, ignore_index=True) if skipped
                      else pd.DataFrame(columns=SKIP_COLUMNS))


def skipped_only(records: list[dict]) -> CorpusLoad:
    """A result holding no clips, only skipped rows (``corpus, file, row, reason`` dicts)."""
    import pandas as pd

    from .. import manifest
    from .base import SKIP_COLUMNS, CorpusLoad

    return CorpusLoad(manifest.empty(), pd.DataFrame(records, columns=SKIP_COLUMNS))


def rel_path(*parts: str) -> str:
    """Join path pieces as published (``./x``, backslashes) into a clean relative POSIX path."""
    return posixpath.normpath(posixpath.join(*(str(p).strip().replace("\\", "/") for p in parts)))


def __getattr__(attr: str) -> Any:
    if attr == "ADAPTERS":
        return {name: adapter(name) for name in _MODULES}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
