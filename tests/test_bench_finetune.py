"""``mae-dbp bench finetune``: the verdict's rules, the channel check, and the whole bench on a
seconds-long budget (bench speedup on synthetic wire-bond images, export, tiny UperNet)."""

from __future__ import annotations

import json

import pytest

from mae_dbp.bench.compare import median_range
from mae_dbp.bench.finetune import verdict
from mae_dbp.cli import main


def _verdict(bp: list[float], dbp: list[float]) -> str:
    runs = [{"bp_mIoU": b, "dbp_mIoU": d, "difference": d - b} for b, d in zip(bp, dbp)]
    summary = {key: median_range([r[key] for r in runs]) for key in ("bp_mIoU", "dbp_mIoU", "difference")}
    return verdict(runs, summary)


def test_verdict_says_within_noise_unless_every_seed_and_the_ranges_agree():
    assert _verdict([40, 42, 44], [46, 47, 48]) == (
        "DBP - BP mIoU +5.00 points (median of 3 seeds): DBP higher in all 3 seeds, the ranges do not overlap")
    # DBP higher in every seed, but BP's best seed beats DBP's worst: the ranges overlap
    assert _verdict([40, 45, 50], [41, 46, 51]) == (
        "within noise: DBP - BP mIoU +1.00 points (median of 3 seeds), but the two methods' ranges overlap")
    assert _verdict([40, 45, 50], [42, 44, 52]).startswith("within noise: DBP - BP mIoU +2.00 points") and \
        "the sign of the difference differs between seeds and the two methods' ranges overlap" in _verdict(
            [40, 45, 50], [42, 44, 52])
    assert _verdict([18.46] * 3, [18.46] * 3) == ("within noise: DBP - BP mIoU +0.00 points (median of 3 seeds), but "
                                                  "no seed shows a difference and the two methods' ranges overlap")
    assert _verdict([50], [40]) == "DBP - BP mIoU -10.00 points (median of 1 seed): one seed, no claim"


def _labelled(root):
    from data_tools.synthetic import write_synthetic

    write_synthetic(root / "train", 6, 32, seed=1000, progress=False)
    write_synthetic(root / "val", 3, 32, seed=2000, progress=False)
    return root


def test_bench_finetune_refuses_an_rgb_run_for_a_2_channel_labelled_set(tmp_path, capsys):
    from mae_dbp.config import load_config, save_config, shipped_configs
    from mae_dbp.train.pretrain import PretrainConfig

    runs = tmp_path / "runs"
    photo = load_config(PretrainConfig, shipped_configs() / "pretrain" / "tiny_photos_dbp.yaml")
    for name in ("bp-lr1-seed0", "dbp-lr1-seed0"):
        (runs / name).mkdir(parents=True)
        save_config(photo, runs / name / "config.yaml")
    speedup = tmp_path / "speedup.json"
    speedup.write_text(json.dumps({"settings": {"out_dir": str(runs)},
                                   "runs": [{"seed": 0, "bp_run": "bp-lr1-seed0", "dbp_run": "dbp-lr1-seed0"}]}))
    seg = _labelled(tmp_path / "seg")
    argv = ["bench", "finetune", "--speedup", str(speedup), "--seg-data", str(seg), "--out", str(tmp_path / "ft")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"mae-dbp: error: bench finetune: {runs / 'bp-lr1-seed0'} encodes 3-channel images but the labelled set "
        f"{seg} has 2-channel images; fine-tune a speedup run pretrained on 2-channel data (e.g. the quickstart's "
        "wire-bond runs)")
    assert not (tmp_path / "ft").exists()


@pytest.mark.slow
@pytest.mark.seg
def test_bench_finetune_end_to_end_on_a_seconds_long_budget(tmp_path):
    from data_tools.synthetic import write_synthetic
    from mae_dbp.bench.speedup import SpeedupSettings, run_speedup_bench

    pretrain = tmp_path / "pretrain"
    write_synthetic(pretrain / "train", 16, 32, seed=0, progress=False)
    write_synthetic(pretrain / "val", 8, 32, seed=500, progress=False)
    settings = SpeedupSettings(budget_s=2.0, epochs=1, seeds=(0,), lr_multipliers=(1.0,), emissions=False,
                               overrides=("model.img_size=32", "train.batch_size=8", "train.effective_batch=8"))
    speedup = run_speedup_bench(pretrain, "tiny_cpu_dbp.yaml", settings, tmp_path / "runs")
    (tmp_path / "speedup.json").write_text(json.dumps(speedup))
    seg = _labelled(tmp_path / "seg")
    argv = ["bench", "finetune", "--speedup", str(tmp_path / "speedup.json"), "--seg-data", str(seg), "--iters", "2",
            "--out", str(tmp_path / "ft"), "--json", str(tmp_path / "ft.json"), "--markdown", str(tmp_path / "ft.md")]
    assert main(argv) == 0
    result = json.loads((tmp_path / "ft.json").read_text())
    (run,) = result["runs"]
    assert run["seed"] == 0 and 0 <= run["bp_mIoU"] <= 100 and 0 <= run["dbp_mIoU"] <= 100
    assert run["difference"] == pytest.approx(run["dbp_mIoU"] - run["bp_mIoU"])
    assert result["summary"]["difference"]["median"] == pytest.approx(run["difference"])
    assert result["verdict"].endswith("one seed, no claim")
    for method in ("bp", "dbp"):
        export = json.loads((tmp_path / "ft" / f"{method}-seed0" / "export" / "config.json").read_text())
        assert (len(export["mae_dbp"]["fused_sites"]) > 0) == (method == "dbp")  # DBP fused into a plain ViT
        assert run[f"{method}_run"] == str(tmp_path / "runs" / speedup["runs"][0][f"{method}_run"])
    assert "| median (range) |" in (tmp_path / "ft.md").read_text()
    assert main(argv) == 2  # the work folder is not overwritten without --force
