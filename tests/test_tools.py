"""tools/: thin entry scripts in the ecosystem's conventions, run as users run them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.synthetic import write_synthetic
from tests.conftest import accelerate_launch, free_port, tiny_pretrain, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
TINY_SEG = ROOT / "configs" / "segmentation" / "upernet_tiny_cpu.py"


def run(command: list[str], timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg", **extra_env)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("tool, bad_args, message", [
    ("pretrain.py", ["--config", "missing.yaml"], "missing.yaml"),
    ("train.py", ["missing_config.py"], "missing_config.py: config file does not exist"),
    ("test.py", [str(TINY_SEG), "missing.pth"], "missing.pth: checkpoint does not exist"),
    ("export.py", ["missing_run", "--out", "unused_export"], "missing_run"),
])
def test_each_tool_has_help_and_the_cli_error_line(tool, bad_args, message):
    assert run([sys.executable, str(TOOLS / tool), "--help"]).returncode == 0
    result = run([sys.executable, str(TOOLS / tool), *bad_args])
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("mae-dbp: error: ") and message in result.stderr


def test_dist_train_without_arguments_prints_usage():
    result = run(["bash", str(TOOLS / "dist_train.sh")])
    assert result.returncode == 2 and "usage: bash" in result.stderr


@pytest.mark.dist
def test_tools_chain_pretrain_export_dist_train_test(tmp_path):
    """accelerate launch tools/pretrain.py -> tools/export.py -> tools/dist_train.sh (2 CPU ranks) -> tools/test.py."""
    images = write_synthetic(tmp_path / "images", num=24, size=32, seed=0, progress=False)
    for split, seed in (("train", 1), ("val", 2)):
        write_synthetic(tmp_path / "seg" / split, num=4, size=32, seed=seed, progress=False)
    tiny = tiny_pretrain(images, epochs=1)
    tiny.model.encoder_args["depth"] = 4  # UperNet takes the outputs of four blocks
    config = write_config(tiny, tmp_path / "tiny.yaml")

    accelerate_launch(1, TOOLS / "pretrain.py", "--config", config, "--out", tmp_path / "run", "train.epochs=1")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best_epoch"] == 1

    result = run([sys.executable, str(TOOLS / "export.py"), str(tmp_path / "run"), "--out", str(tmp_path / "export")])
    assert result.returncode == 0, result.stderr[-3000:]

    work = tmp_path / "work"
    result = run(["bash", str(TOOLS / "dist_train.sh"), str(TINY_SEG), "2", "--work-dir", str(work), "--cfg-options",
                  f"data_root={tmp_path / 'seg'}", f"pretrained_export={tmp_path / 'export'}",
                  "train_cfg.max_iters=2", "train_cfg.val_interval=2", "train_dataloader.batch_size=2"],
                 PORT=str(free_port()))
    assert result.returncode == 0, result.stderr[-3000:]
    (log,) = work.glob("*/*.log")
    assert "Distributed training: True" in log.read_text() and "GPU number: 2" in log.read_text()
    assert json.loads((work / "metrics.json").read_text())["iter"] == 2

    result = run([sys.executable, str(TOOLS / "test.py"), str(TINY_SEG), str(work / "iter_2.pth")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((work / "test_iter_2" / "metrics.json").read_text())["mode"] == "test"
