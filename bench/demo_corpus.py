"""Benchmark: build the demo corpora (timed) and sanity-check their labels.

Writes ``bench/results/demo_corpus.json``: build seconds (clean speech, total), clip counts, label
span and the largest 0.5-wide MOS bin share, and the released DistillMOS's PCC against the PESQ
labels on each demo corpus's test split (are the degradations perceptually meaningful?).

    python -m bench.demo_corpus [--data DIR] [--size demo|smoke] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqa import atomic, paths
from sqa.analysis import predictions
from sqa.data import manifest
from sqa.data.corpora import demo as demo_adapter
from sqa.models import baselines
from sqa.synth import demo_corpus

from .common import machine, results_dir


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="build folder (default: outputs/<size>/data)")
    ap.add_argument("--size", default="demo", choices=sorted(demo_corpus.SIZES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = args.data or paths.demo_data_dir(args.size)
    report = demo_corpus.build(data, args.size, args.seed)
    corpora = list(demo_corpus.CORPORA)
    frames = [demo_adapter.load(data / c).manifest for c in corpora]
    test = manifest.merge(frames)
    test = test[test["split"] == "test"].reset_index(drop=True)
    preds = predictions.predict(baselines.get("distillmos"), test, {c: data / c for c in corpora},
                             desc="DistillMOS on demo test")
    table, summary = predictions.report(preds)
    result = {"machine": machine(), "size": args.size, "seed": args.seed, "build": report,
              "distillmos_vs_pesq_test": {r.corpus: {"pcc": r.pcc, "srcc": r.srcc, "n": int(r.n)}
                                          for r in table.itertuples()},
              "distillmos_vs_pesq_test_mean_pcc": summary["pcc"]["weighted"]}
    atomic.write_json(results_dir() / f"demo_corpus_{args.size}.json", result)
    print(table.to_string(index=False))
    return result


if __name__ == "__main__":
    main()
