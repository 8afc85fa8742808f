"""Ship the release profile's students into the package (``sqa.pretrained`` loads them by name).

For each shipped size, the latest finished ``04_distill`` run of the release profile's recipe
(that size, distilled, no labeled mix, seed 0 as the sweep makes it, or ``--seed``) is copied to
``sqa/weights/sqa-<size>.safetensors`` and exported to ``sqa-<size>.onnx`` (``sqa.export``,
checked against torch); ``models.json`` records each file's run, the pseudo-label run it learned
from, its held-out dev/test agreement with the teacher and the files' SHA-256.

    sqa reproduce --profile release        # the pools, the teacher's labels, the students
    python -m sqa.pipeline.ship            # copy + export them into sqa/weights
    python -m sqa.pipeline.ship --check    # do the runs give the shipped files, byte for byte?
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from sqa import atomic, paths
from sqa.pipeline import runs

PROFILE = "release"
SIZES = ("50k", "250k", "1M")
STAGE = "04_distill"


def release_run(size: str, profile: str = PROFILE, seed: int = 0) -> Path:
    """The latest finished release student of ``size`` and ``seed`` (distilled from pseudo-labels
    alone); a re-run of another identity (in a folder with an ``_id-`` suffix) counts too."""
    tag = f"size-{size}_mode-distill_labeled-mix-0.0_seed-{seed}"
    found = [r for r in runs.registry(profile, STAGE) if r.get("tag") == tag]
    if not found:
        raise FileNotFoundError(f"no finished {STAGE} run {tag} in the {profile} profile: "
                                f"run `sqa reproduce --profile {profile}` first")
    return paths.resolve_portable(found[-1]["dir"])


def ship(out: Path, profile: str = PROFILE, sizes: tuple[str, ...] = SIZES, seed: int = 0) -> dict:
    """Copy and export the release students into ``out``; returns the ``models.json`` record."""
    from sqa import export

    out.mkdir(parents=True, exist_ok=True)
    record = {}
    for size in sizes:
        run = release_run(size, profile, seed)
        name = f"sqa-{size}"
        weights = out / f"{name}.safetensors"
        with atomic.atomic_path(weights) as tmp:
            shutil.copyfile(run / "model.safetensors", tmp)
        onnx = export.export(weights, "onnx", weights.with_suffix(".onnx"))
        params = json.loads((run / "params.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        record[name] = {"run": paths.portable(run), "pseudo_labels_run": params["inputs"].get("pseudo_labels"),
                        "params": metrics["params"], "best_dev_pcc": metrics["best_dev_pcc"],
                        "test": metrics["test"], "sha256": {"safetensors": export.sha256(weights),
                                                            "onnx": export.sha256(onnx)}}
        print(f"{name}: {weights} + {onnx.name} from {run.name} (dev PCC {metrics['best_dev_pcc']:.3f})",
              flush=True)
    atomic.write_json(out / "models.json", record)
    return record


def check(shipped: Path, profile: str = PROFILE, seed: int = 0) -> dict[str, bool]:
    """Ship the runs into a temporary folder; per model, whether both files equal those recorded in
    ``shipped/models.json`` (same SHA-256)."""
    import tempfile

    record = json.loads((shipped / "models.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = ship(Path(tmp), profile, tuple(name.removeprefix("sqa-") for name in record), seed)
    return {name: rebuilt[name]["sha256"] == record[name]["sha256"] for name in record}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from sqa import pretrained

    parser = argparse.ArgumentParser(description="copy the release students into sqa/weights")
    parser.add_argument("--profile", default=PROFILE)
    parser.add_argument("--seed", type=int, default=0, help="the seed of the runs to ship (the sweep's: 0)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 unless the runs give the shipped files byte for byte")
    args = parser.parse_args(argv)
    if not args.check:
        ship(pretrained.WEIGHTS_DIR, args.profile, seed=args.seed)
        return 0
    same = check(pretrained.WEIGHTS_DIR, args.profile, args.seed)
    for name, ok in same.items():
        print(f"{name}: {'the same bytes as shipped' if ok else 'DIFFERS from the shipped files'}", flush=True)
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
