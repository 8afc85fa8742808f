"""Structured pruning: exact conversion, masking == removal, targets met, checkpoints rebuild,
importance follows the data."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from sqa import paths
from sqa.models import checkpoint, count_params
from sqa.models.student import ConvTransformerSQA, preset
from sqa.models.teacher import TeacherConfig, XlsrTeacher, tiny_backbone
from sqa.pipeline import profiles
from sqa.training.pruning import gates, pruner, taylor, units

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("w2v2") / "tiny", seed=0, layers=4)


def _randomise_norms(model, seed=0):
    """Trained-looking BatchNorm statistics, so that removed features leave non-zero constants."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def make_student(seed=0):
    torch.manual_seed(seed)
    return _randomise_norms(ConvTransformerSQA(preset("10k")).with_window(2.0), seed)


def make_teacher(backbone, seed=0, layers=(3,)):
    torch.manual_seed(seed)
    head = {"dim_transformer": 16, "n_heads": 4, "n_layers": 2, "feat_seq_len": 100}  # 2-s windows
    return _randomise_norms(XlsrTeacher(TeacherConfig(str(backbone), list(layers), head=head)), seed)


def waves(n=4, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    tone = torch.sin(2 * np.pi * (150 + 400 * torch.rand(n, 1, generator=g)) * t)
    return (0.05 + torch.rand(n, 1, generator=g)) * tone + 0.3 * torch.rand(n, 1, generator=g) * torch.randn(
        n, t.numel(), generator=g)


def logits(model, x):
    """The head's readout before the sigmoid (MOS saturates for random models)."""
    out = {}
    handle = model.head.readout.register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["y"].flatten()


def fixed_masks(model, seed=1):
    """Mask ~40 % of every group, one whole layer per layer stack (the last one), keep >= min_keep."""
    g = torch.Generator().manual_seed(seed)
    for name, u in units.unit_groups(model).items():
        if u.kind == "layer":
            continue
        mask = (torch.rand(u.n, generator=g) > 0.4).float()
        mask[: u.min_keep] = 1.0
        u.mask = mask
    for stack in model.stacks().values():
        units.unit_groups(model)[stack[-1]].mask = torch.zeros(1)


# ---------------------------------------------------------------- conversion and removal


def test_prunable_student_and_teacher_compute_the_same(backbone):
    x = waves(3, 2.0)
    student = make_student()
    p = pruner.prunable(student).eval()
    assert p.arch == "pruned-conv-transformer-sqa" and count_params(p) == count_params(student)
    with torch.no_grad():
        assert (p(x) - student(x)).abs().max() < 1e-5
    teacher = make_teacher(backbone, layers=(1, 3))
    q = pruner.prunable(teacher).eval()
    with torch.no_grad():
        for a, b in zip(teacher.features(x), q.features(x)):
            assert (a - b).abs().max() < 1e-5
        assert (teacher(x) - q(x)).abs().max() < 1e-5
    assert logits(q, x).shape == (3,)


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_masking_units_equals_removing_them(kind, backbone):
    x = waves(3, 2.0, seed=1)
    model = pruner.prunable(make_student() if kind == "student" else make_teacher(backbone))
    units.check_plan(model)
    full = logits(model, x)
    fixed_masks(model)
    counted = units.Counter(model)(units.kept_counts(model))
    masked = logits(model, x)
    small = units.compact(model).eval()
    removed = logits(small, x)
    assert (masked - full).abs().max() > 1e-3  # the masks matter
    assert (masked - removed).abs().max() < 1e-5  # and removal changes nothing else
    assert count_params(small) == counted < count_params(model)
    assert units.Counter(small)(units.kept_counts(small)) == count_params(small)
    assert all(u.mask is None for u in units.unit_groups(small).values())
    stacks = small.stacks()
    original = model.stacks()
    assert all(len(stacks[k]) == len(original[k]) - 1 for k in original)  # the masked layers are gone


def test_teacher_reads_the_last_kept_block_after_block_removal(backbone):
    x = waves(2, 1.0)
    model = pruner.prunable(make_teacher(backbone, layers=(3,)))
    gates = model.stacks()["features.layers"]
    units.unit_groups(model)[gates[2]].mask = torch.zeros(1)  # block 3, the one the head reads
    with torch.no_grad():
        masked = model.features(x)[0]
    small = units.compact(model).eval()
    assert [b.block for b in small.features.config.blocks] == [1, 2]
    with torch.no_grad():
        assert (small.features(x)[0] - masked).abs().max() < 1e-5


def test_removal_keeps_at_least_one_conv_channel(backbone):
    model = pruner.prunable(make_student())
    units.unit_groups(model)["frontend.units.2"].mask = torch.zeros(model.config.conv_channels[2])
    with pytest.raises(ValueError, match="frontend.units.2 keeps 0 units; it needs at least 1"):
        units.compact(model)


# ---------------------------------------------------------------- importance


def calibration(model, n=8, seconds=1.0, seed=0):
    x = waves(n, seconds, seed)
    return taylor.Calibration(x, taylor.predict_crops(pruner.prunable(model), x))


def test_importance_is_zero_for_units_without_effect_and_follows_the_data():
    model = pruner.prunable(make_student())
    with torch.no_grad():
        model.frontend.convs[3].weight[:, [0, 3]] = 0.0  # conv-2 channels 0 and 3 feed nothing
        model.head.encoder.layers[0].ffn.fc2.weight[:, [1, 5]] = 0.0  # FFN neurons 1 and 5 of layer 0
    cal = calibration(model)
    scores = pruner.importance(model, cal)
    conv2, ffn0 = scores["frontend.units.2"], scores["head.encoder.layers.0.ffn.units"]
    assert conv2[[0, 3]].abs().max() == 0 and ffn0[[1, 5]].abs().max() == 0
    assert torch.all(conv2[[1, 2, 4, 5]] > 0) and (ffn0 > 0).sum() >= len(ffn0) // 2  # (ReLUs that never fire: 0 too)
    assert all(torch.all(s >= -1e-12) for s in scores.values())  # targets = own outputs: J^2 terms only
    labelled = taylor.Calibration(cal.waves, torch.full((len(cal),), 4.5))  # labels far above the outputs
    toward = pruner.importance(model, labelled)
    assert min(float(s.min()) for s in toward.values()) < 0  # units whose removal moves towards the labels
    assert toward["frontend.units.2"][[0, 3]].abs().max() == 0
    first = pruner.importance(model, labelled, order=1)
    assert first["frontend.units.2"][[0, 3]].abs().max() == 0 and first["frontend.units.2"].max() > 0


def test_select_meets_the_size_and_skips_layers_already_gone():
    model = pruner.prunable(make_student())
    scores = pruner.importance(model, calibration(model))
    size = 0.6 * count_params(model)
    removed = taylor.select(model, scores, size, floor=0.58 * count_params(model))
    count = units.Counter(model)(units.kept_counts(model))
    assert 0.58 * count_params(model) <= count <= size and sum(removed.values()) > 0
    assert count_params(units.compact(model)) == count


# ---------------------------------------------------------------- prune_to and checkpoints


@pytest.mark.parametrize("kind,size", [("student", "60%"), ("teacher", "20000")])
def test_prune_to_meets_the_target_and_round_trips(kind, size, backbone, tmp_path):
    model = make_student() if kind == "student" else make_teacher(backbone)
    cal = calibration(model)
    result = pruner.prune_to(model, size, cal, steps=2, recover_steps=2, progress=False)
    assert abs(result.params_after - result.target) <= 0.03 * result.target
    assert result.params_after == count_params(result.model) < count_params(model) == result.params_before
    assert result.target == pruner.parse_size(size, result.params_before)
    assert list(result.history["step"]) == [1, 2] and result.history["params"].iloc[-1] == result.params_after
    x = waves(2, 2.0, seed=3)
    path = checkpoint.save(tmp_path / "pruned.safetensors", result.model, result.model.arch,
                           result.model.checkpoint_config())
    loaded, info = checkpoint.load(path)
    assert info.arch == result.model.arch and count_params(loaded) == result.params_after
    with torch.no_grad():
        assert (loaded(x) - result.model(x)).abs().max() < 1e-6
    table = pruner.kept_units(loaded)
    assert {"part", "layer", "kind", "kept", "total", "share"} <= set(table.columns)
    assert (table["kept"] <= table["total"]).all() and (table["kept"] < table["total"]).any()
    again = pruner.prune_to(loaded, "80%", cal, steps=1, recover_steps=0, progress=False)  # a pruned model prunes on
    assert again.params_before == result.params_after and again.params_after < result.params_after


def test_a_re_entered_run_reads_its_pruned_model_back_instead_of_pruning_again(tmp_path, monkeypatch):
    from sqa.pipeline import runs

    model = make_student()
    run = runs.Run("smoke", "05_prune", "t", tmp_path / "run", {})
    run.dir.mkdir()
    drawn = []
    first = pruner.prune_once(run, model, lambda: drawn.append(1) or calibration(model), "60%", steps=2,
                              recover_steps=1, progress=False)
    assert run.path("pruned.safetensors").is_file() and len(drawn) == 1
    monkeypatch.setattr(pruner, "prune_to", lambda *a, **k: pytest.fail("pruned again"))
    again = pruner.prune_once(run, model, lambda: pytest.fail("calibrated again"), "60%")
    assert (again.params_before, again.params_after, again.target) == (
        first.params_before, first.params_after, first.target)
    assert again.history.equals(first.history) and not again.model.training
    x = waves(2, 2.0, seed=4)
    with torch.no_grad():
        assert torch.equal(again.model(x), first.model(x))


def test_l0_gates_meet_the_target_and_leave_no_masks():
    model = make_student()
    cal = calibration(model, n=4)
    result = pruner.prune_to(model, "50%", cal, "l0", gate_steps=6, recover_steps=1, progress=False)
    assert abs(result.params_after - result.target) <= 0.03 * result.target and result.method == "l0"
    history = result.history
    assert history["expected_params"].notna().sum() >= 2 and history["params"].iloc[-1] == result.params_after
    assert all(u.mask is None for u in units.unit_groups(result.model).values())
    probs = gates.HardConcreteGates({"g": 3}).keep_probability()
    assert torch.all((probs["g"] > 0.9) & (probs["g"] < 1))  # gates start open


def test_parse_size_counts_and_shares():
    assert pruner.parse_size("29%", 1000) == 290
    assert pruner.parse_size("1M", 4_000_000) == 1_000_000 and pruner.parse_size("250k", 10**6) == 250_000
    with pytest.raises(ValueError, match="smaller"):
        pruner.parse_size("5M", 4_000_000)
    with pytest.raises(ValueError, match="parameter count like"):
        pruner.parse_size("half", 100)


def test_prune_to_rejects_unknown_models_and_methods():
    with pytest.raises(TypeError, match="no pruning for Linear"):
        pruner.prunable(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="method='magic'"):
        pruner.prune_to(make_student(), "50%", calibration(make_student(), n=2), method="magic")


def test_calibration_set_reads_centre_crops_and_scores_them(tmp_path):
    rows = []
    for i, seconds in enumerate([0.5, 1.5, 2.0]):
        sf.write(tmp_path / f"c{i}.wav", waves(1, seconds, seed=i)[0].numpy(), 16000)
        rows.append({"utt_id": f"c/{i}", "corpus": "c", "path": f"c{i}.wav", "mos": 2.0 + i})
    df = pd.DataFrame(rows)
    model = make_student()
    cal = pruner.calibration_set(model, df, {"c": tmp_path}, n=5, window_s=1.0)
    assert cal.waves.shape == (3, 16000) and torch.isfinite(cal.targets).all()
    own = taylor.predict_crops(pruner.prunable(model), cal.waves)
    assert torch.allclose(cal.targets, own)
    labels = pruner.calibration_set(model, df, {"c": tmp_path}, n=2, window_s=1.0, fit_to="labels", seed=1)
    assert len(labels) == 2 and set(labels.targets.tolist()) <= {2.0, 3.0, 4.0}


def test_units_figure_and_stage_settings():
    table = pruner.kept_units(make_student())
    assert (table["share"] == 1.0).all()
    fig = pruner.units_figure(table, "unpruned")
    assert len(fig.axes) == table.groupby(["part", "kind"]).ngroups
    s = pruner.settings("smoke", {"profile": "smoke", "size": None, "steps": None, "seed": 0})
    assert s["size"] == "50%" and s["steps"] == profiles.STAGE_DEFAULTS["05_prune"]["smoke"]["steps"] and s["seed"] == 0
    assert pruner.settings("demo", {"size": "2M"})["size"] == "2M"


def test_finetune_plan_says_what_the_pruned_model_learns_from(outputs, tmp_path):
    from sqa.pipeline import runs

    run = runs.Run("smoke", "05_prune", "t", tmp_path / "run", {})
    run.dir.mkdir()
    folder, mode, note = pruner.finetune_plan(run, "smoke", "", "pool", 0.2)
    assert folder is None and mode == "labeled-only" and "labeled train split only" in note
    with pytest.raises(FileNotFoundError, match="neither a folder nor a tag"):
        pruner.finetune_plan(run, "smoke", "no-such-run", "pool", 0.2)
    with pytest.raises(ValueError, match="finetune_on='both'"):
        pruner.finetune_plan(run, "smoke", "", "both", 0.2)
    pseudo = outputs / "smoke" / "03_pseudo_labels" / "p"
    (pseudo / "pseudo").mkdir(parents=True)
    (pseudo / "pseudo" / "pseudo_labels.parquet").write_bytes(b"")
    assert pruner.finetune_plan(run, "smoke", str(pseudo), "labeled", 0.2) == (
        None, "labeled-only", "fine-tuning on the labeled train split only (finetune_on='labeled')")
    assert "pseudo_labels" not in run.inputs
    folder, mode, note = pruner.finetune_plan(run, "smoke", str(pseudo), "pool", 0.2)
    assert folder == pseudo and mode == "distill" and note.endswith("mixed with labeled train clips (labeled_mix 0.2 of every batch)")
    assert run.inputs["pseudo_labels"] == paths.portable(pseudo)
    assert pruner.finetune_plan(run, "smoke", str(pseudo), "pool", 0.0)[2].endswith("alone (labeled_mix 0)")


def test_inference_ms_times_a_clip_and_leaves_the_model_as_it_was():
    model = make_student().train()
    ms = pruner.inference_ms(model, seconds=1.0, repeats=2, clock="cpu")
    assert 0 < ms < 10_000 and model.training
    with pytest.raises(ValueError, match="clock must be"):
        pruner.inference_ms(model, clock="cpu", threads=2)
