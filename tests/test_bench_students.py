"""A cached benchmark student knows which labels it learned and is trained again when they change."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from bench import release_scaling


def _data(dev_mos: float):
    dev = pd.DataFrame({"utt_id": ["d0", "d1"], "mos": [dev_mos, 3.0], "split": "dev"})
    return SimpleNamespace(split=lambda name: dev if name == "dev" else dev.iloc[:0], roots={})


def test_the_fingerprint_follows_every_digit_of_the_labels_and_nothing_else():
    pool = pd.DataFrame({"utt_id": ["a", "b", "c"], "pseudo_mos": [2.5, 3.25, 4.0], "path": ["x", "y", "z"]})
    dev = _data(2.0).split("dev")
    same = release_scaling.labels_fingerprint(pool, dev)
    assert release_scaling.labels_fingerprint(pool.assign(path="elsewhere"), dev) == same
    assert release_scaling.labels_fingerprint(pool.assign(pseudo_mos=[2.5, 3.2500001, 4.0]), dev) != same
    assert release_scaling.labels_fingerprint(pool, dev.assign(mos=[2.0000001, 3.0])) != same


def test_a_student_trained_on_other_labels_is_trained_again(tmp_path, monkeypatch):
    trained = []

    def train_point(data, pool, n, seed, folder, hint_weight=0.0, pseudo_dir=None):
        trained.append(release_scaling.draw(pool, n, seed)["pseudo_mos"].tolist())
        (folder / "training").mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(best_dev_pcc=0.5 + len(trained), best_epoch=1), None

    def predict(model, test, roots, desc=""):
        return test.assign(pred=float(len(trained)))

    monkeypatch.setattr(release_scaling, "train_point", train_point)
    monkeypatch.setattr(release_scaling.predictions, "predict", predict)
    pool = pd.DataFrame({"utt_id": ["a", "b", "c"], "pseudo_mos": [2.5, 3.25, 4.0]})
    test = pd.DataFrame({"utt_id": ["t0", "t1"]})
    folder = tmp_path / "point"

    first = release_scaling.student(_data(2.0), pool, test, 2, 0, folder)
    again = release_scaling.student(_data(2.0), pool, test, 2, 0, folder)
    assert len(trained) == 1 and again["best_dev_pcc"] == first["best_dev_pcc"] == 1.5
    assert again["preds"]["pred"].tolist() == [1.0, 1.0]

    relabeled = release_scaling.student(_data(2.0), pool.assign(pseudo_mos=[2.6, 3.3, 4.1]), test, 2, 0, folder)
    assert len(trained) == 2 and relabeled["best_dev_pcc"] == 2.5
    (folder / "labels.txt").unlink()  # a point that does not say which labels it saw is not trusted
    release_scaling.student(_data(2.0), pool, test, 2, 0, folder)
    assert len(trained) == 3
