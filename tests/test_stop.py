"""Pre-emption (mae_dbp.train.stop): a real training process gets a real SIGTERM / SIGUSR1 / SIGINT
mid-epoch, finishes its step, saves last/ with its position in the epoch, exits 75, and --resume
continues bit-exactly as the run that was never stopped."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_tools.synthetic import write_synthetic
from mae_dbp.cli import main
from mae_dbp.train import checkpoints
from mae_dbp.train.pretrain import pretrain
from mae_dbp.train.stop import EXIT_REQUEUE
from tests.conftest import free_port, tiny_pretrain, write_config

pytestmark = [pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
STEPS = 10  # optimizer steps (= micro-batches) per epoch: 100 images, 80 to train, 8 per step
# a bar line per micro-batch: on an idle machine an epoch takes ~0.1 s, below tqdm's refresh interval,
# and the bar would never show epoch 2 mid-way
BAR_EVERY_STEP = {"TQDM_MININTERVAL": "0"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data") / "wirebond", num=100, size=32, seed=0, progress=False)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The run that is never stopped: 3 epochs."""
    out = tmp_path_factory.mktemp("straight") / "run"
    pretrain(config(data), out=out)
    return out


def config(data):
    config = tiny_pretrain(data, epochs=3)
    config.log.plots = False
    return config


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def same_curve(straight: Path, split: Path) -> None:
    a, b = rows(straight), rows(split)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        for key in ("step", "train_loss", "val_loss", "lr", "decor_lr", "decor_metric"):
            assert float(x[key]) == float(y[key]), (key, x, y)  # bit-exact


def start_and_signal(command: list[str], signals: list[signal.Signals], epoch: int = 2,
                     env: dict | None = None) -> tuple[subprocess.Popen, str, str]:
    """Start ``command`` (progress bars on), wait until its bar shows epoch ``epoch`` at micro-batch
    1..6 of 10, send ``signals`` (the second while the first is being handled); returns the process
    (ended), its stdout and stderr."""
    # the stopped run must add its float sums as the in-process runs do: the same number of threads
    threads = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO), **threads, **BAR_EVERY_STEP, **(env or {})})
    seen, deadline = b"", time.monotonic() + 240
    bar = re.compile(rb"epoch %d/3:[^\r\n]*\| [1-6]/%d " % (epoch, STEPS))
    while not bar.search(seen[-4000:]):
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk and time.monotonic() < deadline, seen.decode(errors="replace")[-3000:]
        seen += chunk
    sent = time.monotonic()
    for sig in signals:
        process.send_signal(sig)
        time.sleep(0.02)
    out, err = process.communicate(timeout=240)
    print(f"{'+'.join(s.name for s in signals)}: exited {time.monotonic() - sent:.2f} s after the signal")
    return process, out.decode(), (seen + err).decode(errors="replace")


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGUSR1, signal.SIGINT]], ids=["SIGTERM", "SIGUSR1+SIGINT"])
def test_signal_mid_epoch_saves_last_exits_75_and_resume_is_bit_exact(data, straight, tmp_path, signals):
    run = tmp_path / "split"
    command = [sys.executable, "-m", "mae_dbp", "pretrain", "--config", str(write_config(config(data), tmp_path / "c.yaml")),
               "--out", str(run), "log.progress=true"]
    process, out, err = start_and_signal(command, signals)
    assert process.returncode == EXIT_REQUEUE, err[-3000:]
    said = [line for line in out.splitlines() if "stopped by" in line]
    assert len(said) == 1 and f"stopped by {signals[0].name} at epoch 2, micro-batch" in said[0], out
    assert f"--resume {run}" in said[0] and "Traceback" not in err
    state = checkpoints.loop_state(run / "last")
    assert state["epoch"] == 1 and 1 <= state["epoch_batches"] < STEPS  # mid-epoch, not at a boundary
    assert state["step"] == STEPS + state["epoch_batches"]  # the step it was in was finished
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporaries
    assert main(["pretrain", "--resume", str(run), "--no-progress"]) == 0
    same_curve(straight, run)


@pytest.mark.dist
@pytest.mark.parametrize("how", ["SIGTERM to the job", "SIGUSR1 to the ranks"])
def test_sigterm_to_two_gloo_ranks_saves_every_rank_and_resumes_bit_exactly(data, tmp_path, how):
    """2 gloo ranks under accelerate launch; SIGTERM to the whole process group (launcher and ranks,
    as Kubernetes / scancel send it), or SIGUSR1 to the launcher's children only (docs/usage.md's
    SLURM script: `pkill -USR1 -P LAUNCHER`): every rank's RNG saved, one line, the launcher exits
    non-zero, --resume continues as the run never stopped (2 ranks too)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cfg = config(data)
    cfg.train.batch_size = 4  # 4 per rank x 2 ranks = 8 per step: 10 steps per epoch as on 1 rank
    path = write_config(cfg, tmp_path / "c.yaml")
    straight = tmp_path / "straight"
    done = subprocess.run([*launch, "--main_process_port", str(free_port()), "-m", "mae_dbp", "pretrain",
                           "--config", str(path), "--out", str(straight), "--no-progress"],
                          capture_output=True, text=True, timeout=400, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "split"
    process = subprocess.Popen([*launch, "--main_process_port", str(free_port()), "-m", "mae_dbp", "pretrain",
                                "--config", str(path), "--out", str(run), "log.progress=true"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO), **BAR_EVERY_STEP}, start_new_session=True)
    seen, deadline = b"", time.monotonic() + 300
    while not re.search(rb"epoch 2/3:[^\r\n]*\| [1-6]/%d " % STEPS, seen[-4000:]):
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk and time.monotonic() < deadline, seen.decode(errors="replace")[-3000:]
        seen += chunk
    if how == "SIGTERM to the job":
        os.killpg(process.pid, signal.SIGTERM)  # the whole job: launcher and both ranks
    else:
        subprocess.run(["pkill", "-USR1", "-P", str(process.pid)], check=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode != 0
    assert (run / "last" / "random_states_1.pkl").is_file(), (out + err.decode())[-3000:]
    said = [line for line in out.decode().splitlines() if "stopped by" in line]
    assert len(said) == 1, out.decode() + err.decode()[-3000:]
    assert 1 <= checkpoints.loop_state(run / "last")["epoch_batches"] < STEPS
    done = subprocess.run([*launch, "--main_process_port", str(free_port()), "-m", "mae_dbp", "pretrain",
                           "--resume", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=400, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    same_curve(straight, run)


def test_signal_at_the_end_of_an_epoch_stops_after_its_checkpoint(data, straight, tmp_path):
    """SIGTERM sent as epoch 1's row is printed (just before its checkpoint is written): the run stops
    after that checkpoint (or, if the signal comes later, early in epoch 2), exits 75, and resumes
    bit-exactly."""
    run = tmp_path / "split"
    command = [sys.executable, "-m", "mae_dbp", "pretrain", "--config", str(write_config(config(data), tmp_path / "c.yaml")),
               "--out", str(run), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()[-3000:]
        if line.startswith("epoch=1 "):
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=240)
    assert process.returncode == EXIT_REQUEUE, err[-3000:]
    said = [line for line in out.splitlines() if "stopped by SIGTERM" in line]
    assert len(said) == 1 and ("at the end of epoch 1" in said[0] or "at epoch 2, micro-batch" in said[0]), out
    print(said[0])
    assert main(["pretrain", "--resume", str(run), "--no-progress"]) == 0
    same_curve(straight, run)
