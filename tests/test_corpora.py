"""Corpus adapters: each reads a tiny fixture in its distributor's native layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sqa.data import corpora, manifest
from sqa.data.corpora.base import CorpusError

from corpus_fixtures import BAD_RATING, MISSING_AUDIO, WRITERS, drop_column, tone

ADAPTER_FILES = Path(corpora.__file__).parent


def load(name: str, root: Path, **options):
    return corpora.load(name, root, **options)


def by_utt(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("utt_id")


# --- registry ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", corpora.names())
def test_registry_adapter_has_name_scale_and_load(name):
    module_file = ADAPTER_FILES / f"{corpora._MODULES[name]}.py"
    assert module_file.is_file(), f"adapter {name!r} is registered but {module_file} is missing"
    module = corpora.adapter(name)
    assert module.NAME == name
    assert module.SCALE in manifest.SCALES
    assert callable(module.load)
    assert module.__doc__ and len(module.__doc__) > 80, "the docstring must state the expected layout"


def test_registry_covers_every_fixture_and_rejects_unknown_names(tmp_path):
    assert set(WRITERS) <= set(corpora.names())
    with pytest.raises(ValueError, match="unknown corpus adapter 'nope'; known: nisqa"):
        corpora.load("nope", tmp_path)


def test_importing_the_registry_is_cheap():
    code = ("import sys, sqa.data.corpora as c\n"
            "heavy = [m for m in ('pandas', 'soundfile', 'sqa.data.corpora.nisqa') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "c.adapter('bvcc')\n"
            "assert 'pandas' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_adapters_mapping_holds_every_module():
    absent = [f"{m}.py" for m in corpora._MODULES.values() if not (ADAPTER_FILES / f"{m}.py").exists()]
    assert not absent, f"registered adapters without a module: {', '.join(absent)}"
    assert {name: module.NAME for name, module in corpora.ADAPTERS.items()} == {n: n for n in corpora.names()}


# --- every adapter -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(WRITERS))
def test_fixture_loads_into_a_valid_manifest(name, tmp_path):
    fx = WRITERS[name](tmp_path / "corpus")
    df, skipped = load(name, fx.root)
    assert df.groupby("corpus").size().to_dict() == fx.clips
    assert skipped.empty
    assert list(df.columns[: len(manifest.COLUMNS)]) == list(manifest.COLUMNS)
    for utt, corpus, path in zip(df["utt_id"], df["corpus"], df["path"]):
        assert utt == f"{corpus}/{Path(path).with_suffix('').as_posix()}"
        assert (fx.root / path).is_file() and not Path(path).is_absolute()
    assert (df["sys_id"].str.len() > 0).all() and (df["source_id"].str.len() > 0).all()
    assert np.allclose(df["duration"], 0.5) and (df["sample_rate"] > 0).all()
    labeled = df[df["split"] != "unlabeled"]
    assert labeled["mos"].between(1, 5).all()
    filled = manifest.assign_splits(df, dev_frac=0.2, seed=0)
    manifest.validate(filled, roots={c: fx.root for c in fx.clips})


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_audio_and_bad_rating_rows_are_skipped_with_reasons(name, tmp_path):
    fx = WRITERS[name](tmp_path / "corpus", defects=True)
    df, skipped = load(name, fx.root)
    assert df.groupby("corpus").size().to_dict() == fx.clips
    assert sorted(skipped["reason"]) == sorted([MISSING_AUDIO, BAD_RATING])
    assert set(skipped["corpus"]) <= set(fx.clips)
    assert not set(skipped["row"]) & set(df["utt_id"])
    assert all((fx.root / f).is_file() for f in skipped["file"]), "skipped rows name their label file"


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_root_names_corpus_and_folder(name, tmp_path):
    with pytest.raises(CorpusError, match=rf"\[{name}\] corpus root .*nowhere does not exist"):
        load(name, tmp_path / "nowhere")


@pytest.mark.parametrize("name", list(WRITERS))
def test_label_file_without_a_column_names_corpus_file_and_expectation(name, tmp_path):
    fx = WRITERS[name](tmp_path / "corpus")
    drop_column(fx)
    with pytest.raises(CorpusError) as err:
        load(name, fx.root)
    message = str(err.value)
    assert message.startswith(f"[{name}]")
    assert fx.label_file.name in message
    assert fx.column in message and "expected" in message


# --- NISQA ---------------------------------------------------------------------------------

def test_nisqa_sub_datasets_splits_conditions_references_and_dimensions(tmp_path):
    fx = WRITERS["nisqa"](tmp_path)
    df = by_utt(load("nisqa", tmp_path).manifest)
    assert df.groupby("corpus")["split"].unique().map(list).to_dict() == {
        "nisqa-train-sim": ["train"], "nisqa-train-live": ["train"], "nisqa-val-sim": ["dev"],
        "nisqa-test-for": ["test"]}
    sim = df.loc["nisqa-train-sim/NISQA_TRAIN_SIM/deg/c00002_train_a"]
    assert sim["sys_id"] == "c00002"
    assert sim["source_id"] == "nisqa-train-sim/NISQA_TRAIN_SIM/ref/train_ref_a"
    assert df.loc["nisqa-train-sim/NISQA_TRAIN_SIM/deg/c00001_train_a", "source_id"] == sim["source_id"]
    live = df.loc["nisqa-train-live/NISQA_TRAIN_LIVE/deg/c00001_live"]
    assert live["source_id"] == live.name, "live recordings have no reference"
    assert (sim["mos"], sim["mos_std"], sim["n_votes"], sim["sample_rate"]) == (3.4, 0.8, 5, 48000)
    assert (sim["noi"], sim["col"], sim["dis"], sim["loud"], sim["loud_std"]) == (3.5, 3.0, 4.0, 3.8, 0.8)
    assert fx.label_file.name == "NISQA_corpus_file.csv"


def test_nisqa_reads_per_dataset_files_without_the_corpus_file(tmp_path):
    fx = WRITERS["nisqa"](tmp_path, defects=True)
    fx.label_file.unlink()
    df, skipped = load("nisqa", tmp_path)
    assert df.groupby("corpus").size().to_dict() == fx.clips
    assert set(skipped["file"]) == {"NISQA_TRAIN_SIM/NISQA_TRAIN_SIM_file.csv"}


def test_nisqa_reports_rows_of_an_unknown_dataset_name(tmp_path):
    fx = WRITERS["nisqa"](tmp_path)
    table = pd.read_csv(fx.label_file)
    table.loc[0, "db"] = "NISQA_EXTRA"
    table.to_csv(fx.label_file, index=False)
    df, skipped = load("nisqa", tmp_path)
    assert len(df) == 6
    assert skipped["reason"].tolist() == ["db 'NISQA_EXTRA' is not NISQA_<TRAIN|VAL|TEST>_<name>"]


def test_nisqa_without_any_label_file_says_what_it_expected(tmp_path):
    with pytest.raises(CorpusError, match=r"\[nisqa\] found neither .*NISQA_corpus_file.csv nor any "
                                          r"<db>/<db>_file.csv"):
        load("nisqa", tmp_path)


# --- BVCC ----------------------------------------------------------------------------------

def test_bvcc_official_splits_and_system_ids(tmp_path):
    WRITERS["bvcc"](tmp_path)
    df = by_utt(load("bvcc", tmp_path).manifest)
    assert df["split"].value_counts().to_dict() == {"train": 3, "test": 2, "dev": 1}
    assert df.loc["bvcc/DATA/wav/sysA-utt001", "sys_id"] == "sysA"
    assert df.loc["bvcc/DATA/wav/sysC-utt004", ["split", "mos"]].tolist() == ["dev", 1.75]
    assert set(df.loc[df["sys_id"] == "sysA", "split"]) == {"train", "test"}
    assert df["split_official"].all()
    assert (df["source_id"] == df.index).all()


def test_bvcc_missing_test_list_is_named(tmp_path):
    WRITERS["bvcc"](tmp_path)
    (tmp_path / "DATA/sets/test_mos_list.txt").unlink()
    with pytest.raises(CorpusError, match=r"\[bvcc\] expected a VoiceMOS list .* at .*test_mos_list.txt"):
        load("bvcc", tmp_path)


# --- TCD-VoIP ------------------------------------------------------------------------------

def test_tcd_voip_conditions_references_and_listener_votes(tmp_path):
    WRITERS["tcd-voip"](tmp_path)
    df = by_utt(load("tcd-voip", tmp_path).manifest)
    assert set(df["split"]) == {"test"}
    chop = df.loc["tcd-voip/Test Set/chop/C_01_CHOP_FA"]
    assert (chop["sys_id"], chop["degradation"], chop["condition_id"]) == ("chop-01", "chop", "01")
    assert chop["source_id"] == "tcd-voip/Test Set/chop/ref/R_01_CHOP_FA"
    assert (tmp_path / "Test Set/chop/ref/R_01_CHOP_FA.wav").is_file()
    assert chop["n_votes"] == 3 and chop["mos_std"] == pytest.approx(np.std([5, 4, 5], ddof=1))
    clip = df.loc["tcd-voip/Test Set/clip/C_11_CLIP_ML"]
    assert clip["sys_id"] == "clip-21", "the condition is ConditionID, not the file's number"
    assert df["sys_id"].nunique() == 3


def test_tcd_voip_accepts_test_set_folder_with_underscore(tmp_path):
    WRITERS["tcd-voip"](tmp_path)
    (tmp_path / "Test Set").rename(tmp_path / "Test_Set")
    df = load("tcd-voip", tmp_path).manifest
    assert len(df) == 4 and df["path"].str.startswith("Test_Set/").all()


def test_tcd_voip_unreadable_workbook_is_a_corpus_error(tmp_path):
    fx = WRITERS["tcd-voip"](tmp_path)
    fx.label_file.unlink()
    (tmp_path / "Subjective Test Scores.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(CorpusError, match=r"\[tcd-voip\] .*Subjective Test Scores.xlsx"):
        load("tcd-voip", tmp_path)


def test_tcd_voip_reports_file_names_it_cannot_parse(tmp_path):
    fx = WRITERS["tcd-voip"](tmp_path)
    with fx.label_file.open("a") as f:
        f.write("odd_name.wav,3,2.5,2,3,3\n")
    df, skipped = load("tcd-voip", tmp_path)
    assert len(df) == 4
    assert skipped[["row", "reason"]].values.tolist() == [
        ["odd_name.wav", "Filename is not C_<nn>_<TYPE>_<talker>.wav"]]


# --- ConferencingSpeech 2022 ---------------------------------------------------------------

def test_conferencingspeech_parts_scales_and_votes(tmp_path):
    WRITERS["conferencingspeech"](tmp_path)
    df = by_utt(load("conferencingspeech", tmp_path).manifest)
    iub = df.loc["iub-cosine/IUB/16k_speech/cosine_0001"]
    assert (iub["mos_scale"], iub["mos_raw"], iub["mos"]) == ("0-100", 60.0, pytest.approx(3.4))
    assert iub["n_votes"] == 3 and iub["mos_std"] == pytest.approx(20.0 * 4 / 100)
    assert iub["audio_type"] == "cosine"
    assert df.loc["iub-voices/IUB/16k_speech/voices_0001", "mos"] == pytest.approx(1.4)
    pstn = df.loc["pstn/pstn_train/noisy_a_0001"]
    assert (pstn["mos_scale"], pstn["mos"], pstn["mos_std"], pstn["n_votes"]) == ("acr-1-5", 3.2, 0.9, 5)
    assert pstn["sample_rate"] == 8000
    tencent = df[df["corpus"] == "tencent-with-reverb"]
    assert tencent["path"].tolist() == ["TencentCorups/withReverberationTrainDevMOS/0000.wav",
                                        "TencentCorups/withReverberationTrainDevMOS/0001.wav"]
    assert df["split"].isna().all() and not df["split_official"].any()
    assert (df["sys_id"] == df.index).all() and (df["source_id"] == df.index).all()


def test_conferencingspeech_loads_chosen_parts_and_present_parts(tmp_path):
    WRITERS["conferencingspeech"](tmp_path)
    assert set(load("conferencingspeech", tmp_path, parts=["pstn"]).manifest["corpus"]) == {"pstn"}
    (tmp_path / "pstn_train/pstn_train.csv").unlink()
    assert "pstn" not in set(load("conferencingspeech", tmp_path).manifest["corpus"])
    with pytest.raises(CorpusError,
                       match=r"\[conferencingspeech\] expected the pstn MOS table at .*pstn_train.csv"):
        load("conferencingspeech", tmp_path, parts=["pstn"])
    with pytest.raises(CorpusError, match=r"unknown part\(s\) \['nisqa'\]"):
        load("conferencingspeech", tmp_path, parts=["nisqa"])


def test_conferencingspeech_without_any_table_lists_them(tmp_path):
    (tmp_path / "empty").mkdir()
    expected = (r"no label table found .*TencentCorups/withReverberationTrainDevMOS.csv, "
                r".*pstn_train/pstn_train.csv, .*IUB/audio_scaled_mos_cosine.csv")
    with pytest.raises(CorpusError, match=expected):
        load("conferencingspeech", tmp_path / "empty")


# --- GenSpeech, Blizzard, PLC --------------------------------------------------------------

def test_genspeech_codecs_share_their_reference(tmp_path):
    WRITERS["genspeech"](tmp_path)
    df = by_utt(load("genspeech", tmp_path).manifest)
    assert sorted(df["sys_id"].unique()) == ["lpcn", "opus"]
    assert df.loc["genspeech/audio/p239_021_opus", ["source_id", "mos", "split"]].tolist() == [
        "genspeech/audio/p239_021", 2.36, "test"]
    assert df.groupby("source_id").size().tolist() == [2, 2]


def test_blizzard_systems_utterances_and_grouped_splits(tmp_path):
    fx = WRITERS["blizzard"](tmp_path)
    df = by_utt(load("blizzard", tmp_path, corpus="blizzard-2019").manifest)
    assert set(df["corpus"]) == {"blizzard-2019"}
    row = df.loc["blizzard-2019/wav/B/news_0002"]
    assert (row["sys_id"], row["source_id"], row["mos"], row["sample_rate"]) == (
        "B", "blizzard-2019/news_0002", 2.4, 22050)
    assert set(df["split"]) == {"test"}
    open_split = load("blizzard", tmp_path, split=None).manifest
    assert open_split["split"].isna().all() and not open_split["split_official"].any()
    filled = manifest.assign_splits(open_split, dev_frac=0.5, seed=1)
    assert filled["split"].nunique() == 1, "systems x sentences form one group"
    fx.label_file.write_text("\n".join(fx.label_file.read_text().splitlines()[1:]) + "\n")
    assert len(load("blizzard", tmp_path).manifest) == 4, "the header row is optional"


def test_plc_challenge_systems_and_shared_clips(tmp_path):
    WRITERS["plc-challenge"](tmp_path)
    df = by_utt(load("plc-challenge", tmp_path).manifest)
    assert df.groupby("sys_id").size().to_dict() == {"lossy": 2, "teamA": 2, "teamB": 1}
    assert df.groupby("source_id").size().to_dict() == {"plc-challenge/clip_0001": 3,
                                                        "plc-challenge/clip_0002": 2}
    assert df.loc["plc-challenge/teamA/clip_0001", ["mos", "mos_std", "n_votes"]].tolist() == [3.7, 0.8, 6]


# --- DNS challenge -------------------------------------------------------------------------

def test_dns_p835_overall_is_the_mos_and_sig_bak_are_kept(tmp_path):
    WRITERS["dns-challenge"](tmp_path)
    df = by_utt(load("dns-challenge", tmp_path).manifest)
    p835 = df.loc["dns-p835/p835_fileid_7"]
    assert (p835["mos"], p835["mos_sig"], p835["mos_bak"], p835["mos_std"]) == (3.7, 3.9, 4.2, 0.7)
    assert p835["sys_id"] == "teamB" and p835["n_votes"] == 5
    p808 = df.loc["dns-p808/fileid_1_enh"]
    assert (p808["mos"], p808["sys_id"], p808["n_votes"]) == (3.6, "teamA", 3)
    assert np.isnan(p808["mos_sig"])
    assert set(df["split"]) == {"test"}


def test_dns_repeated_clip_is_reported_and_file_url_names_clips(tmp_path):
    fx = WRITERS["dns-challenge"](tmp_path)
    tone(tmp_path / "fileid_3.wav")
    third = pd.DataFrame({"file_url": ["https://x/y/fileid_1.wav?sig=1", "https://x/y/fileid_3.wav"],
                          "n": [4, 4], "MOS": [2.9, 3.3], "std": [0.5, 0.6]})
    third.to_csv(tmp_path / "Batch_3_votes_per_clip.csv", index=False)
    df, skipped = load("dns-challenge", tmp_path)
    assert df.groupby("corpus").size().to_dict() == {"dns-p808": 4, "dns-p835": 2}
    assert by_utt(df).loc["dns-p808/fileid_1", "mos"] == 2.4, "the first table's rating is kept"
    assert skipped[["row", "reason"]].values.tolist() == [
        ["dns-p808/fileid_1", f"clip already rated in {fx.label_file.name}"]]


def test_dns_without_tables_says_what_it_expected(tmp_path):
    with pytest.raises(CorpusError, match=r"\[dns-challenge\] no \*_votes_per_clip.csv under"):
        load("dns-challenge", tmp_path)


# --- generic CSV ---------------------------------------------------------------------------

def test_generic_csv_optional_columns_extras_and_splits(tmp_path):
    WRITERS["generic-csv"](tmp_path / "listening_test")
    df = by_utt(load("generic-csv", tmp_path / "listening_test").manifest)
    a = df.loc["listening_test/clips/a"]
    assert (a["split"], a["sys_id"], a["source_id"], a["mos_std"], a["n_votes"], a["snr_db"]) == (
        "train", "s1", "listening_test/talk1", 0.5, 8, 20.0)
    c = df.loc["listening_test/clips/c"]
    assert c["split"] is None and c["sys_id"] == c.name and c["source_id"] == c.name
    d = df.loc["listening_test/clips/d"]
    assert d["split"] == "unlabeled" and np.isnan(d["mos"])


def test_generic_csv_native_scale_and_unknown_split(tmp_path):
    fx = WRITERS["generic-csv"](tmp_path / "c")
    table = pd.read_csv(fx.label_file, dtype=str, keep_default_na=False)
    table["mos"] = ["80", "25", "50", ""]
    table.loc[len(table)] = {**table.iloc[0].to_dict(), "path": "clips/b.wav", "split": "validation"}
    table.to_csv(fx.label_file, index=False)
    df, skipped = load("generic-csv", tmp_path / "c", scale="0-100", corpus="mine")
    df = by_utt(df)
    assert df.loc["mine/clips/a", ["mos_raw", "mos", "mos_scale", "mos_std"]].tolist() == [
        80.0, pytest.approx(4.2), "0-100", pytest.approx(0.02)]
    assert skipped[["row", "reason"]].values.tolist() == [
        ["mine/clips/b", "split 'validation' is not one of train, dev, test, unlabeled"]]
    with pytest.raises(CorpusError, match=r"unknown scale 'likert-7'; known: acr-1-5"):
        load("generic-csv", tmp_path / "c", scale="likert-7")
