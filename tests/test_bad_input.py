"""Bad input never costs a user their work or their files (issue 15).

One table row per hostile input of the issue's numbered cases 1-7 and 9 (case 8, ``sqa run``
parameters, is tested with the notebooks), each checked for its new behaviour; then a bounded fuzz
test: random bytes and random mutations of the headers and data of real WAV, FLAC, OGG and MP3
files (written here: soundfile for WAV/FLAC/OGG, the imageio-ffmpeg binary for MP3) go through
``audio.load`` and ``sqa score``; the batch survives, nothing outside ``--out`` is touched, and
every failure has a reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import soundfile as sf
import torch

from sqa import atomic, cli, export, score
from sqa.data import audio, manifest, merge
from sqa.data.corpora import generic_csv
from sqa.models import checkpoint, heads, student, teacher

from signals import speechlike

SR = 16000
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 25k student (random weights, 2-s window) saved as a run folder."""
    torch.manual_seed(0)
    model = student.ConvTransformerSQA(student.preset("25k")).with_window(2.0).eval()
    run = tmp_path_factory.mktemp("run")
    checkpoint.save(run / "model.safetensors", model, model.arch, model.checkpoint_config())
    return run


@pytest.fixture()
def clips(tmp_path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"good{i}.wav", speechlike(1.5 + i, seed=i), SR)
    return folder


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def snapshot(folder: Path, skip: set[Path] = frozenset()) -> dict[str, tuple]:
    """Every path below ``folder`` with its type, size, mtime and content hash."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p in skip:
            continue
        st = os.lstat(p)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


# ------------------------------------------------------------------ 1, 2: outputs


def out_symlink(tmp: Path) -> Path:
    target = tmp / "precious.csv"
    target.write_text("do not touch\n")
    link = tmp / "link.csv"
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("make_out, what", [
    (lambda tmp: Path("/dev/null"), "is a device file"),
    (out_symlink, "is a symlink"),
    (lambda tmp: (tmp / "folder").mkdir() or tmp / "folder", "is a folder"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "scores.csv", "a parent is not a folder"),
    (lambda tmp: Path("/proc/sqa-scores.csv"), "cannot write there"),
])
def test_case1_2_bad_out_is_refused_before_any_work(make_out, what, clips, run_dir, tmp_path, monkeypatch,
                                                    capsys) -> None:
    out = make_out(tmp_path)
    before = os.lstat(out) if os.path.lexists(out) else None
    link_target = out.resolve().read_text() if out.is_symlink() else None
    monkeypatch.setattr(score, "resolve_model", lambda *a, **k: pytest.fail("model resolved before --out was checked"))
    assert cli.main(["score", str(clips), "--model", str(run_dir), "--out", str(out)]) == 2
    assert what in capsys.readouterr().err
    if before is not None:
        after = os.lstat(out)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # not replaced
    if link_target is not None:
        assert out.is_symlink() and out.resolve().read_text() == link_target
    with pytest.raises(atomic.DestinationError, match=what):
        atomic.write_text(out, "x")  # the one helper every output goes through refuses it too


def test_case2_interrupted_batch_keeps_its_rows(clips, run_dir, tmp_path, monkeypatch) -> None:
    out = tmp_path / "scores.csv"
    out.write_text("an older result\n")
    monkeypatch.setattr(score, "GROUP_SIZE", 1)
    real = score.resolve_model(str(run_dir))
    calls = []

    def predict(waves, batch_size):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user gives up (not an error of one clip)
        return real.predict(waves, batch_size)

    monkeypatch.setattr(score, "resolve_model", lambda *a, **k: score.Model("m", predict, 1, "test"))
    with pytest.raises(KeyboardInterrupt):
        cli.main(["score", str(clips), "--model", "x", "--out", str(out)])
    assert out.read_text() == "an older result\n"  # untouched
    rows = read_csv(atomic.partial_path(out))
    assert [Path(r["path"]).name for r in rows] == ["good0.wav", "good1.wav"]
    assert all(r["status"] == "ok" and 1 <= float(r["mos"]) <= 5 for r in rows)
    assert not list(tmp_path.glob(".*tmp*"))


def test_case2_out_dash_streams_to_stdout(clips, run_dir, capsys) -> None:
    assert cli.main(["score", str(clips), "--model", str(run_dir), "--out", "-"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [Path(r["path"]).name for r in rows] == ["good0.wav", "good1.wav", "good2.wav"]
    assert not Path("-").exists()
    assert "scored 3 of 3 files" in captured.err


def test_case2_export_failures_are_clear(run_dir, tmp_path, monkeypatch, capsys) -> None:
    assert cli.main(["export", "--run", str(run_dir), "--format", "onnx", "--out", "/dev/null"]) == 2
    assert "is a device file" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "_onnx_fp32", broken)
    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--run", str(run_dir), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "sqa export: error:" in err and "RuntimeError: exporter crashed" in err and "Traceback" not in err
    assert not out.exists() and not export.sidecar_path(out).exists()


# ------------------------------------------------------------------ 3, 5: audio that lies


def flac_claiming(path: Path, frames: int) -> Path:
    """A real FLAC whose STREAMINFO says it holds ``frames`` frames."""
    sf.write(path, speechlike(1.0, 0), SR)
    data = bytearray(path.read_bytes())
    word = int.from_bytes(data[18:26], "big")  # STREAMINFO: ... 5 bits bps, 36 bits total samples
    data[18:26] = ((word & ~((1 << 36) - 1)) | frames).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def wav_cut(path: Path) -> Path:
    sf.write(path, speechlike(2.0, 1), SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def wav_at(rate: int, seconds: float = 20.0):
    def make(path: Path) -> Path:
        sf.write(path, np.sin(np.arange(max(1, int(seconds * rate)))).astype(np.float32) * 0.3, rate)
        return path
    return make


BAD_AUDIO = [  # case, file maker, reason expected in the error column
    ("3", lambda p: flac_claiming(p.with_suffix(".flac"), 1 << 35), "more than a"),
    ("5", wav_cut, "the file is truncated"),
    ("5", lambda p: (sf.write(p, np.full(1, 0.1, np.float32), SR), p)[1], "shorter than the 0.5 s"),
    ("5", wav_at(1), "sample rate 1 Hz is outside"),
    ("5", wav_at(3), "sample rate 3 Hz is outside"),
]


@pytest.mark.parametrize("case, make, reason", BAD_AUDIO)
def test_case3_5_bad_audio_fails_its_file_only(case, make, reason, clips, run_dir, tmp_path) -> None:
    bad = make(clips / "bad.wav")
    if bad.suffix != ".flac":
        assert reason in score.read_clip(bad)[1]
    out = tmp_path / "s.csv"
    assert cli.main(["score", str(clips), str(bad), "--model", str(run_dir), "--out", str(out)]) == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    assert rows[bad.name]["status"] == "failed" and reason in rows[bad.name]["error"], rows[bad.name]
    assert all(rows[f"good{i}.wav"]["status"] == "ok" for i in range(3))


def test_case3_lying_header_never_allocates(tmp_path) -> None:
    bad = flac_claiming(tmp_path / "huge.flac", 1 << 35)
    assert sf.info(str(bad)).frames == 1 << 35  # the header really claims 128 GiB of float32
    with pytest.raises(audio.AudioError, match=r"huge.flac: header declares 34359738368 frames"):
        audio.load(bad)


@pytest.mark.parametrize("level, warning", [(0.0, "silent: every sample is zero"),
                                            (1e-5, "near-silent: RMS"), (0.3, "")])
def test_case5_silent_clips_are_scored_with_a_warning(level, warning, run_dir, tmp_path) -> None:
    clip = tmp_path / "quiet.wav"
    sf.write(clip, (level * speechlike(2.0, 3) / 0.3).astype(np.float32), SR, subtype="FLOAT")
    out = tmp_path / "s.csv"
    assert cli.main(["score", str(clip), "--model", str(run_dir), "--out", str(out)]) == 0
    (row,) = read_csv(out)
    assert row["status"] == "ok" and warning in row["warning"] and bool(row["warning"]) == bool(warning)


# ------------------------------------------------------------------ 4: memory bounded for any length


def test_case4_every_scorer_cuts_windows_a_batch_at_a_time(run_dir, monkeypatch) -> None:
    wave = speechlike(40.0, 5)
    model, _ = checkpoint.load(run_dir / "model.safetensors")
    seen: list[int] = []
    inner = model.frontend.forward
    monkeypatch.setattr(model.frontend, "forward", lambda w: (seen.append(w.shape[0]), inner(w))[1])
    with torch.no_grad():
        mos = model(torch.from_numpy(wave)[None]).item()
    assert len(seen) > 3 and max(seen) <= model.window_batch  # 39 windows, never all at once
    onnx = export.OnnxScorer(export.export(run_dir, "onnx", run_dir / "m.onnx"))
    rows: list[int] = []
    run_windows = onnx.run_windows
    monkeypatch.setattr(onnx, "run_windows", lambda w: (rows.append(len(w)), run_windows(w))[1])
    assert onnx.predict([wave], batch_size=4)[0] == pytest.approx(mos, abs=1e-4)
    assert max(rows) <= 4 and sum(rows) == sum(seen)
    head = heads.SqaHead(heads.HeadConfig(dim_input=heads.N_MFCC)).eval()
    feats = heads.mfcc_features(torch.from_numpy(wave)[None])
    units: list[int] = []
    unit = head.forward_unit
    monkeypatch.setattr(head, "forward_unit", lambda f: (units.append(f.shape[0]), unit(f))[1])
    with torch.no_grad():
        chunked = heads.predict_long(head, feats, hop=80, window_batch=3)
        whole = heads.predict_long(head, feats, hop=80, window_batch=10**6)
    assert max(units[:-1]) == 3 and chunked.item() == pytest.approx(whole.item(), abs=1e-6)
    long = torch.from_numpy(speechlike(61.0, 6))[None]
    assert torch.allclose(heads.mfcc_features(long, chunk_frames=1000), heads.mfcc_features(long, 10**9), atol=1e-4)


# ------------------------------------------------------------------ 6, 7: manifests


def generic_corpus(root: Path, paths: list[str]) -> Path:
    (root / "clips").mkdir(parents=True)
    for name in ("a.wav", "b.wav"):
        sf.write(root / "clips" / name, speechlike(1.0, 0), SR)
    sf.write(root.parent / "outside.wav", speechlike(1.0, 1), SR)
    (root / "escape").symlink_to(root.parent)
    pd.DataFrame({"path": paths, "mos": [3.0] * len(paths)}).to_csv(root / "mos.csv", index=False)
    return root


MANIFEST_ROWS = [  # case, label-file paths, rows kept, reason of the skipped row
    ("6", ["clips/a.wav", "../outside.wav"], 1, "points outside the corpus root"),
    ("6", ["clips/a.wav", "clips/../../outside.wav"], 1, "points outside the corpus root"),
    ("6", ["clips/a.wav", "escape/outside.wav"], 1, "resolves outside the corpus root"),
    ("7", ["clips/a.wav", "clips/b.wav", "clips/b.wav"], 2, "duplicate path 'clips/b.wav'"),
    ("7", ["clips/a.wav", "clips/b.wav", "clips/./b.wav"], 2, "duplicate path 'clips/b.wav'"),
]


@pytest.mark.parametrize("case, paths, kept, reason", MANIFEST_ROWS)
def test_case6_7_bad_rows_are_skipped_and_counted(case, paths, kept, reason, tmp_path) -> None:
    root = generic_corpus(tmp_path / "data" / "mine", paths)
    loaded = generic_csv.load(root)
    assert len(loaded.manifest) == kept
    assert len(loaded.skipped) == 1 and reason in loaded.skipped["reason"].iloc[0]
    result = merge.run_merge(["generic-csv:mine"], tmp_path / "data", dev_frac=0.0, test_frac=0.0, seed=0)
    assert len(result.manifest) == kept
    assert merge.metrics(result)["skipped"] == 1


def test_case6_validation_refuses_paths_outside_the_root(tmp_path) -> None:
    root = generic_corpus(tmp_path / "data" / "mine", ["clips/a.wav"])
    good = generic_csv.load(root).manifest
    for path, rule in (("../outside.wav", "path outside the corpus root"),
                       ("escape/outside.wav", "resolves outside the corpus root")):
        bad = good.assign(path=path, utt_id="mine/x", source_id="mine/x", sys_id="mine/x")
        with pytest.raises(manifest.ManifestError, match=rule):
            manifest.validate(pd.concat([good, bad], ignore_index=True), roots={"mine": root})


def test_case7_same_corpus_given_twice_is_counted_not_fatal(tmp_path) -> None:
    generic_corpus(tmp_path / "data" / "mine", ["clips/a.wav", "clips/b.wav"])
    result = merge.run_merge(["generic-csv:mine", "generic-csv:mine"], tmp_path / "data", 0.0, 0.0, 0)
    assert len(result.manifest) == 2
    assert result.skipped["reason"].str.contains("duplicate utt_id").sum() == 2


# ------------------------------------------------------------------ 9: checkpoints


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    backbone = teacher.tiny_backbone(folder / "backbone")
    model = teacher.XlsrTeacher(teacher.TeacherConfig(backbone=str(backbone), layers=[2]))
    return checkpoint.save(folder / "teacher.safetensors", model, model.arch, model.checkpoint_config())


def rewrite_config(src: Path, dst: Path, change) -> Path:
    """``src`` with its stored config passed through ``change`` (weights unchanged)."""
    with safetensors.safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    config = json.loads(meta["config"])
    change(config)
    meta["config"] = json.dumps(config)
    safetensors.torch.save_file(safetensors.torch.load_file(str(src)), str(dst), metadata=meta)
    return dst


def test_case9_null_backbone_config_never_reaches_the_hub(teacher_file, tmp_path, monkeypatch) -> None:
    hostile = rewrite_config(teacher_file, tmp_path / "t.safetensors",
                             lambda c: c.update(backbone_config=None, backbone="attacker/some-hub-model"))
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    asked: list[str] = []
    for cls in (Wav2Vec2Config, Wav2Vec2Model):
        real = cls.from_pretrained
        monkeypatch.setattr(cls, "from_pretrained", lambda name, *a, _real=real, **k: (asked.append(str(name)),
                                                                                      _real(name, *a, **k))[1])
    with pytest.raises(checkpoint.CheckpointError, match="no backbone_config.*backbone="):
        checkpoint.load(hostile)
    with pytest.raises(checkpoint.CheckpointError, match="no backbone_config"):
        teacher.load(hostile)
    assert asked == []  # neither the hub id nor any folder the file names was opened
    model = teacher.load(hostile, backbone=teacher_file.parent / "backbone")  # the caller's explicit choice
    assert asked == [str(teacher_file.parent / "backbone")]
    want, _ = checkpoint.load(teacher_file)
    wave = torch.from_numpy(speechlike(3.0, 2))[None]
    with torch.no_grad():
        assert model(wave).item() == pytest.approx(want(wave).item(), abs=1e-5)


@pytest.mark.parametrize("change", [
    lambda c: c["backbone_config"].update(hidden_size=1 << 20, intermediate_size=1 << 22),
    lambda c: c["head"].update(dim_transformer=1 << 20),
])
def test_case9_huge_config_is_compared_before_allocating(change, teacher_file, tmp_path) -> None:
    hostile = rewrite_config(teacher_file, tmp_path / "t.safetensors", change)
    # allocating this model would need terabytes; the shapes are compared on the meta device first
    with pytest.raises(checkpoint.CheckpointError, match="does not match the model built from its config"):
        checkpoint.load(hostile)


# ------------------------------------------------------------------ fuzz


def base_files(folder: Path) -> list[Path]:
    """Real 1.5-s clips: WAV (PCM-16), FLAC, OGG/Vorbis (soundfile) and MP3 (ffmpeg)."""
    import imageio_ffmpeg

    x = speechlike(1.5, 7)
    files = []
    for suffix in (".wav", ".flac", ".ogg"):
        sf.write(folder / f"base{suffix}", x, SR)
        files.append(folder / f"base{suffix}")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(folder / "base.wav"),
                    "-codec:a", "libmp3lame", "-b:a", "32k", str(folder / "base.mp3")], check=True)
    return files + [folder / "base.mp3"]


def mutants(base: Path, rng: np.random.Generator, n: int) -> list[tuple[str, bytes]]:
    """``n`` mutations of ``base``: header bytes, 32-bit header fields, data bytes, cuts, garbage."""
    data = base.read_bytes()
    out = []
    for i in range(n):
        b = bytearray(data)
        kind = ["header-bytes", "header-field", "data-bytes", "truncate", "append"][i % 5]
        if kind == "header-bytes":
            for pos in rng.integers(0, min(64, len(b)), 4):
                b[pos] = int(rng.integers(0, 256))
        elif kind == "header-field":
            pos = int(rng.integers(4, min(60, len(b) - 4)))
            b[pos:pos + 4] = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.integers(0, 2**32)])).to_bytes(4, "little")
        elif kind == "data-bytes":
            for pos in rng.integers(64, len(b), 32):
                b[pos] = int(rng.integers(0, 256))
        elif kind == "truncate":
            b = b[: int(rng.integers(1, len(b)))]
        else:
            b += rng.integers(0, 256, int(rng.integers(1, 4096))).astype(np.uint8).tobytes()
        out.append((f"{base.stem}-{kind}-{i}{base.suffix}", bytes(b)))
    return out


def test_fuzz_audio_load_and_sqa_score(run_dir, tmp_path) -> None:
    """80 hostile files (bounded count, and a time limit on the scoring run)."""
    rng = np.random.default_rng(15)
    work = tmp_path / "fuzz"
    work.mkdir()
    bases = base_files(tmp_path)
    files = [tmp_path / b.name for b in bases]
    for i in range(8):
        p = work / f"random-{i}{['.wav', '.flac', '.ogg', '.mp3'][i % 4]}"
        p.write_bytes(rng.integers(0, 256, int(rng.integers(0, 20000))).astype(np.uint8).tobytes())
        files.append(p)
    for base in bases:
        for name, data in mutants(base, rng, 18):
            (work / name).write_bytes(data)
            files.append(work / name)
    for p in files:  # audio.load: a clean clip or an AudioError naming the file, nothing else
        try:
            x = audio.load(p)
        except audio.AudioError as err:
            assert str(err).startswith(f"{p}: ") and len(str(err)) > len(f"{p}: ") + 5
        else:
            assert x.dtype == np.float32 and x.ndim == 1 and x.size and np.isfinite(x).all()
    listing = tmp_path / "all.txt"
    listing.write_text("\n".join(str(p) for p in files) + "\n")
    out = tmp_path / "out" / "scores.csv"
    before = snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "sqa.cli", "score", str(listing), "--model", str(run_dir),
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [str(p) for p in files]  # the batch survived, every file has a row
    assert all(r["status"] == "ok" or r["error"].strip() for r in rows)
    assert all(r["status"] == "ok" for r in rows[:4])  # the unmutated originals
    assert sum(r["status"] == "failed" for r in rows) > 10
    after = snapshot(tmp_path, skip={out, out.parent})
    assert after == before  # nothing but --out was written or changed
