"""Tiny corpora in each distributor's native layout, for the adapter tests.

Every ``write_<adapter>(folder, defects=False)`` writes short real WAV files (0.5 s of tone plus
noise, written with soundfile) and the label tables into ``folder`` and returns a
:class:`Fixture` saying what the adapter must find. With ``defects=True`` two more rows are
written: one whose audio file does not exist and one whose rating is ``n/a``; both must be
skipped and reported. :func:`drop_column` breaks a fixture's main label table.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import soundfile as sf

MISSING_AUDIO = "audio file missing"
BAD_RATING = "rating is not a number"


@dataclass
class Fixture:
    name: str  # adapter name
    root: Path
    clips: dict[str, int]  # manifest corpus -> clips the adapter must keep
    label_file: Path  # the table drop_column() breaks
    column: str  # the column drop_column() removes
    header: bool = True  # False: a header-less list whose last field is `column`
    defects: list[str] = field(default_factory=list)  # reasons of the rows that must be skipped


def tone(path: Path, sample_rate: int = 16000, seconds: float = 0.5) -> Path:
    """A short mono 16-bit WAV: a sine whose pitch depends on the name, plus a little noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = zlib.crc32(path.name.encode())
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    rng = np.random.default_rng(seed)
    signal = 0.3 * np.sin(2 * np.pi * (150 + seed % 300) * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, signal.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def _csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def drop_column(fx: Fixture) -> None:
    """Rewrite ``fx.label_file`` without ``fx.column`` (header-less lists: without the last field)."""
    if fx.header:
        table = pd.read_csv(fx.label_file, dtype=str, keep_default_na=False)
        table.drop(columns=[fx.column]).to_csv(fx.label_file, index=False)
    else:
        lines = fx.label_file.read_text().splitlines()
        fx.label_file.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in lines))


# --- NISQA ---------------------------------------------------------------------------------

NISQA_COLUMNS = ["db", "con", "file", "con_description", "filename_deg", "filename_ref", "source", "lang",
                 "votes", "mos", "noi", "col", "dis", "loud", "noi_std", "col_std", "dis_std", "loud_std",
                 "mos_std", "filepath_deg", "filepath_ref"]


def _nisqa_row(db: str, con: str, deg: str, ref: str | None, mos, votes: int = 5) -> dict:
    return {"db": db, "con": con, "file": Path(deg).stem, "con_description": "fixture",
            "filename_deg": deg, "filename_ref": ref or "", "source": "fixture", "lang": "en",
            "votes": votes, "mos": mos, "noi": 3.5, "col": 3.0, "dis": 4.0, "loud": 3.8,
            "noi_std": 0.9, "col_std": 1.0, "dis_std": 0.7, "loud_std": 0.8, "mos_std": 0.8,
            "filepath_deg": f"{db}/deg/{deg}", "filepath_ref": f"{db}/ref/{ref}" if ref else None}


