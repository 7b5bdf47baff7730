"""Typed configs: YAML + dotted overrides, strict keys and types, one-line errors, saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from mae_dbp.cli import main
from mae_dbp.config import TrainConfig, checked, load_config, save_config
from mae_dbp.errors import UserInputError
from mae_dbp.train.classify import ClassifyConfig
from mae_dbp.train.pretrain import PretrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_have_one_owner_and_overrides_are_typed():
    config = load_config(PretrainConfig, None, ["train.base_lr=1e-3", "decor.enabled=false", "model.decoder.depth=3",
                                                "data.mean=[1, 2]", "model.encoder_args={depth: 2}"])
    assert config.train.base_lr == 0.001 and isinstance(config.train.base_lr, float)  # YAML 1.1 would give '1e-3'
    assert config.decor.enabled is False and config.model.decoder.depth == 3 and config.data.mean == [1.0, 2.0]
    assert config.model.encoder_args == {"depth": 2}
    assert PretrainConfig().model.decoder.depth == 2  # the DBP-MAE paper's decoder, declared once
    classify = ClassifyConfig()
    assert classify.decor.sites == ["*"] and classify.train.guard.tolerance == 1.0 and classify.data.val_fraction == 0.1


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "train.epochs: expected int, got 'abc'"),
    ("decor.enabled=maybe", "decor.enabled: expected bool, got 'maybe'"),
    ("train.epoch=3", "unknown config key 'train.epoch' (closest: train.epochs)"),
    ("train.epochs=0", "train.epochs: expected an int >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size: expected an int >= 1, got 0"),
    ("train.base_lr=-0.1", "train.base_lr: expected a number >= 0, got -0.1"),
    ("decor.lr=-1", "decor.lr: expected a number >= 0, got -1.0"),
    ("decor.warmup_steps=-1", "decor.warmup_steps: expected an int >= 0, got -1"),
    ("decor.lr_schedule=linear", "decor.lr_schedule: expected one of constant, follow, cosine, got 'linear'"),
    ("data.mean=3", "data.mean: expected a list of float, got 3"),
    ("train.guard=3", "a section got a plain value"),
    ("epochs", "must look like section.key=value"),
])
def test_bad_values_are_one_line_naming_the_key(override, message, capsys):
    with pytest.raises(UserInputError) as error:
        load_config(PretrainConfig, None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)
    assert main(["pretrain", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mae-dbp: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 1\n  epoch: 2\n")
    with pytest.raises(UserInputError, match=r"bad.yaml: unknown config key 'train.epoch' \(closest: train.epochs\)"):
        load_config(PretrainConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(UserInputError, match="expected a mapping"):
        load_config(PretrainConfig, path)
    with pytest.raises(UserInputError, match="does not exist"):
        load_config(PretrainConfig, tmp_path / "missing.yaml")


def test_objects_built_in_code_are_checked_too():
    with pytest.raises(UserInputError, match="train.epochs: expected an int >= 1, got -2"):
        TrainConfig(epochs=-2)
    config = PretrainConfig()
    config.train.epochs = "abc"  # a typo in code, not on the command line
    with pytest.raises(UserInputError, match="train.epochs: expected int, got 'abc'"):
        checked(config)


def test_saved_config_reloads_identically_without_the_preemption_point(tmp_path):
    config = load_config(PretrainConfig, CONFIGS / "pretrain" / "tiny_cpu_dbp.yaml", ["train.stop_after_epoch=3"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(PretrainConfig, tmp_path / "config.yaml")
    assert again.train.stop_after_epoch is None
    config.train.stop_after_epoch = None
    assert again == config


@pytest.mark.parametrize("path", sorted((CONFIGS / "pretrain").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pretrain_configs_load(path):
    config = load_config(PretrainConfig, path)
    if path.stem.endswith(("_bp", "_dbp")):
        assert config.decor.enabled == path.stem.endswith("_dbp")


def test_config_and_resume_exclude_each_other(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last").mkdir()
    (run / "last" / "pytorch_model.bin").write_bytes(b"")
    assert main(["pretrain", "--config", str(CONFIGS / "pretrain" / "tiny_cpu_dbp.yaml"), "--resume", str(run)]) == 2
    assert "--config and --resume exclude each other" in capsys.readouterr().err
    assert main(["classify", "--resume", str(tmp_path)]) == 2
    assert "no last/ checkpoint there" in capsys.readouterr().err
