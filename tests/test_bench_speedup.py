"""``mae-dbp bench speedup`` on a seconds-long budget: real pretraining runs, JSON / markdown / PNG out."""

from __future__ import annotations

import json

import pytest
import yaml

from data_tools.photos import write_photos
from mae_dbp.bench.compare import VAL_LOSS, compare_pair, median_range
from mae_dbp.cli import main
from mae_dbp.train.records import read_csv
from mae_dbp.train.schedules import WarmupCosine
from tests.conftest import needs

pytestmark = needs("sklearn")  # the bundled photographs


def _run(losses, seconds, co2=None):
    rows = [{"epoch": i + 1, "step": 10 * (i + 1), "train_seconds": t, "val_loss": v, "kg_co2": (co2 or seconds)[i]}
            for i, (v, t) in enumerate(zip(losses, seconds))]
    return {"rows": rows, "cpu_per_wall": 1.0}


def test_compare_pair_reads_time_to_bp_best_from_the_curves():
    bp = _run([0.5, 0.4, 0.3, 0.31], [10, 20, 30, 40])
    dbp = _run([0.45, 0.29, 0.25], [12, 24, 36])
    pair = compare_pair(bp, dbp, VAL_LOSS, levels=[0.42, 0.26])
    assert pair["bp_best_val_loss"] == 0.3 and pair["bp_seconds_to_best"] == 30
    assert pair["dbp_seconds_to_bp_best"] == 24 and pair["time_fraction"] == pytest.approx(0.8)
    assert pair["epoch_fraction"] == pytest.approx(2 / 3) and pair["dbp_best_val_loss"] == 0.25
    assert pair["step_time_ratio"] == pytest.approx((36 / 30) / (40 / 40))
    assert pair["to_level"]["0.42"] == {"bp_seconds": 20, "bp_epoch": 2, "dbp_seconds": 24, "dbp_epoch": 2}
    assert pair["to_level"]["0.26"] == {"bp_seconds": None, "bp_epoch": None, "dbp_seconds": 36, "dbp_epoch": 3}
    never = compare_pair(bp, _run([0.5, 0.35], [10, 20]), VAL_LOSS)
    assert never["time_fraction"] is None and never["dbp_seconds_to_bp_best"] is None
    assert median_range([0.5, None, 0.7]) == {"median": 0.7, "min": 0.5, "max": None, "never": 1}