def write_nisqa(root: Path, defects: bool = False) -> Fixture:
    rows = [
        _nisqa_row("NISQA_TRAIN_SIM", "c00001", "c00001_train_a.wav", "train_ref_a.wav", 2.2),
        _nisqa_row("NISQA_TRAIN_SIM", "c00002", "c00002_train_a.wav", "train_ref_a.wav", 3.4),
        _nisqa_row("NISQA_TRAIN_SIM", "c00003", "c00003_train_b.wav", "train_ref_b.wav", 4.6),
        _nisqa_row("NISQA_TRAIN_LIVE", "c00001", "c00001_live.wav", None, 3.1),
        _nisqa_row("NISQA_VAL_SIM", "c00001", "c00001_val.wav", "val_ref.wav", 1.8),
        _nisqa_row("NISQA_TEST_FOR", "c00001", "c00001_for_m.wav", "for_ref_m.wav", 4.0),
        _nisqa_row("NISQA_TEST_FOR", "c00002", "c00002_for_f.wav", "for_ref_f.wav", 1.0),
    ]
    for r in rows:
        tone(root / r["filepath_deg"], 48000)
        if r["filepath_ref"]:
            tone(root / r["filepath_ref"], 48000)
    if defects:
        rows.append(_nisqa_row("NISQA_TRAIN_SIM", "c00004", "c00004_gone.wav", "train_ref_b.wav", 2.0))
        tone(root / "NISQA_TRAIN_SIM/deg/c00005_nan.wav", 48000)
        rows.append(_nisqa_row("NISQA_TRAIN_SIM", "c00005", "c00005_nan.wav", "train_ref_b.wav", "n/a"))
    for db in sorted({r["db"] for r in rows}):
        _csv(root / db / f"{db}_file.csv", [r for r in rows if r["db"] == db], NISQA_COLUMNS)
    label = _csv(root / "NISQA_corpus_file.csv", rows, NISQA_COLUMNS)
    return Fixture("nisqa", root, {"nisqa-train-sim": 3, "nisqa-train-live": 1, "nisqa-val-sim": 1,
                                   "nisqa-test-for": 2}, label, "mos",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- VoiceMOS 2022 main track (BVCC) ---------------------------------------------------------

def write_bvcc(root: Path, defects: bool = False) -> Fixture:
    lists = {
        "train_mos_list.txt": [("sysA-utt001.wav", "3.375"), ("sysA-utt002.wav", "2.5"),
                               ("sysB-utt003.wav", "4.125")],
        "val_mos_list.txt": [("sysC-utt004.wav", "1.75")],
        "test_mos_list.txt": [("sysA-utt005.wav", "3.0"), ("sysD-utt006.wav", "5.0")],
    }
    for entries in lists.values():
        for wav, _ in entries:
            tone(root / "DATA/wav" / wav)
    if defects:
        lists["train_mos_list.txt"] += [("sysB-utt007.wav", "3.0"), ("sysB-utt008.wav", "n/a")]
        tone(root / "DATA/wav/sysB-utt008.wav")
    for name, entries in lists.items():
        path = root / "DATA/sets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{w},{m}\n" for w, m in entries))
    return Fixture("bvcc", root, {"bvcc": 6}, root / "DATA/sets/train_mos_list.txt", "mos", header=False,
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- TCD-VoIP --------------------------------------------------------------------------------

def write_tcd_voip(root: Path, defects: bool = False) -> Fixture:
    clips = [("C_01_CHOP_FA.wav", 1, 4.5, [5, 4, 5]), ("C_01_CHOP_MK.wav", 1, 4.0, [4, 4, 4]),
             ("C_07_ECHO_FG.wav", 7, 3.125, [3, 3, 4]), ("C_11_CLIP_ML.wav", 21, 1.375, [1, 2, 1])]
    for name, *_ in clips:
        kind = name.split("_")[2].lower()
        tone(root / "Test Set" / kind / name, 48000)
        tone(root / "Test Set" / kind / "ref" / ("R_" + name[2:]), 48000)
    if defects:
        clips.append(("C_02_NOISE_FA.wav", 2, 3.0, [3, 3, 3]))
        clips.append(("C_03_NOISE_FA.wav", 3, "n/a", [2, 3, 3]))
        tone(root / "Test Set/noise/C_03_NOISE_FA.wav", 48000)
    rows = [{"Filename": n, "ConditionID": c, "sample MOS": m, **{str(i + 1): v for i, v in enumerate(votes)}}
            for n, c, m, votes in clips]
    label = _csv(root / "Subjective Test Scores.csv", rows)
    return Fixture("tcd-voip", root, {"tcd-voip": 4}, label, "ConditionID",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- ConferencingSpeech 2022 (Tencent, PSTN, IU Bloomington) ---------------------------------

def write_conferencingspeech(root: Path, defects: bool = False) -> Fixture:
    tencent = root / "TencentCorups"
    with_rev = [("./withReverberationTrainDevMOS/0000.wav", 1.12),
                ("./withReverberationTrainDevMOS/0001.wav", 2.85)]
    without = [("./withoutReverberationTrainDev/00001.wav", 1.08),
               ("./withoutReverberationTrainDev/00002.wav", 4.2),
               ("./withoutReverberationTrainDev/00005.wav", 3.0)]
    for rel, _ in with_rev + without:
        tone(tencent / rel, 16000)
    _csv(tencent / "withReverberationTrainDevMOS.csv", [{"deg_wav": p, "mos": m} for p, m in with_rev])
    _csv(tencent / "withoutReverberationTrainDevMOS.csv", [{"deg_wav": p, "mos": m} for p, m in without])

    pstn = [("noisy_a_0001.wav", 3.2, 0.9, 5), ("clean_b_0002.wav", 4.4, 0.5, 4)]
    for name, *_ in pstn:
        tone(root / "pstn_train" / name, 8000)
    if defects:
        pstn.append(("noisy_gone_0003.wav", 2.0, 1.0, 5))
    label = _csv(root / "pstn_train/pstn_train.csv",
                 [{"filename": f, "MOS": m, "std": s, "95%CI": 1.96 * s / np.sqrt(n), "votes": n}
                  for f, m, s, n in pstn])

    cosine = [("16k_speech/cosine_0001.wav", [40, 60, 80], 60.0, "cosine"),
              ("16k_speech/cosine_0002.wav", [90, 100, 95], 95.0, "cosine")]
    voices = [("16k_speech/voices_0001.wav", [0, 10, 20], 10.0, "voices")]
    for name, *_ in cosine + voices:
        tone(root / "IUB" / name, 16000)
    if defects:
        tone(root / "IUB/16k_speech/cosine_0003.wav", 16000)
        cosine.append(("16k_speech/cosine_0003.wav", [50, 50], "n/a", "cosine"))
    for part, entries in (("cosine", cosine), ("voices", voices)):
        _csv(root / "IUB" / f"audio_scaled_mos_{part}.csv",
             [{"AudioName": a, "Ratings": str(r), "MOS": m, "AudioType": t, "ScaledMOS": m}
              for a, r, m, t in entries])
    return Fixture("conferencingspeech", root,
                   {"tencent-with-reverb": 2, "tencent-without-reverb": 3, "pstn": 2, "iub-cosine": 2,
                    "iub-voices": 1}, label, "MOS", defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- GenSpeech -------------------------------------------------------------------------------

def write_genspeech(root: Path, defects: bool = False) -> Fixture:
    rows = []
    for ref, scores in (("p239_021", {"lpcn": 3.28, "opus": 2.36}), ("p254_003", {"lpcn": 3.5, "opus": 2.0})):
        tone(root / "audio" / f"{ref}.wav")
        for codec, mos in scores.items():
            tone(root / "audio" / f"{ref}_{codec}.wav")
            rows.append({"Ref_Wave": f"audio/{ref}.wav", "Test_Wave": f"audio/{ref}_{codec}.wav",
                         "MOS": mos, "Codec": codec})
    if defects:
        rows.append({"Ref_Wave": "audio/p239_021.wav", "Test_Wave": "audio/p239_021_lyra.wav", "MOS": 3.8,
                     "Codec": "lyra"})
        tone(root / "audio/p239_021_melgan.wav")
        rows.append({"Ref_Wave": "audio/p239_021.wav", "Test_Wave": "audio/p239_021_melgan.wav", "MOS": "n/a",
                     "Codec": "melgan"})
    label = _csv(root / "genspeech_mos.csv", rows)
    return Fixture("genspeech", root, {"genspeech": 4}, label, "Codec",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- Blizzard-style MOS list -----------------------------------------------------------------

def write_blizzard(root: Path, defects: bool = False) -> Fixture:
    rows = [("A", "news_0001", "4.8"), ("A", "news_0002", "4.6"), ("B", "news_0001", "2.1"),
            ("B", "news_0002", "2.4")]
    for system, utt, _ in rows:
        tone(root / "wav" / system / f"{utt}.wav", 22050)
    if defects:
        rows += [("C", "news_0001", "3.0"), ("C", "news_0002", "n/a")]
        tone(root / "wav/C/news_0002.wav", 22050)
    label = _csv(root / "mos_list.csv", [{"system": s, "utterance": u, "mos": m} for s, u, m in rows])
    return Fixture("blizzard", root, {"blizzard": 4}, label, "mos",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- DNS challenge (P.808 toolkit per-clip tables) -------------------------------------------

def write_dns_challenge(root: Path, defects: bool = False) -> Fixture:
    p808 = [("fileid_1.wav", "noisy", 2.4, [2, 3, 2]), ("fileid_1_enh.wav", "teamA", 3.6, [4, 3, 4]),
            ("fileid_2_enh.wav", "teamA", 4.1, [4, 4, 5])]
    p835 = [("p835_fileid_7.wav", "teamB", (3.9, 4.2, 3.7)), ("p835_fileid_8.wav", "teamB", (3.1, 2.4, 2.6))]
    for clip, *_ in p808 + p835:
        tone(root / clip)
    if defects:
        p808.append(("fileid_9_gone.wav", "teamA", 3.0, [3, 3, 3]))
        tone(root / "fileid_10.wav")
        p808.append(("fileid_10.wav", "noisy", "n/a", [2, 2, 2]))
    url = "https://example.blob.core.windows.net/dns/"
    label = _csv(root / "Batch_1_votes_per_clip.csv", [
        {"file_url": url + c, "n": len(v), "MOS": m, "std": np.std(v, ddof=1), "95%CI": 0.5,
         "short_file_name": c, "model": model, **{f"vote_{i + 1}": x for i, x in enumerate(v)}}
        for c, model, m, v in p808])
    _csv(root / "Batch_2_votes_per_clip.csv", [
        {"file_url": url + c, "n": 5, "MOS_BAK": bak, "MOS_SIG": sig, "MOS_OVRL": ovrl, "std_bak": 0.6,
         "std_sig": 0.5, "std_ovrl": 0.7, "short_file_name": c, "model": model}
        for c, model, (sig, bak, ovrl) in p835])
    _csv(root / "Batch_1_all_votes_per_clip.csv", [{"worker": "w1", "file": "fileid_1.wav", "vote": 2}])
    return Fixture("dns-challenge", root, {"dns-p808": 3, "dns-p835": 2}, label, "MOS",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- PLC challenge ---------------------------------------------------------------------------

def write_plc_challenge(root: Path, defects: bool = False) -> Fixture:
    rows = [("lossy/clip_0001.wav", 2.1), ("lossy/clip_0002.wav", 1.9), ("teamA/clip_0001.wav", 3.7),
            ("teamA/clip_0002.wav", 3.3), ("teamB/clip_0001.wav", 4.0)]
    for rel, _ in rows:
        tone(root / rel, 48000)
    if defects:
        rows.append(("teamB/clip_0002.wav", 3.9))
        tone(root / "teamC/clip_0001.wav", 48000)
        rows.append(("teamC/clip_0001.wav", "n/a"))
    label = _csv(root / "plc_mos.csv", [{"filename": f, "MOS": m, "std": 0.8, "95%CI": 0.3, "votes": 6}
                                        for f, m in rows])
    return Fixture("plc-challenge", root, {"plc-challenge": 5}, label, "MOS",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


# --- generic CSV -----------------------------------------------------------------------------

def write_generic_csv(root: Path, defects: bool = False) -> Fixture:
    rows = [{"path": "clips/a.wav", "mos": 4.2, "sys_id": "s1", "source_id": "talk1", "split": "train",
             "mos_std": 0.5, "n_votes": 8, "snr_db": 20.0},
            {"path": "clips/b.wav", "mos": 2.0, "sys_id": "s2", "source_id": "talk2", "split": "test",
             "mos_std": 0.7, "n_votes": 8, "snr_db": 5.0},
            {"path": "clips/c.wav", "mos": 3.1, "sys_id": "", "source_id": "", "split": "",
             "mos_std": "", "n_votes": "", "snr_db": 10.0},
            {"path": "clips/d.wav", "mos": "", "sys_id": "s1", "source_id": "talk3", "split": "unlabeled",
             "mos_std": "", "n_votes": "", "snr_db": 0.0}]
    for r in rows:
        tone(root / r["path"])
    if defects:
        rows.append({**rows[0], "path": "clips/gone.wav"})
        tone(root / "clips/e.wav")
        rows.append({**rows[0], "path": "clips/e.wav", "mos": "n/a"})
    label = _csv(root / "mos.csv", rows)
    return Fixture("generic-csv", root, {root.name: 4}, label, "mos",
                   defects=[MISSING_AUDIO, BAD_RATING] if defects else [])


WRITERS: dict[str, Callable[..., Fixture]] = {
    "nisqa": write_nisqa,
    "bvcc": write_bvcc,
    "tcd-voip": write_tcd_voip,
    "conferencingspeech": write_conferencingspeech,
    "genspeech": write_genspeech,
    "blizzard": write_blizzard,
    "dns-challenge": write_dns_challenge,
    "plc-challenge": write_plc_challenge,
    "generic-csv": write_generic_csv,
}


# --- clean speech, noise and RIRs for the pool builder ----------------------------------------

def write_pool_sources(root: Path, layout: str = "plain", n_clean: int = 5) -> Path:
    """Speech-like clean tones (2.5 s, two readers), two noises (16 kHz WAV, 48 kHz FLAC) and one
    room impulse response, in the plain ``clean/noise/rir`` layout or the DNS Challenge's
    (``datasets/clean``, ``datasets/noise``, ``datasets/impulse_responses``)."""
    rng = np.random.default_rng(0)
    dirs = {"plain": ("clean", "noise", "rir"),
            "dns": ("datasets/clean", "datasets/noise", "datasets/impulse_responses")}[layout]
    t = np.arange(int(16000 * 2.5)) / 16000
    for i in range(n_clean):
        x = 0.3 * np.sin(2 * np.pi * (110 + 30 * i) * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)))
        x *= 0.55 + 0.45 * np.sin(2 * np.pi * (1.5 + i / 4) * t)
        path = root / dirs[0] / f"reader{i % 2}" / f"utt{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), 16000)
    (root / dirs[1]).mkdir(parents=True)
    sf.write(root / dirs[1] / "fan.wav", (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000)
    sf.write(root / dirs[1] / "street.flac", (0.1 * rng.standard_normal(48000 * 2)).astype(np.float32), 48000)
    (root / dirs[2]).mkdir(parents=True)
    h = np.zeros(3000)
    h[20] = 1.0
    h[20:] += 0.3 * rng.standard_normal(2980) * np.exp(-np.arange(2980) / 600)
    sf.write(root / dirs[2] / "room.wav", h.astype(np.float32), 16000)
    return root


def sqa_run(profile: str, stage: str, env: dict, *params: str) -> Path:
    """``sqa run STAGE -q -p profile PROFILE -p NAME VALUE ...`` in a subprocess with ``env``;
    returns the run folder (from the closing ``== ... done in ... -> DIR`` line)."""
    import subprocess
    import sys

    pairs = [x for i in range(0, len(params), 2) for x in ("-p", params[i], params[i + 1])]
    cmd = [sys.executable, "-m", "sqa.cli", "run", stage, "-q", "-p", "profile", profile, *pairs]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"sqa run {stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    line = next(s for s in done.stderr.splitlines() if s.startswith("== ") and " done in " in s)
    return Path(line.split(" -> ", 1)[1])
