"""Pre-emption: SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 stop a training run cleanly, to be continued.

Clusters and spot machines send SIGTERM (SLURM: ``#SBATCH --signal=B:USR1@120`` sends SIGUSR1 two
minutes ahead) and kill the job a little later. While :func:`catching` is active (the training loop,
:func:`mae_dbp.train.loop.fit`), such a signal only sets a flag; the loop notices it at its next
host read (every optimizer step on the CPU, every ``train.check_every`` on a GPU; every rank agrees
through the same all-reduce), finishes that optimizer step, writes ``last/`` (the usual atomic
write, every rank's RNG, the position in the epoch), says so in one line and raises
:class:`Stopped`; the command line exits with :data:`EXIT_REQUEUE` (75, ``EX_TEMPFAIL``), which a
job script turns into a requeue (docs/usage.md). ``--resume`` then continues bit-exactly as an
uninterrupted run, mid-epoch included (:mod:`mae_dbp.train.loop` skips the batches already done).

Further signals while stopping are ignored (the folder swap of ``last/`` is atomic even under
SIGKILL). Outside :func:`catching` the previous handlers are back.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_REQUEUE = 75  # EX_TEMPFAIL (sysexits.h): stopped by a signal, last/ saved; requeue and --resume
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Stopped(Exception):
    """A run stopped by a signal after saving ``last/`` (the command line exits :data:`EXIT_REQUEUE`)."""

    exit_code = EXIT_REQUEUE


class StopRequest:
    """The first stop signal received while :func:`catching` is active (``signal`` is its number)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "a stop request"

    def _handle(self, signum: int, _frame) -> None:
        if self.signal is None:
            self.signal = signum


@contextmanager
def catching() -> Iterator[StopRequest]:
    """Turn :data:`SIGNALS` into a :class:`StopRequest` flag for the ``with`` block (main thread only:
    elsewhere the flag never sets and the signals keep their handlers)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request._handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def agreed(accelerator, request: StopRequest) -> bool:
    """Whether any rank got a stop signal (an all-reduce under several processes: all ranks agree)."""
    if accelerator.num_processes == 1:
        return request.requested
    import torch

    flag = torch.tensor([float(request.requested)], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item() > 0)


def save_and_stop(run, request: StopRequest, emissions=None, saved: bool = False) -> None:
    """Write ``last/`` (unless ``saved``: the epoch's end just wrote it), say so in one line, raise
    :class:`Stopped`. ``run``: the loop's :class:`~mae_dbp.train.state.Run`."""
    from mae_dbp.train import checkpoints

    if not saved:
        rng = run.stop_rng
        checkpoints.save(run.accelerator, (run.run_dir.last,), {"rng": rng} if rng is not None else None)
    if emissions is not None:
        emissions.close()
    state, run_dir = run.state, run.run_dir
    where = (f"epoch {state.epoch + 1}, micro-batch {state.epoch_batches}" if state.epoch_batches
             else f"the end of epoch {state.epoch}")
    run.say(f"mae-dbp: stopped by {request.name if request.requested else 'a signal to another process'} at {where} "
            f"(optimizer step {state.step}); saved {run_dir.last}: continue with "
            f"`mae-dbp {run_dir.job()} --resume {run_dir.path}` (exit status {EXIT_REQUEUE})")
    raise Stopped(f"stopped by {request.name} at optimizer step {state.step}; {run_dir.last} saved")
