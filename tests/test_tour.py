"""The README's short tour, command by command, at tiny sizes (seconds instead of minutes).

The commands are read from README.md; each gets a few small-size edits below, and every edit must
apply, so the test breaks when the README's tour changes. Not run here: the quickstart (its reduced
size is tests/test_quickstart.py), ``bench all`` (7 minutes even at ``--steps 1`` on a busy 2-core
CPU; its parts run small in tests/test_bench.py) and the ViT-B paper recipe on GPUs.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest

from mae_dbp.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("mae-dbp quickstart", "mae-dbp bench all", "accelerate launch")
PRETRAIN_SMALL = ["train.epochs=1", "train.batch_size=8", "train.effective_batch=8", "model.img_size=32",
                  "log.emissions=false"]
# (command prefix, regex, replacement): the README's sizes -> tiny ones
SMALL: list[tuple[str, str, str]] = [
    ("mae-dbp data synthetic --out data/synthetic", r"--num \d+ --size \d+", "--num 32 --size 32"),
    ("mae-dbp data synthetic --out data/seg/train", r"--num \d+ --size \d+", "--num 4 --size 32"),
    ("mae-dbp data synthetic --out data/seg/val", r"--num \d+ --size \d+", "--num 2 --size 32"),
    ("mae-dbp pretrain", r"$", " " + " ".join(PRETRAIN_SMALL)),
    ("mae-dbp segment train", r"$", " train_cfg.max_iters=2 train_cfg.val_interval=2 train_dataloader.batch_size=2"),
    ("mae-dbp segment test", r"iter_40\.pth", "iter_2.pth"),
    ("mae-dbp classify", r"$", " train.epochs=1"),
]


def tour_commands() -> list[str]:
    """The shell commands of the README's tour block (continuation lines joined, comments dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## A short tour.*?```bash\n(.*?)```", text, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [" ".join(shlex.split(line, comments=True)) for line in joined.splitlines() if line.strip()]


def test_readme_tour_runs_top_to_bottom_at_tiny_sizes(tmp_path, monkeypatch, capsys):
    os.symlink(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    used = set()
    commands = tour_commands()
    assert len(commands) >= 12
    for command in commands:
        if command.startswith(SKIP):
            continue
        for index, (prefix, pattern, small) in enumerate(SMALL):
            if command.startswith(prefix):
                command, count = re.subn(pattern, small, command, count=1)
                assert count == 1, (prefix, pattern, command)
                used.add(index)
        argv = shlex.split(command)
        assert argv[0] == "mae-dbp", command
        start = time.perf_counter()
        assert main(argv[1:]) == 0, (command, capsys.readouterr().err[-2000:])
        print(f"tour: {time.perf_counter() - start:5.1f} s  {command}")
    assert used == set(range(len(SMALL))), "a small-size edit no longer matches the README"
    assert (tmp_path / "exports" / "tiny_dbp" / "model.safetensors").is_file()
    assert (tmp_path / "work_dirs" / "tiny" / "test_iter_2" / "metrics.json").is_file()
    assert (tmp_path / "runs" / "digits_dbp" / "summary.json").is_file()
