import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sqa.data import manifest
from sqa.data.manifest import ManifestError


def rows(n=6, corpus="c", **over):
    df = pd.DataFrame({
        "utt_id": [f"{corpus}/u{i}" for i in range(n)], "corpus": corpus,
        "split": ["train"] * n, "path": [f"u{i}.wav" for i in range(n)],
        "sys_id": [f"s{i % 3}" for i in range(n)], "source_id": [f"src{i}" for i in range(n)],
        "mos": np.linspace(1.5, 4.5, n), "mos_raw": np.linspace(1.5, 4.5, n), "mos_scale": "acr-1-5",
        "mos_std": 0.5, "n_votes": 5, "duration": 2.0, "sample_rate": 16000,
    })
    for k, v in over.items():
        df[k] = v
    return df


def test_valid_manifest_round_trips_csv_and_parquet(tmp_path):
    df = rows()
    df["extra_dim"] = 1.0
    for suffix in (".csv", ".parquet"):
        path = manifest.write(df, tmp_path / f"m{suffix}")
        back = manifest.read(path)
        assert list(back.columns[: len(manifest.COLUMNS)]) == list(manifest.COLUMNS)
        assert back["extra_dim"].tolist() == [1.0] * 6
        pd.testing.assert_series_equal(back["mos"], manifest.coerce(df)["mos"])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.assign(utt_id=["c/u0"] * 6), "duplicate utt_id: c/u0"),
    (lambda d: d.drop(columns=["sys_id"]), "lacks required column(s): sys_id"),
    (lambda d: d.assign(mos=6.0), "mos outside 1-5"),
    (lambda d: d.assign(split="val"), "split not in"),
    (lambda d: d.assign(duration=0.0), "non-positive or missing duration"),
    (lambda d: d.assign(mos_scale="likert-7"), "unknown mos_scale"),
    (lambda d: d.assign(path="/abs/u.wav"), "absolute path"),
    (lambda d: d.assign(mos=np.nan), "labeled rows without mos"),
    (lambda d: d.assign(sample_rate=0), "sample_rate"),
])
def test_validate_names_rule_and_rows(mutate, message):
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        manifest.validate(mutate(rows()))


def test_source_and_system_may_not_straddle_splits():
    df = rows(split=["train", "train", "train", "test", "test", "test"])
    df["source_id"] = ["a", "a", "b", "b", "c", "c"]
    df["sys_id"] = df["utt_id"]
    with pytest.raises(ManifestError, match="source_id spanning two splits: c/b"):
        manifest.validate(df)
    df["source_id"] = ["a", "a", "b", "c", "d", "d"]
    df["sys_id"] = ["s1", "s1", "s1", "s1", "s2", "s2"]
    with pytest.raises(ManifestError, match="sys_id spanning two splits: c/s1"):
        manifest.validate(df)


def test_unlabeled_rows_may_lack_mos():
    df = rows(split="unlabeled", mos=np.nan, mos_raw=np.nan)
    assert manifest.validate(df)["mos"].isna().all()


def test_missing_files_are_named(tmp_path):
    df = rows(2)
    sf.write(tmp_path / "u0.wav", np.zeros(1600, "float32"), 16000)
    with pytest.raises(ManifestError, match=r"audio file missing: c/u1"):
        manifest.validate(df, roots={"c": tmp_path})
    with pytest.raises(ManifestError, match="no root folder for corpus: c"):
        manifest.validate(df, roots={})


def test_write_is_validated_and_keeps_roots(tmp_path, outputs):
    with pytest.raises(ManifestError):
        manifest.write(rows(mos=9.0), tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()
    for i in range(6):
        sf.write(tmp_path / f"u{i}.wav", np.zeros(1600, "float32"), 16000)
    path = manifest.write(rows(), tmp_path / "m.parquet", roots={"c": tmp_path})
    assert manifest.roots(path) == {"c": tmp_path.resolve()}
    assert manifest.audio_paths(manifest.read(path), manifest.roots(path))[0] == tmp_path.resolve() / "u0.wav"


def test_scale_mapping():
    assert manifest.to_mos([0, 50, 100], "0-100").tolist() == [1.0, 3.0, 5.0]
    assert manifest.std_to_mos(25, "0-100") == pytest.approx(1.0)
    with pytest.raises(ManifestError, match="unknown mos_scale 'x'"):
        manifest.to_mos([1], "x")


def test_merge_rejects_ids_in_two_corpora():
    a, b = rows(corpus="a"), rows(corpus="b")
    assert len(manifest.merge([a, b])) == 12
    b["utt_id"] = a["utt_id"]
    with pytest.raises(ManifestError, match="'a/u0' in both 'a' and 'b'"):
        manifest.merge([a, b])


def test_assign_splits_grouped_seeded_and_keeps_official_splits():
    n = 200
    df = rows(n, split=[None] * n)
    df["source_id"] = [f"src{i // 4}" for i in range(n)]
    df["sys_id"] = df["utt_id"]
    df.loc[:19, "split"] = "test"  # official test split as published (sources src0..src4)
    out = manifest.assign_splits(df, dev_frac=0.2, seed=1)
    assert (out.loc[:19, "split"] == "test").all()
    assert out.groupby("source_id")["split"].nunique().max() == 1
    assert abs((out["split"] == "dev").mean() - 0.2 * 180 / 200) < 0.03
    assert out["split"].tolist() == manifest.assign_splits(df, dev_frac=0.2, seed=1)["split"].tolist()
    assert out["split"].tolist() != manifest.assign_splits(df, dev_frac=0.2, seed=2)["split"].tolist()
    manifest.validate(out)
    with pytest.raises(ValueError, match="dev_frac=0.7 and test_frac=0.5"):
        manifest.assign_splits(df, dev_frac=0.7, test_frac=0.5)


def test_summary_counts_splits():
    df = rows(split=["train", "train", "dev", "test", "test", "test"])
    df["sys_id"] = df["utt_id"]
    s = manifest.summary(df).iloc[0]
    assert (s["clips"], s["train"], s["dev"], s["test"]) == (6, 2, 1, 3)
    assert s["hours"] == pytest.approx(12 / 3600)


def test_assign_splits_keeps_systems_and_sources_together():
    n = 120
    df = rows(n, split=[None] * n)
    df["source_id"] = [f"src{i % 30}" for i in range(n)]
    df["sys_id"] = [f"sys{i // 10}" for i in range(n)]  # 12 systems, each over 10 sources
    out = manifest.assign_splits(df, dev_frac=0.3, seed=0)
    assert out.groupby("source_id")["split"].nunique().max() == 1
    assert out.groupby("sys_id")["split"].nunique().max() == 1
    manifest.validate(out)


def test_official_splits_may_share_systems():
    df = rows(split=["train", "train", "train", "test", "test", "test"])
    df["sys_id"] = ["s1", "s2", "s3", "s1", "s2", "s3"]
    with pytest.raises(ManifestError, match="sys_id spanning two splits"):
        manifest.validate(df)
    df["split_official"] = True
    manifest.validate(df)
