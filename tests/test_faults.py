"""Faults a cluster user meets lose nothing and end in one line: a resume whose overrides do not fit,
a typo in ``model.encoder_args``, an output folder that cannot be written, a checkpoint or export
write that fails half-way (a real file-size limit), a damaged checkpoint. Real processes and real
OS errors; see also tests/test_stop.py (signals) and docs/usage.md "When things fail"."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.synthetic import write_synthetic
from mae_dbp.cli import main
from mae_dbp.train.pretrain import pretrain
from tests.conftest import tiny_pretrain, write_config

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (names of the hidden ones too) -> its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args: str, limit_bytes: int | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m mae_dbp ARGS`` in a new process of this checkout; ``limit_bytes``: a real
    RLIMIT_FSIZE (writes past it fail with EFBIG, as a full disk's with ENOSPC; SIGXFSZ ignored)."""

    def before() -> None:
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mae_dbp", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=before, cwd=REPO, env=env)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("mae-dbp: error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "wirebond", num=24, size=32, seed=0, progress=False)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A tiny pretraining run stopped after epoch 1 of 2 (last/ and best/ written), config on disk."""
    folder = tmp_path_factory.mktemp("runs") / "run"
    config = tiny_pretrain(data, epochs=2)
    config.log.plots, config.train.stop_after_epoch = False, 1
    pretrain(config, out=folder)
    return folder


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to, symlinks=True)
    return to


# ---- a resume whose overrides do not fit the checkpoint -------------------------------------------


@pytest.mark.slow
def test_resume_with_overrides_that_do_not_fit_is_refused_and_changes_nothing(run, tmp_path, capsys):
    run = copy_run(run, tmp_path / "run")
    before = snapshot(run)
    code = main(["pretrain", "--resume", str(run), "model.encoder_args={embed_dim: 64, depth: 2, num_heads: 2, patch_size: 8}"])
    line = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in line, line
    assert "last/pytorch_model.bin does not fit" in line and "encoder.cls_token has shape (1, 1, 32) in the checkpoint, (1, 1, 64) in the model" in line
    assert snapshot(run) == before  # config.yaml untouched: the plain resume and export still work
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    assert main(["pretrain", "--resume", str(run), "--no-progress"]) == 0
    assert "embed_dim: 32" in (run / "config.yaml").read_text()


@pytest.mark.slow
def test_export_of_a_run_whose_config_was_changed_by_hand_names_the_key(run, tmp_path, capsys):
    run = copy_run(run, tmp_path / "run")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("embed_dim: 32", "embed_dim: 64"))
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "does not fit" in line and "encoder.cls_token has shape (1, 1, 32) in the checkpoint, (1, 1, 64) in the model" in line
    assert not (tmp_path / "export" / "model.safetensors").exists()


# ---- encoder_args typos ---------------------------------------------------------------------------


def test_encoder_args_key_without_a_space_is_one_line_with_the_closest_name():
    from mae_dbp.config import load_config
    from mae_dbp.errors import UserInputError
    from mae_dbp.models.mae import build_mae
    from mae_dbp.train.pretrain import PretrainConfig

    config = load_config(PretrainConfig, None, ["model.encoder=vit_tiny_patch16_224", "model.img_size=32",
                                                "model.encoder_args={embed_dim:96, depth: 2, num_heads: 3}"])
    with pytest.raises(UserInputError, match=r"model.encoder_args: unknown key 'embed_dim:96' .*did you mean embed_dim\?"
                                             r".*space after the colon"):
        build_mae(config.model)
    config = load_config(PretrainConfig, None, ["model.encoder_args={embeddim: 96}"])
    with pytest.raises(UserInputError, match=r"unknown key 'embeddim' .*did you mean embed_dim\?"):
        build_mae(config.model)


# ---- output folders that cannot be written --------------------------------------------------------


def read_only(folder: Path) -> str:
    """Make ``folder`` unwritable for this process: chmod 555, or for root (who writes there anyway)
    the immutable attribute (chattr +i); returns the OS error a write there gets."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return "Permission denied (EACCES)"
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root without chattr +i: no read-only folder to test with")
    return "Operation not permitted (EPERM)"


@pytest.mark.slow
def test_unwritable_outputs_are_one_line_naming_the_path(run, data, tmp_path):
    """pretrain --out, export --out and data stats --out into a folder that cannot be written:
    one line naming the path and the OS error, exit status 74, nothing written."""
    config = write_config(tiny_pretrain(data, epochs=1), tmp_path / "tiny.yaml")
    ro = tmp_path / "ro"
    ro.mkdir()
    words = read_only(ro)
    try:
        for args, target in ((["pretrain", "--config", str(config), "--out", str(ro / "run")], ro / "run"),
                             (["export", str(run), "--out", str(ro / "export")], ro / "export"),
                             (["data", "stats", str(data), "--no-progress", "--out", str(ro / "stats.json")], ro / "stats.json")):
            result = cli(*args)
            line = one_line(result)
            assert result.returncode == 74, (args, result.stderr[-2000:])
            assert str(target) in line and words in line, line
        assert os.listdir(ro) == []
    finally:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
        ro.chmod(0o755)


