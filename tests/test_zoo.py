"""The DBP zoo: builders, a tiny classify run that learns, fused export, configs and the digits tool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from data_tools.digits import write_digits, write_toy_classes
from mae_dbp import decor
from mae_dbp.cli import main
from mae_dbp.config import DecorConfig, load_config, save_config
from mae_dbp.errors import UserInputError
from mae_dbp.models.zoo import ZooModelConfig, build_classifier
from mae_dbp.files import save_checkpoint
from mae_dbp.train import checkpoints
from mae_dbp.train.records import read_csv
from mae_dbp.export import export_classifier, export_encoder, fusion_batch
from mae_dbp.train.classify import ClassifyConfig, ClassifyDataConfig, classify
from tests.conftest import perturb_r, tiny_classify

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "zoo"
def zoo_model(arch: str, **model) -> ZooModelConfig:
    return ZooModelConfig(arch=arch, num_classes=4, in_chans=3, img_size=32, **model)


def all_layers(enabled: bool = True) -> DecorConfig:
    return DecorConfig(enabled=enabled, sites=["*"])


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """4 clearly different classes of noisy 16x16 grey patterns, 40 per class (30 train / 10 val)."""
    out = tmp_path_factory.mktemp("data") / "toy"
    write_toy_classes(out, per_class=40, size=16, num_classes=4, seed=0)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("arch, expected", [
    ("convnet", ["classifier", "features.0", "features.3"]),
    ("mlp", ["classifier", "hidden.0", "hidden.2", "hidden.4", "hidden.6"]),
])
def test_builders_wrap_every_conv_and_linear(arch, expected):
    model = build_classifier(zoo_model(arch), all_layers())
    assert sorted(name for name, _ in decor.decor_modules(model)) == expected
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    mlp_first = dict(decor.decor_modules(model))[expected[1]]
    assert mlp_first.decor_dim == (3 * 5 * 5 if arch == "convnet" else 3 * 32 * 32)  # patch-wise for convs
    assert not decor.decor_modules(build_classifier(zoo_model(arch), all_layers(enabled=False)))
    assert not decor.decor_modules(build_classifier(zoo_model(arch)))


@pytest.mark.slow
def test_resnet18_wraps_all_21_layers_and_sites_choose_layers():
    model = build_classifier(zoo_model("resnet18"), all_layers())
    names = [name for name, _ in decor.decor_modules(model)]
    assert len(names) == 21 and {"conv1", "layer4.1.conv2", "layer2.0.downsample.0", "fc"} <= set(names)
    assert dict(decor.decor_modules(model))["layer4.1.conv2"].decor_dim == 512 * 9
    chosen = DecorConfig(sites=["layer1.*", "fc"], kappa=0.5)
    names = [name for name, _ in decor.decor_modules(build_classifier(zoo_model("resnet18"), chosen))]
    assert names == ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2", "fc"]


@pytest.mark.slow
def test_tiny_convnet_run_learns_and_exports_fused(toy, tmp_path, capsys):
    run = tmp_path / "run"
    summary = classify(tiny_classify(toy / "train", toy / "val", epochs=4), out=run)
    assert summary["num_classes"] == 4 and summary["best_val_top1"] >= 0.75  # chance is 0.25
    assert summary["decor_sites"] == ["classifier", "features.0", "features.3"]
    metrics = read_csv(run / "metrics.csv")  # the summary's values are the CSV's: the first epoch at the target
    hit = next(r for r in metrics if r["val_top1"] >= 0.9)
    assert (summary["epoch_to_target"], summary["train_seconds_to_target"]) == (hit["epoch"], pytest.approx(hit["train_seconds"], abs=1e-3))
    assert summary["best_val_top1"] == max(r["val_top1"] for r in metrics)
    assert all(0 <= r["val_top1"] <= r["val_top5"] <= 1 and r["decor_metric"] >= 0 and r["val_loss"] > 0 for r in metrics)
    for name in ("best/pytorch_model.bin", "last/pytorch_model.bin", "summary.json", "config.yaml", "classes.json", "accuracy_vs_time.png", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0  # one export command for every kind of run
    assert f"from {run / 'best'} (" in capsys.readouterr().out
    info = json.loads((out / "config.json").read_text())
    assert info["arch"] == "convnet" and info["num_classes"] == 4 and info["classes"] == ["c0", "c1", "c2", "c3"]
    from safetensors.torch import load_file

    plain = build_classifier(ZooModelConfig(**info["model"]))
    plain.load_state_dict(load_file(out / "model.safetensors"))  # strict: no DBP keys left
    # the reported check is the exported model against the unfused W (R x) of the run's model: a
    # rounding-sized difference, never exactly 0 (what comparing the model with itself would give)
    model = build_classifier(ZooModelConfig(**info["model"]), load_config(ClassifyConfig, run / "config.yaml").decor)
    model.load_state_dict(checkpoints.model_state(run / "best"))
    images = fusion_batch(info["in_chans"], info["img_size"])
    with torch.no_grad(), decor.explicit(model.eval()):
        expected = float((model(images) - plain.eval()(images)).abs().max())
    assert info["fused_max_abs_diff"] == pytest.approx(expected) and 0 < expected <= 1e-4
    with pytest.raises(FileExistsError, match="model.safetensors"):
        export_classifier(run, out)
    with pytest.raises(UserInputError, match="a classification run, not MAE pretraining"):
        export_encoder(run, tmp_path / "other")
    shutil.rmtree(run / "best")  # an unfinished run: its last/, said so
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    assert "last (no best: the run has not finished a validated epoch)" in capsys.readouterr().out


@pytest.mark.slow
def test_exported_resnet18_matches_and_loads_into_timm_strictly(tmp_path):
    import timm
    from safetensors.torch import load_file

    config = ClassifyConfig(model=ZooModelConfig(arch="resnet18", num_classes=5, in_chans=2, img_size=32),
                            data=ClassifyDataConfig(mean=[0.0, 0.0], std=[1.0, 1.0]))
    model = build_classifier(config.model, config.decor)
    perturb_r(model, 0.02)  # stand-in for training: R away from the identity, BN statistics non-trivial
    with torch.no_grad():
        model.train()(torch.randn(8, 2, 32, 32))
    run = tmp_path / "run"
    run.mkdir()
    save_config(config, run / "config.yaml")
    save_checkpoint(model.state_dict(), run / "best" / checkpoints.MODEL_FILE)
    out = tmp_path / "export"
    export_classifier(run, out)
    reference = timm.create_model("resnet18", num_classes=5, in_chans=2)
    reference.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    batch = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        diff = (reference.eval()(batch) - model.eval()(batch)).abs().max()
    assert diff <= 1e-4


def test_bad_config_key_and_value_give_clear_errors(toy, tmp_path, capsys):
    with pytest.raises(UserInputError, match="unknown config key 'model.widths'"):
        load_config(ClassifyConfig, None, [f"data.root={toy}/train", "model.widths=[8]"])
    with pytest.raises(UserInputError, match="model.arch: expected one of resnet18, convnet, mlp, got 'vgg'"):
        ZooModelConfig(arch="vgg", num_classes=2)
    assert main(["classify", f"data.root={toy}/train", "--out", str(tmp_path / "b")]) == 2  # no --config
    assert capsys.readouterr().err == "mae-dbp: error: give --config FILE (or --resume RUN_DIR)\n"
    assert main(["classify", "--config", str(CONFIGS / "tiny_mlp_dbp.yaml"), "train.bogus=1"]) == 2
    assert capsys.readouterr().err == "mae-dbp: error: unknown config key 'train.bogus' (closest: train.betas)\n"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_zoo_configs_load_and_build(path):
    config = load_config(ClassifyConfig, path)
    config.model.num_classes = config.model.num_classes or 10
    if config.model.arch != "resnet18":  # (resnet18 is built above; its R matrices take a while)
        model = build_classifier(config.model, config.decor)
        assert bool(decor.decor_modules(model)) == config.decor.enabled == path.stem.endswith("_dbp")
    assert config.train.base_lr * config.train.effective_batch / 256 == pytest.approx(config.train.min_lr)


@pytest.mark.slow
def test_digits_tool_writes_class_folders(tmp_path):
    pytest.importorskip("sklearn")
    from mae_dbp.data.io import list_images, read_image

    counts = write_digits(tmp_path / "digits", size=16, val_fraction=0.2, seed=0)
    assert counts == {"train": 1438, "val": 359}
    for split in ("train", "val"):
        assert sorted(p.name for p in (tmp_path / "digits" / split).iterdir()) == [str(d) for d in range(10)]
    image = read_image(list_images(tmp_path / "digits" / "val" / "3")[0])
    assert image.shape == (1, 16, 16) and image.dtype.name == "uint8" and image.max() > 200
    with pytest.raises(FileExistsError):
        write_digits(tmp_path / "digits")


def test_bench_compare_pair_reports_time_to_bps_best_accuracy():
    from mae_dbp.bench.compare import TOP1, compare_pair

    def rows(points):  # (train_seconds, val_top1) per epoch, 10 steps each
        return {"rows": [{"epoch": i + 1, "step": 10 * (i + 1), "train_seconds": s, "val_top1": a}
                         for i, (s, a) in enumerate(points)]}

    bp = rows([(1.0, 0.5), (2.0, 0.8), (3.0, 0.9), (4.0, 0.85)])
    dbp = rows([(2.0, 0.7), (4.0, 0.95), (6.0, 0.96)])
    pair = compare_pair(bp, dbp, TOP1, levels=(0.75,))
    assert pair["bp_best_top1"] == 0.9 and pair["bp_seconds_to_best"] == 3.0 and pair["dbp_seconds_to_bp_best"] == 4.0
    assert pair["time_fraction"] == pytest.approx(4 / 3) and pair["epoch_fraction"] == pytest.approx(2 / 3)
    assert pair["step_time_ratio"] == pytest.approx((6 / 30) / (4 / 40))
    assert pair["to_level"]["0.75"] == {"bp_seconds": 2.0, "bp_epoch": 2, "dbp_seconds": 4.0, "dbp_epoch": 2}
    assert compare_pair(bp, rows([(5.0, 0.6)]), TOP1)["time_fraction"] is None  # never reached


def test_bench_zoo_keeps_the_epochs_of_a_run_that_diverged(tmp_path):
    from mae_dbp.bench.zoo import _train_until_diverged
    from mae_dbp.files import write_csv

    def diverges_after(epochs: int):
        """The loop's behaviour with the guard off: ``epochs`` rows written, then a non-finite loss."""
        def train(config, out, clock):
            if epochs:
                write_csv(out / "metrics.csv", [{"epoch": e + 1, "val_top1": 0.5} for e in range(epochs)])
            raise FloatingPointError("non-finite training loss (train.guard.enabled is false)")
        return train

    assert _train_until_diverged(diverges_after(2), None, tmp_path / "a") == 2
    assert _train_until_diverged(lambda config, out, clock: None, None, tmp_path / "b") is None
    with pytest.raises(FloatingPointError):  # diverged before any epoch ended: nothing to compare
        _train_until_diverged(diverges_after(0), None, tmp_path / "c")