@pytest.mark.slow
def test_bench_speedup_cli_writes_json_markdown_and_plot(tmp_path):
    data = tmp_path / "photos"
    write_photos(data, size=32, train_crops=64, val_crops=16, seed=0)
    out = tmp_path / "bench"
    argv = ["bench", "speedup", "--data", str(data), "--budget", "2", "--epochs", "2", "--seeds", "0", "1",
            "--lr-multipliers", "1", "2", "--no-emissions", "--out", str(out / "runs"), "--config", "tiny_photos_dbp.yaml",
            "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--plot", str(out / "r.png"),
            "--curve-plot", str(out / "c.png"),
            "--dbp", "decor.lr_schedule=constant"]
    assert main(argv) == 0
    result = json.loads((out / "r.json").read_text())
    assert set(result["sweep"]) == {"bp", "dbp"} and len(result["sweep"]["bp"]["best_val_loss"]) == 2
    assert [r["seed"] for r in result["runs"]] == [0, 1] and len(result["settings"]["thresholds"]) == 3
    assert result["summary"]["time_fraction"]["never"] + sum(
        r["time_fraction"] is not None for r in result["runs"]) == 2
    # the sweep's seed-0 run at the chosen lr is reused, not trained again: 2 x 2 sweep + 2 for seed 1
    assert len(list((out / "runs").glob("*/bench_run.json"))) == 6
    markdown = (out / "r.md").read_text()
    assert "DBP seconds to BP's best" in markdown and "Speed-up curve" in markdown and "plateau" in markdown
    assert result["horizon"]["horizon"] == "short" and result["horizon"]["epochs"] == 2
    assert {k: result["device"][k] for k in ("dtype", "compile", "threads")} == {"dtype": "float32", "compile": False,
                                                                               "threads": 1}
    assert [p["fraction"] for p in result["summary"]["speedup_curve"]] == [0.25, 0.5, 0.75, 1.0]
    for run in result["runs"]:  # the curve at 100% reads BP's best loss, as the epoch-resolution headline
        assert run["speedup_curve"][-1]["bp_loss"] == pytest.approx(run["bp_best_val_loss"])
    for png in ("r.png", "c.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bench_speedup_long_refuses_a_small_folder(tmp_path, capsys):
    data = tmp_path / "photos"
    write_photos(data, size=32, train_crops=64, val_crops=16, seed=0)
    assert main(["bench", "speedup", "--data", str(data), "--horizon", "long"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mae-dbp: error: {data / 'train'}: --horizon long needs at least 4000 training images, found 64 "
        "(e.g. mae-dbp data photos --out DIR --train-crops 4000 --sources all)")


@pytest.mark.slow
def test_bench_speedup_long_horizon_runs_the_whole_schedule(tmp_path, monkeypatch):
    """The long preset at a test's scale (64 images, >= 12 steps): the epochs come from the data
    and the batch, every run ends its schedule (the cosine reaches ~0 at the last step), no budget."""
    from mae_dbp.bench import horizon

    monkeypatch.setattr(horizon, "LONG_MIN_IMAGES", 64)
    monkeypatch.setattr(horizon, "LONG_MIN_STEPS", 12)
    data = tmp_path / "photos"
    write_photos(data, size=32, train_crops=64, val_crops=16, seed=0)
    assert main(["bench", "speedup", "--data", str(data), "--horizon", "long", "--seeds", "0", "--lr-multipliers", "1",
                 "--no-emissions", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json"),
                 "--config", "tiny_photos_dbp.yaml"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["horizon"] == {"horizon": "long", "train_images": 64, "steps_per_epoch": 2, "epochs": 6,
                                 "planned_steps": 12, "bp_left_plateau_by_third": result["horizon"]["bp_left_plateau_by_third"],
                                 "runs_cut_short": []}
    assert result["settings"]["budget_s"] is None
    for method in ("bp", "dbp"):
        # the shipped config's optimizer (Muon) names the run folders
        rows = read_csv(next((tmp_path / "runs").glob(f"muon-{method}-lr*-seed0")) / "metrics.csv")
        assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
        # warm-up (1 epoch = 2 steps) + cosine over exactly the 12 planned steps: the last step's lr
        peak = rows[0]["lr"]  # step index 1 = the warm-up's last: (1 + 1) / 2 x peak
        assert rows[-1]["lr"] == pytest.approx(WarmupCosine(peak, total_steps=12, warmup_steps=2)(11))
        assert rows[-1]["lr"] < 0.03 * peak


def test_run_cache_reuses_a_finished_run_of_the_same_training(tmp_path):
    """bench_run.json is reused when the resolved training (BP: without decor) and clock match, also
    when the record predates a config key whose value is still its default; anything else retrains."""
    import dataclasses

    from mae_dbp.bench.compare import cached_run, training_key
    from mae_dbp.config import load_config, shipped_configs
    from mae_dbp.files import write_csv
    from mae_dbp.train.pretrain import PretrainConfig

    trained = []

    def train(config, run_dir, clock):
        trained.append(clock)
        write_csv(run_dir / "metrics.csv", [{"epoch": 1, "step": 4, "train_seconds": clock(), "val_loss": 0.5}])
        return {"best_val_loss": 0.5}

    bp = load_config(PretrainConfig, shipped_configs() / "pretrain" / "tiny_photos_dbp.yaml", ["decor.enabled=false"])
    first = cached_run(bp, tmp_path / "bp", train, "cpu", extra={"overrides": ["x=1"]})
    assert len(trained) == 1 and {"training", "clock", "rows", "best_val_loss", "wall_seconds", "cpu_seconds",
                                  "cpu_per_wall", "overrides"} <= set(first)
    other_decor = dataclasses.replace(bp, decor=dataclasses.replace(bp.decor, lr=0.5))
    assert cached_run(other_decor, tmp_path / "bp", train, "cpu") == first and len(trained) == 1
    # a record written before train.grad_clip existed: still this training while grad_clip is its default
    record = json.loads((tmp_path / "bp" / "bench_run.json").read_text())
    del record["training"]["train"]["grad_clip"]
    (tmp_path / "bp" / "bench_run.json").write_text(json.dumps(record))
    assert cached_run(bp, tmp_path / "bp", train, "cpu")["training"] == record["training"] and len(trained) == 1
    clipped = dataclasses.replace(bp, train=dataclasses.replace(bp.train, grad_clip=1.0))
    assert cached_run(clipped, tmp_path / "bp", train, "cpu")["training"] == training_key(clipped)
    assert len(trained) == 2
    cached_run(clipped, tmp_path / "bp", train, "wall")  # another clock: retrained
    assert len(trained) == 3


def test_device_flags_are_the_runs_train_settings_and_the_defaults_keep_cached_runs(tmp_path, capsys):
    import torch

    from mae_dbp.bench.compare import training_key
    from mae_dbp.bench.speedup import SpeedupSettings, run_overrides
    from mae_dbp.config import load_config, resolve_config_path
    from mae_dbp.train.pretrain import PretrainConfig

    config = resolve_config_path("tiny_photos_dbp.yaml", "pretrain")
    flagged = run_overrides(tmp_path, "dbp", 1e-3, 0, SpeedupSettings(device="cpu", dtype="bf16", compile=True))
    train = load_config(PretrainConfig, config, flagged).train
    assert (train.device, train.mixed_precision, train.compile) == ("cpu", "bf16", True)
    default = run_overrides(tmp_path, "bp", 1e-3, 0, SpeedupSettings())
    before = [o for o in default if not o.startswith(("train.device=", "train.mixed_precision=", "train.compile="))]
    assert len(before) == len(default) - 3  # runs cached before the flags existed stay this training
    assert training_key(load_config(PretrainConfig, config, default)) == training_key(load_config(PretrainConfig, config, before))
    if not torch.cuda.is_available():
        for split in ("train", "val"):
            (tmp_path / split).mkdir()
        assert main(["bench", "speedup", "--data", str(tmp_path), "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip() == (
            "mae-dbp: error: --device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")


def test_race_measures_every_arm_against_the_best_baseline():
    from mae_dbp.bench.race import race_summary

    runs = {  # (arm, seed) -> record; the DBP arm of adamw is lowest, but the reference is a baseline
        ("adamw", 0): _run([0.5, 0.4, 0.3], [10, 20, 30]), ("adamw+dbp", 0): _run([0.4, 0.25, 0.2], [12, 24, 36]),
        ("muon", 0): _run([0.45, 0.28, 0.26], [15, 30, 45]), ("muon+dbp", 0): _run([0.3, 0.27, 0.27], [16, 32, 48]),
    }
    arms = {"adamw": ("adamw", "bp"), "adamw+dbp": ("adamw", "dbp"), "muon": ("muon", "bp"), "muon+dbp": ("muon", "dbp")}
    sweep = {arm: {"chosen": 0.01} for arm in arms}
    race = race_summary(runs, sweep, arms, [0])
    assert race["reference"] == "muon"  # best baseline 0.26, though adamw+dbp ends at 0.2
    arm = race["arms"]
    assert arm["muon"]["step_fraction"]["median"] == 1.0
    assert arm["adamw+dbp"]["step_fraction"]["median"] == pytest.approx(20 / 30)  # 0.25 <= 0.26 at step 20
    assert arm["adamw+dbp"]["time_fraction"]["median"] == pytest.approx(24 / 45)
    assert arm["adamw"]["step_fraction"]["median"] is None and arm["adamw"]["step_fraction"]["never"] == 1
    assert arm["muon+dbp"]["best_val_loss"]["median"] == 0.27 and arm["muon+dbp"]["step_fraction"]["never"] == 1
    assert arm["muon+dbp"]["seconds_per_step"]["median"] == pytest.approx(48 / 30)
    assert race["step_curves"]["muon"]["0"] == [(10, 0.45), (20, 0.28), (30, 0.26)]


@pytest.mark.slow
def test_optimizer_race_cli_runs_every_arm_and_the_report_quotes_it(tmp_path):
    from mae_dbp.bench.results import README_END, README_START, load_results, readme_section, results_markdown

    data = tmp_path / "photos"
    write_photos(data, size=32, train_crops=64, val_crops=16, seed=0)
    out = tmp_path / "bench"
    argv = ["bench", "speedup", "--data", str(data), "--epochs", "2", "--seeds", "0", "--lr-multipliers", "1",
            "--no-emissions", "--clock", "cpu", "--out", str(out / "runs"), "--config", "tiny_photos_dbp.yaml",
            "--optimizers", "adamw", "mud", "--json", str(out / "race_tiny.json"), "--race-plot", str(out / "race.png")]
    assert main(argv) == 0
    result = json.loads((out / "race_tiny.json").read_text())
    assert set(result["race"]["arms"]) == {"adamw", "adamw+dbp", "mud", "mud+dbp"}
    assert result["settings"]["optimizers"] == ["adamw", "mud"] and set(result["pairs"]) == {"adamw", "mud"}
    for arm, (folder, optimizer) in {"mud": ("mud-bp-lr0.008-seed0", "mud"), "adamw+dbp": ("dbp-lr0.008-seed0", "adamw")}.items():
        config = yaml.safe_load((out / "runs" / folder / "config.yaml").read_text())  # each run trained as its arm says
        assert (config["train"]["optimizer"], config["decor"]["enabled"]) == (optimizer, "dbp" in arm), arm
    assert (out / "race.png").read_bytes()[:4] == b"\x89PNG"
    results = load_results(out)
    block = readme_section(results)
    assert block.startswith(README_START) and block.endswith(README_END)
    reference = result["race"]["reference"]
    assert f"| {reference} " in block and "| short horizon, ViT 96 x 4 | 4 steps, 64 crops, 1 seed |" in block
    winner = min(result["race"]["arms"], key=lambda a: result["race"]["arms"][a]["best_val_loss"]["median"])
    assert f"Which to use: on short runs (4 steps) **{winner}**" in block  # the race's lowest loss
    markdown = results_markdown(results)
    assert "## Optimizer race: short horizon, ViT 96 x 4" in markdown and "`tiny_photos_dbp.yaml`: ViT 96 wide x 4 blocks" in markdown
    assert f"Best baseline: **{reference}**" in markdown  # each race's verdict


def test_committed_results_markdown_is_what_bench_report_generates():
    from pathlib import Path

    from mae_dbp.bench.results import generated, load_results

    root = Path(__file__).resolve().parents[1]
    for path, text in generated(load_results(root / "docs" / "results"), root / "README.md").items():
        assert path.read_text() == text, f"{path} differs from `mae-dbp bench report` (run it)"
