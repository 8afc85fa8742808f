"""Stage 01: load corpora through their adapters, merge, assign splits, validate, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sqa import paths
from sqa.data import manifest
from sqa.data.corpora import base


@dataclass
class MergeResult:
    manifest: pd.DataFrame
    roots: dict[str, Path]
    skipped: pd.DataFrame

    def skipped_by_reason(self) -> pd.DataFrame:
        """How many rows were skipped, per corpus and reason (an empty table if none)."""
        if self.skipped.empty:
            return pd.DataFrame(columns=["corpus", "reason", "rows"])
        return (self.skipped.groupby(["corpus", "reason"]).size().rename("rows").reset_index())


def parse_spec(spec: str, data_root: Path) -> tuple[str, Path]:
    """``adapter`` or ``adapter:folder`` (folder relative to ``data_root`` unless absolute)."""
    from sqa.data import corpora

    name, _, folder = spec.partition(":")
    name = name.strip()
    if name not in corpora.names():
        raise ValueError(f"corpus spec {spec!r}: unknown adapter {name!r}; known: {', '.join(corpora.names())}")
    folder_path = Path(folder.strip() or name)
    return name, folder_path if folder_path.is_absolute() else Path(data_root) / folder_path


def prepare(specs: list[str], data_root: Path, profile: str, seed: int) -> list[Path]:
    """Build any requested generated demo corpus, the pool of real speech from ``pool-sources``
    (:mod:`sqa.synth.pool`), and the release profile's pools (:mod:`sqa.synth.release_corpus`)
    that are missing (resumes a partial build)."""
    from sqa.pipeline import profiles
    from sqa.synth import demo_corpus

    parsed = [parse_spec(s, data_root) for s in specs]
    if paths.check_profile(profile) == "release" and any(name == "pool" for name, _ in parsed):
        from sqa.synth import release_corpus

        release_corpus.build(Path(data_root), seed=seed)
    for root in (root for name, root in parsed if name == "pool"):  # the unlabeled pool of real speech
        from sqa.synth import pool

        pool.build_under_data_root(root)
    wanted = [root for name, root in parsed if name == demo_corpus.NAME]
    if wanted:
        demo_corpus.build(Path(data_root), size=profiles.demo_size(profile), seed=seed,
                   only=[w.name for w in wanted])
    return wanted


def load_all(specs: list[str], data_root: Path) -> MergeResult:
    """Load every corpus spec; roots map each manifest corpus name to its adapter's root. A row
    whose ``utt_id`` an earlier spec already loaded (the same corpus given twice, or a clash
    between corpora) is skipped and counted with the reason, like any bad row."""
    from sqa.data import corpora

    frames, skipped, roots, taken = [], [], {}, {}
    for spec in specs:
        name, root = parse_spec(spec, data_root)
        loaded = corpora.load(name, root)
        kept, dups = base.drop_duplicates(loaded.manifest, taken, file=f"corpus spec {spec!r}")
        frames.append(kept)
        skipped += [loaded.skipped, pd.DataFrame(dups, columns=base.SKIP_COLUMNS)]
        for corpus in kept["corpus"].unique():
            if corpus in roots and Path(roots[corpus]) != Path(root):
                raise ValueError(f"corpus {corpus!r} is loaded from two folders, {roots[corpus]} and {root}; "
                                 "give each corpus once")
            roots[corpus] = root
    merged = manifest.merge(frames)
    skipped_all = pd.concat(skipped, ignore_index=True) if skipped else pd.DataFrame(columns=base.SKIP_COLUMNS)
    return MergeResult(merged, roots, skipped_all)


def run_merge(specs: list[str], data_root: Path, dev_frac: float, test_frac: float,
              seed: int) -> MergeResult:
    """Load, merge, fill missing splits (grouped by source), validate with file checks."""
    result = load_all(specs, data_root)
    if result.manifest.empty:
        raise ValueError(f"no clips were loaded from {specs} under {data_root}; "
                         f"skipped: {len(result.skipped)} rows")
    df = manifest.assign_splits(result.manifest, dev_frac=dev_frac, test_frac=test_frac, seed=seed)
    result.manifest = manifest.validate(df, roots=result.roots)
    return result


class ManifestChangedError(ValueError):
    """A re-run of stage 01 would replace, with other rows, a manifest that finished runs read."""


def write_outputs(run, result: MergeResult) -> pd.DataFrame:
    """Write the manifest (+ roots), the skipped rows and the statistics; return the statistics.
    A manifest that finished runs were made from (``run.readers()``) is only rewritten unchanged:
    their identities name this run, so new rows under the same run would pass them off as made
    from the new corpora."""
    from sqa import atomic

    target = run.path("manifest.parquet")
    change = changed_rows(target, result.manifest) if target.is_file() else ""
    readers = run.readers() if change else []
    if readers:
        raise ManifestChangedError(
            f"{target}: the corpora changed since this manifest was written ({change}), and "
            f"{len(readers)} finished run(s) were made from it ({', '.join(readers[:3])}"
            f"{', ...' if len(readers) > 3 else ''}). Delete those runs (sqa reproduce remakes them) or "
            "point SQA_OUTPUTS at a new folder; the manifest was left as it was.")
    manifest.write(result.manifest, target, roots=result.roots)
    with atomic.atomic_path(run.path("skipped.csv")) as tmp:
        result.skipped.to_csv(tmp, index=False)
    stats = manifest.summary(result.manifest)
    with atomic.atomic_path(run.path("corpus_stats.csv")) as tmp:
        stats.to_csv(tmp, index=False)
    atomic.write_text(run.path("corpus_stats.md"), stats.to_markdown(index=False, floatfmt=".3g") + "\n")
    return stats


def changed_rows(old_file: Path, new: pd.DataFrame) -> str:
    """How the manifest in ``old_file`` differs from ``new`` (with the schema's dtypes, as written):
    rows added, removed and changed (any column, by ``utt_id``) and columns added or removed; empty
    when they are equal. The files are checked once, when the manifest is written."""
    old = manifest.read(old_file).set_index("utt_id")
    now = manifest.coerce(new).set_index("utt_id")
    common, cols = old.index.intersection(now.index), sorted(set(old.columns) & set(now.columns))
    changed = np.zeros(len(common), dtype=bool)
    for col in cols:  # missing on both sides is equal; everything else compares as text
        a, b = old.loc[common, col], now.loc[common, col]
        changed |= ~(a.isna().to_numpy() & b.isna().to_numpy()) & (a.astype(str).to_numpy() != b.astype(str).to_numpy())
    counts = {"rows added": len(now.index.difference(old.index)), "rows removed": len(old.index.difference(now.index)),
              "rows changed": int(changed.sum()), "columns added": len(set(now.columns) - set(old.columns)),
              "columns removed": len(set(old.columns) - set(now.columns))}
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


def metrics(result: MergeResult) -> dict:
    df = result.manifest
    return {"clips": int(len(df)), "corpora": int(df["corpus"].nunique()),
            "hours": float(df["duration"].sum() / 3600),
            "splits": {k: int(v) for k, v in df["split"].value_counts().items()},
            "skipped": int(len(result.skipped)),
            "skipped_by_reason": {r: int(n) for r, n in result.skipped["reason"].value_counts().items()}}