# ---- writes that fail half-way (a real file-size limit) -------------------------------------------


@pytest.mark.slow
def test_checkpoint_write_that_fails_keeps_last_and_best(run, tmp_path):
    """--resume under a 1 MB file-size limit: the model file of the next last/ cannot be written
    (EFBIG, as a full disk's ENOSPC); the previous last/ and best/ stay as they were, no temporary
    folder is left, one line names the folder and the error, and a resume without the limit goes on."""
    run = copy_run(run, tmp_path / "run")
    model_bytes = (run / "last" / "pytorch_model.bin").stat().st_size
    before = {name: snapshot(run / name) for name in ("last", "best")}
    result = cli("pretrain", "--resume", str(run), "--no-progress", limit_bytes=model_bytes // 2)
    line = one_line(result)
    assert result.returncode == 74, result.stderr[-2000:]
    assert f"{run / 'last'}: write failed (" in line and "while writing the new last/; the previous checkpoint is kept" in line, line
    assert {name: snapshot(run / name) for name in ("last", "best")} == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    assert main(["pretrain", "--resume", str(run), "--no-progress"]) == 0


@pytest.mark.slow
def test_export_write_that_fails_keeps_the_previous_export(run, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    before = snapshot(out)
    result = cli("export", str(run), "--out", str(out), "--force", limit_bytes=1000)
    line = one_line(result)
    assert result.returncode == 74 and str(out) in line and "(EFBIG)" in line, line
    assert snapshot(out) == before  # --force replaces only once the new files are written
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


# ---- damaged checkpoints --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_last_is_named_on_resume_and_damaged_best_on_export(run, tmp_path, capsys, damage):
    run = copy_run(run, tmp_path / "run")
    assert (run / "last" / "checksums.sha256").is_file()
    for folder, command in (("last", ["pretrain", "--resume", str(run)]),
                            ("best", ["export", str(run), "--out", str(tmp_path / "export")])):
        target = run / folder / "optimizer.bin" if folder == "last" else run / folder / "pytorch_model.bin"
        data = bytearray(target.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data[len(data) // 2] ^= 0x01  # one bit: torch would load this silently
        target.write_bytes(bytes(data))
        before = snapshot(run)
        assert main(command) == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and line.startswith(f"mae-dbp: error: {target}: damaged checkpoint file"), line
        assert ("copy of" in line and "best" in line) if folder == "last" else "export" in line and "last" in line
        assert snapshot(run) == before


# ---- a hung rank ----------------------------------------------------------------------------------


def ranks_of(launcher: int) -> dict[int, int]:
    """{RANK: pid} of the training processes started by the launcher ``launcher`` (its children)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.dist
def test_a_hung_rank_ends_the_run_within_the_collective_timeout(data, tmp_path):
    """2 gloo ranks; rank 1 is stopped (SIGSTOP) in epoch 2: rank 0 gives up after
    train.collective_timeout (20 s here) with one line, the job ends non-zero, last/ stays the last
    good checkpoint (it verifies and resumes)."""
    import re
    import time

    from mae_dbp.train import checkpoints
    from tests.conftest import free_port

    cfg = tiny_pretrain(data, epochs=50)
    cfg.log.plots, cfg.train.batch_size, cfg.train.collective_timeout = False, 4, 20
    run = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "mae_dbp", "pretrain",
               "--config", str(write_config(cfg, tmp_path / "c.yaml")), "--out", str(run), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    seen = ""
    while not re.search(r"epoch=1 ", seen):  # epoch 1 done: last/ written
        line = process.stdout.readline()
        assert line, process.stderr.read()[-3000:]
        seen += line
    ranks = ranks_of(process.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        out, err = process.communicate(timeout=20 + 30 + 60)  # + torchrun's 30 s before it SIGKILLs the rest
    finally:
        if process.poll() is None:
            os.kill(ranks[1], signal.SIGKILL)
            process.kill()
    took = time.monotonic() - stopped
    (tmp_path / "stderr.txt").write_text(err)
    assert process.returncode != 0
    lines = [line for line in err.splitlines() if "mae-dbp: error:" in line]  # torchrun prefixes "[rank0]: "
    assert len(lines) == 1 and "train.collective_timeout (20 s)" in lines[0], err[-4000:]
    assert "RuntimeError" not in err, err[-4000:]  # (the launcher still reports its failed child)
    print(f"hung rank: the job ended {took:.0f} s after SIGSTOP (collective_timeout 20 s)")
    checkpoints.verify(run / "last")  # the last good one (epoch 0 or 1: the stop may hit the save)
    assert checkpoints.loop_state(run / "last")["epoch"] in (0, 1)
