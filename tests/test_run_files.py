"""What runs leave on disk: atomic files with normal permissions, no stale temporaries, no stray
codecarbon files, no half-made run directory after a failed start; the run directory's names and
the one rule for an output that exists."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from data_tools.synthetic import write_synthetic
from mae_dbp.errors import UserInputError
from mae_dbp.files import atomic_write, remove_stale_temporaries, save_checkpoint
from mae_dbp.run_dir import CHECKPOINT_MODEL, RunDir, prepare_output, refuse_existing
from mae_dbp.train.emissions import TASKS_FILE, TrainingEmissions
from mae_dbp.train.pretrain import PretrainConfig
from mae_dbp.train.job import open_run


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_files_get_the_umask_permissions_of_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        reference = tmp_path / "reference.txt"
        reference.write_text("x")  # what open() gives
        save_checkpoint({"a": 1}, tmp_path / "last.pt")
        atomic_write(tmp_path / "summary.json", lambda tmp: tmp.write_text("{}"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "last.pt") == _mode(reference) == 0o666 & ~umask
    assert _mode(tmp_path / "summary.json") == _mode(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "reference.txt", "summary.json"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed_live_and_fresh_ones_kept(tmp_path):
    old = time.time() - 3600
    crashed = tmp_path / f".last.pt.{_dead_pid()}-0a1b2c3d.tmp"  # from a writer that died
    legacy = tmp_path / ".last.pt.k2j3h4g5.tmp"  # the old mkstemp naming, no pid
    live = tmp_path / f".last.pt.{os.getppid()}-0a1b2c3d.tmp"  # a writer that still runs
    other_target = tmp_path / f".best.pt.{_dead_pid()}-0a1b2c3d.tmp"
    for path in (crashed, legacy, live, other_target):
        path.write_bytes(b"partial")
        os.utime(path, (old, old))
    fresh = tmp_path / f".last.pt.{_dead_pid()}-99999999.tmp"  # newer than this process: not touched
    fresh.write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path / "last.pt")
    assert sorted(removed) == sorted([crashed, legacy])
    assert live.exists() and other_target.exists() and fresh.exists()


def test_next_write_of_a_target_sweeps_its_stale_temporaries(tmp_path):
    old = time.time() - 3600
    crashed = tmp_path / f".metrics.csv.{_dead_pid()}-00000000.tmp"
    crashed.write_bytes(b"partial")
    os.utime(crashed, (old, old))
    atomic_write(tmp_path / "metrics.csv", lambda tmp: tmp.write_text("epoch\n1\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


@pytest.mark.slow
def test_codecarbon_task_rows_end_in_one_file_across_restarts(tmp_path):
    for _ in range(2):  # a run and its resume
        emissions = TrainingEmissions(tmp_path, "NLD")
        assert emissions.available
        for epoch in (1, 2):
            emissions.start(f"train_epoch_{epoch}")
            emissions.stop()
        emissions.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["emissions.csv", TASKS_FILE]
    lines = (tmp_path / TASKS_FILE).read_text().splitlines()
    assert lines[0].startswith("task_name,") and [line.split(",")[0] for line in lines[1:]] == ["train_epoch_1", "train_epoch_2"] * 2


def test_failed_start_removes_only_what_it_created(tmp_path):
    config = PretrainConfig()
    run = tmp_path / "new_run"
    with pytest.raises(RuntimeError):
        with open_run(config, run, None, "test"):
            assert (run / "config.yaml").is_file()
            (run / "logs").mkdir()
            (run / "logs" / "a.txt").write_text("x")
            raise RuntimeError("boom")
    assert not run.exists()

    kept = tmp_path / "existing"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        with open_run(config, kept, None, "test"):
            (kept / "last.pt").write_text("x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]

    started = tmp_path / "started"
    with pytest.raises(RuntimeError):
        with open_run(config, started, None, "test"):
            (started / "metrics.csv").write_text("epoch\n1\n")  # one epoch done: resumable, kept
            raise RuntimeError("later")
    assert (started / "metrics.csv").exists()


def test_pretrain_that_fails_before_its_first_epoch_leaves_no_run_dir(tmp_path):
    from mae_dbp.train.pretrain import pretrain
    from tests.conftest import tiny_pretrain

    data = write_synthetic(tmp_path / "data", num=6, size=32, seed=0, progress=False)
    config = tiny_pretrain(data)
    config.train.batch_size = config.train.effective_batch = 64  # more than the 5 training images
    with pytest.raises(UserInputError, match="fewer than train.batch_size"):
        pretrain(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_one_rule_for_an_output_that_exists(tmp_path):
    """Refused naming the entry, with the options the command has; --force removes only what it owns."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.tif").write_bytes(b"an earlier image")
    (out / "notes.txt").write_text("the user's")
    (out / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match=r"out/images already exists \(use --force to replace it, or another output"):
        prepare_output(out, ["stats.json", "images"])
    with pytest.raises(FileExistsError, match="out/dangling already exists"):
        refuse_existing(out, ["dangling"])
    with pytest.raises(FileExistsError, match=r"notes.txt already exists \(use --resume to continue that run, or another"):
        refuse_existing(out, [out / "notes.txt"], force=None, resumable=True)  # a path works like a name
    assert prepare_output(out, ["images", "dangling", "stats.json"], force=True) == out
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert prepare_output(tmp_path / "new" / "deep", ["x"]).is_dir()
    assert not refuse_existing(tmp_path / "later", ["x"]).exists()  # the rule alone creates nothing
    with pytest.raises(FileExistsError, match="out/notes.txt already exists"):
        prepare_output(out, None)  # None: the job owns the whole folder (quickstart, bench finetune)
    assert not any(prepare_output(out, None, force=True).iterdir())


def test_run_dir_finds_its_checkpoint_and_reads_its_config(tmp_path):
    from mae_dbp.config import save_config
    from mae_dbp.train.classify import ClassifyConfig

    run = RunDir(tmp_path / "run")
    with pytest.raises(UserInputError, match="config.yaml not found"):
        run.read_config(PretrainConfig)
    with pytest.raises(UserInputError, match="no best/ or last/ checkpoint"):
        run.checkpoint()
    with pytest.raises(UserInputError, match="--resume .*run: no last/ checkpoint there"):
        run.require_resumable()
    save_config(PretrainConfig(), run.config)
    save_checkpoint({"step": 1}, run.last / CHECKPOINT_MODEL)  # a checkpoint folder: what save_state writes
    assert run.checkpoint() == run.last and run.require_resumable() is run and run.job() == "pretrain"
    save_checkpoint({"step": 2}, run.best / CHECKPOINT_MODEL)
    assert run.checkpoint() == run.best
    # a swap of best/ cut between its two renames: the previous folder, .best.old, is found
    run.best.rename(run.path / ".best.old")
    assert run.checkpoint() == run.path / ".best.old"
    assert run.read_config(PretrainConfig, ["train.epochs=3"]).train.epochs == 3
    assert not run.started()
    run.metrics.write_text("epoch\n1\n")
    assert run.started()
    save_config(ClassifyConfig(), run.config)
    assert run.job() == "classify"
