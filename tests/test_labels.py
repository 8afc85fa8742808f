"""PESQ-WB labels: score range, SNR monotonicity, skips, named errors, parallel == serial, Jupyter."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from scipy.signal import lfilter

from sqa.synth import objective_labels
from sqa.synth.speech import Voice, active_level_db

from signals import speechlike

SR = objective_labels.SAMPLE_RATE


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return Voice().synthesize("The night train to Dublin leaves from platform six at half past eleven.", seed=2)


def _with_noise(x: np.ndarray, snr_db: float, seed: int, pink: bool = False) -> np.ndarray:
    """``x`` plus white (or pink-ish) noise at ``snr_db`` below its active speech level."""
    noise = np.random.default_rng(seed).standard_normal(len(x))
    if pink:
        noise = lfilter([1.0], [1.0, -0.95], noise)
    noise *= 10 ** ((active_level_db(x) - snr_db) / 20) / np.sqrt(np.mean(noise**2))
    return (x + noise).astype(np.float32)




def test_identical_signal_scores_at_the_top(ref):
    assert objective_labels.pesq_wb(ref, ref) == pytest.approx(objective_labels.PESQ_WB_MAX, abs=0.01)


def test_white_noise_at_0db_scores_much_lower(ref):
    score = objective_labels.pesq_wb(ref, _with_noise(ref, 0.0, seed=1))
    assert 1.0 <= score < 1.5


def test_scores_fall_monotonically_with_snr(ref):
    scores = [objective_labels.pesq_wb(ref, _with_noise(ref, snr, seed=3, pink=True)) for snr in (40, 20, 10, 0)]
    assert all(a > b + 0.1 for a, b in zip(scores, scores[1:])), scores
    assert scores[0] > 3.5 and scores[-1] < 1.5


def test_skips_return_nan_with_a_reason(ref):
    silent = np.zeros_like(ref)
    assert objective_labels.pesq_wb_result(ref, silent).skip_reason == "degraded clip is digitally silent"
    assert objective_labels.pesq_wb_result(silent, ref).skip_reason == "reference is digitally silent"
    rumble = (0.5 * np.sin(2 * np.pi * 20 * np.arange(SR) / SR)).astype(np.float32)  # 1 s at 20 Hz
    hiss = (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    result = objective_labels.pesq_wb_result(rumble, hiss)
    assert math.isnan(result.score) and "no utterance" in result.skip_reason
    assert math.isnan(objective_labels.pesq_wb(ref, silent))
    ok = objective_labels.pesq_wb_result(ref, ref)
    assert ok.skip_reason is None and not math.isnan(ok.score)


def test_errors_name_the_clip(ref):
    with pytest.raises(ValueError, match=r"demo/a1: ref and deg differ in length \(\d+ vs \d+"):
        objective_labels.pesq_wb(ref, ref[:-160], clip_id="demo/a1")
    with pytest.raises(ValueError, match="demo/a2: PESQ-WB needs sr=16000 Hz, got sr=8000"):
        objective_labels.pesq_wb(ref, ref, sr=8000, clip_id="demo/a2")
    with pytest.raises(ValueError, match="demo/a3: clip is 0.100 s long"):
        objective_labels.pesq_wb(ref[:1600], ref[:1600], clip_id="demo/a3")
    bad = ref.copy()
    bad[10:13] = np.nan
    with pytest.raises(ValueError, match="demo/a4: deg has 3 NaN/inf samples"):
        objective_labels.pesq_wb(ref, bad, clip_id="demo/a4")
    with pytest.raises(ValueError, match="demo/a5: ref must be a 1-D"):
        objective_labels.pesq_wb(np.stack([ref, ref]), ref, clip_id="demo/a5")
    with pytest.raises(ValueError, match="ref and deg differ in length"):
        objective_labels.pesq_wb(ref, ref[:-1])
    with pytest.raises(ValueError, match="clip-7: ref and deg differ"):
        objective_labels.pesq_wb_many([(ref, ref), (ref, ref[:-1])], clip_ids=["clip-6", "clip-7"], progress=False)
    with pytest.raises(ValueError, match="pair 1: expected a \\(ref, deg\\) pair"):
        objective_labels.pesq_wb_many([(ref, ref), ref], progress=False)
    with pytest.raises(ValueError, match="1 clip_ids for 2 pairs"):
        objective_labels.pesq_wb_many([(ref, ref), (ref, ref)], clip_ids=["x"], progress=False)
    with pytest.raises(ValueError, match="n_jobs"):
        objective_labels.pesq_wb_many([(ref, ref)], n_jobs=0, progress=False)


def test_parallel_equals_serial(ref):
    pairs = [(ref, _with_noise(ref, snr, seed=snr)) for snr in (35, 25, 15, 5)]
    pairs.append((ref, np.zeros_like(ref)))
    ids = [f"demo/p{i}" for i in range(len(pairs))]
    with pytest.warns(UserWarning, match=r"skipped 1 of 5 pairs.*demo/p4: degraded clip is digitally silent"):
        serial = objective_labels.pesq_wb_results(pairs, n_jobs=1, clip_ids=ids, progress=False)
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        parallel = objective_labels.pesq_wb_many(pairs, n_jobs=2, clip_ids=ids)
    assert [r.score for r in serial[:4]] == parallel[:4]
    assert math.isnan(parallel[4]) and serial[4].skip_reason is not None
    assert all(a > b for a, b in zip(parallel[:3], parallel[1:4]))


def test_parallel_runs_inside_a_jupyter_kernel(tmp_path):
    """pesq_wb_many with worker processes, called from a notebook cell (no __main__ guard)."""
    pairs = []
    for seed in range(3):
        clean = speechlike(2.0, seed)
        noise = np.random.default_rng(seed).standard_normal(len(clean)).astype(np.float32)
        pairs.append((clean, clean + 0.003 * (seed + 1) * noise))
    expected = objective_labels.pesq_wb_many(pairs, n_jobs=1, progress=False)
    np.savez(tmp_path / "pairs.npz", *[x for pair in pairs for x in pair])
    source = "\n".join(
        [
            "import json, numpy as np",
            "from sqa.synth import objective_labels",
            "arrays = np.load('pairs.npz')",
            "flat = [arrays[f'arr_{i}'] for i in range(len(arrays.files))]",
            "pairs = list(zip(flat[0::2], flat[1::2]))",
            "print(json.dumps(objective_labels.pesq_wb_many(pairs, n_jobs=2)))",
        ]
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    client = NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    assert json.loads(text.strip().splitlines()[-1]) == expected
    assert 1.0 < min(expected) and max(expected) < objective_labels.PESQ_WB_MAX