@pytest.mark.slow
def test_bench_zoo_sweeps_the_lr_for_both_and_runs_each_at_its_pick(toy, tmp_path):
    """The CLI end to end on a 1-second budget: the sweep, the pair at each method's pick, the plot,
    the JSON, and DBP's settings in its run folder."""
    import yaml

    assert main(["bench", "zoo", "--data", str(toy), "--budget", "1", "--archs", "mlp", "--batch-size", "32", "--threads", "1",
          "--variant", "low_rank", "--rank", "4", "--kappa", "0.5", "--sample-frac", "0.5", "--lrs", "1e-3", "2e-3",
          "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "zoo.json")]) == 0
    result = json.loads((tmp_path / "zoo.json").read_text())
    assert result["settings"]["kappa"] == 0.5 and result["settings"]["sample_frac"] == 0.5
    (pair,) = result["runs"]["mlp"]
    rows = {}
    for method in ("bp", "dbp"):
        sweep = result["sweep"]["mlp"][method]
        assert sweep["lrs"] == [1e-3, 2e-3] and sweep["chosen"] == sweep["lrs"][sweep["best_top1"].index(max(sweep["best_top1"]))]
        assert pair[f"{method}_lr"] == sweep["chosen"]
        rows[method] = read_csv(tmp_path / "runs" / f"mlp-{method}-lr{sweep['chosen']:g}-seed0" / "metrics.csv")
        assert pair[f"{method}_best_top1"] == pytest.approx(max(float(r["val_top1"]) for r in rows[method]))
    assert pair["bp_epochs"] >= 1 and pair["dbp_epochs"] >= 1
    per_step = {m: r[-1]["train_seconds"] / r[-1]["step"] for m, r in rows.items()}  # seconds per optimizer step
    assert pair["step_time_ratio"] == pytest.approx(per_step["dbp"] / per_step["bp"])
    assert len(list((tmp_path / "runs").glob("mlp-*-lr*-seed0"))) == 4 and (tmp_path / "runs" / "mlp-seed0.png").is_file()
    configs = {m: yaml.safe_load((tmp_path / "runs" / f"mlp-{m}-lr0.002-seed0" / "config.yaml").read_text()) for m in ("bp", "dbp")}
    assert not configs["bp"]["decor"]["enabled"] and configs["dbp"]["decor"]["enabled"]
    assert {k: configs["dbp"]["decor"][k] for k in ("variant", "rank", "kappa", "sample_frac")} == {
        "variant": "low_rank", "rank": 4, "kappa": 0.5, "sample_frac": 0.5}
    assert configs["bp"]["train"]["min_lr"] == configs["dbp"]["train"]["min_lr"] == pytest.approx(2e-3)  # constant lr


def test_bench_zoo_refuses_sweep_seeds_without_a_sweep(toy, capsys):
    assert main(["bench", "zoo", "--data", str(toy), "--archs", "mlp", "--lrs", "1e-3", "--sweep-seeds", "0"]) == 2
    assert capsys.readouterr().err.strip() == "mae-dbp: error: bench zoo: --sweep-seeds needs several --lrs to sweep, got --lrs 0.001"


def test_lr_sweep_alternates_the_methods_and_picks_the_best_median():
    from mae_dbp.bench.sweep import lr_sweep

    calls = []
    scores = {("bp", 1): [0.5, 0.9, 0.6], ("bp", 2): [0.7, 0.7, 0.1], ("dbp", 1): [0.2, 0.3, 0.4], ("dbp", 2): [0.8, 0.0, 0.5]}

    def runner(method, lr, seed):
        calls.append((method, lr))
        return {"score": scores[(method, lr)][seed]}

    sweep = lr_sweep(runner, {"bp": [1, 2], "dbp": [1, 2]}, [0, 1, 2], key="score", higher_is_better=True)
    assert calls == [("bp", 1)] * 3 + [("dbp", 1)] * 3 + [("bp", 2)] * 3 + [("dbp", 2)] * 3
    assert sweep["bp"] == {"lrs": [1, 2], "score": [0.6, 0.7], "chosen": 2}
    assert sweep["dbp"] == {"lrs": [1, 2], "score": [0.3, 0.5], "chosen": 2}
    assert lr_sweep(runner, {"bp": [1, 2]}, [0, 1, 2], key="score")["bp"]["chosen"] == 1  # lowest
