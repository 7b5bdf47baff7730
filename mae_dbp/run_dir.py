"""Where the product writes: a training run's folder by its named files, and the one rule for an
output that already exists.

    run = RunDir("runs/tiny")
    run.config, run.last, run.best, run.metrics, run.summary   # config.yaml, last/, best/, ...
    config = run.read_config(PretrainConfig)                     # typed and checked, as load_config
    run.checkpoint()                                             # best/, else last/

Every command that writes an output (pretrain, classify, export, bench, quickstart, the data tools,
segmentation) names the entries it owns and calls :func:`refuse_existing` (or
:func:`prepare_output`) first: an owned entry that exists already is one ``FileExistsError``
naming it, unless ``--force`` (the owned entries are removed; nothing else in the folder is
touched) or, for a training run, ``--resume``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, TypeVar

from mae_dbp.config import load_config
from mae_dbp.errors import UserInputError

C = TypeVar("C")
CHECKPOINT_MODEL = "pytorch_model.bin"  # the model file of a checkpoint folder (accelerate's save_state)


def saved_checkpoint(folder: Path) -> Path | None:
    """The checkpoint folder ``folder`` when it holds a model, or the previous one when a swap of
    :func:`mae_dbp.train.checkpoints.save` was cut between its two renames (``.<name>.old``)."""
    for path in (folder, folder.with_name(f".{folder.name}.old")):
        if (path / CHECKPOINT_MODEL).is_file():
            return path
    return None


class RunDir:
    """The folder of one training run (``mae-dbp pretrain`` / ``classify``; ``bench`` runs too)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"  # the resolved config (mae_dbp.config.save_config)
        # checkpoint folders (accelerate save_state: mae_dbp.train.checkpoints)
        self.last = self.path / "last"  # after every epoch: what --resume continues
        self.best = self.path / "best"  # at the best validation loss
        self.metrics = self.path / "metrics.csv"  # one row per epoch; its first row makes the run started
        self.decor_metrics = self.path / "decor_metrics.csv"  # per-site decorrelation per epoch
        self.summary = self.path / "summary.json"  # written when the run ends
        self.classes = self.path / "classes.json"  # classify: the class names, label order
        self.bench_record = self.path / "bench_run.json"  # bench speedup: the finished run's record
        self.loss_plot = self.path / "loss_vs_time.png"
        self.decorrelation_plot = self.path / "decorrelation.png"
        self.reconstructions_plot = self.path / "reconstructions.png"  # pretrain
        self.probe_plot = self.path / "probe_vs_time.png"  # pretrain with eval.probe
        self.accuracy_plot = self.path / "accuracy_vs_time.png"  # classify
        self.confusion_plot = self.path / "confusion_matrix.png"  # classify

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def started(self) -> bool:
        """Whether a run has finished an epoch here (from then on only --resume may continue it)."""
        return self.metrics.exists() or self.summary.exists()

    def require_resumable(self) -> "RunDir":
        """This run directory, if it holds a started run's ``last/`` checkpoint, else a UserInputError."""
        if saved_checkpoint(self.last) is None:
            raise UserInputError(f"--resume {self.path}: no {self.last.name}/ checkpoint there (not a started run directory)")
        return self

    def checkpoint(self) -> Path:
        """The ``best/`` checkpoint folder, else ``last/`` (a run that has not finished a validated epoch)."""
        for folder in (self.best, self.last):
            if saved_checkpoint(folder) is not None:
                return saved_checkpoint(folder)
        raise UserInputError(f"{self.path}: no {self.best.name}/ or {self.last.name}/ checkpoint there")

    def read_config(self, schema: type[C], overrides: Iterable[str] = ()) -> C:
        """The run's config.yaml as a checked ``schema`` instance, with ``key=value`` overrides."""
        return load_config(schema, self._existing_config(), overrides)

    def job(self) -> str:
        """``classify`` when the run's config has a classifier (``model.arch``), else ``pretrain``."""
        from omegaconf import OmegaConf

        return "classify" if OmegaConf.select(OmegaConf.load(self._existing_config()), "model.arch") else "pretrain"

    def _existing_config(self) -> Path:
        if not self.config.is_file():
            raise UserInputError(f"{self.config} not found: not a run directory of mae-dbp pretrain / classify")
        return self.config


def refuse_existing(out: str | Path, owned: Iterable[str | Path] | None, force: bool | None = False,
                    resumable: bool = False) -> Path:
    """The one rule for outputs: ``out`` (not created) for a job that writes the entries ``owned``
    (names of entries directly under ``out``, or their paths; None: the job owns the whole folder).

    An owned entry that exists already (also a dangling link) is a ``FileExistsError`` naming it,
    whose advice lists ``--resume`` (``resumable``: a training run that can continue) and
    ``--force`` (unless ``force`` is None: the command has no such option). With ``force`` the
    owned entries are removed; other files in ``out`` are never touched.
    """
    out = Path(out)
    if owned is None:
        owned = sorted(out.iterdir()) if out.is_dir() else []
    existing = [out / name for name in owned if (out / name).exists() or (out / name).is_symlink()]
    if existing and not force:
        advice = (["--resume to continue that run"] if resumable else []) + (
            ["--force to replace it"] if force is not None else []) + ["another output folder"]
        raise FileExistsError(f"{existing[0]} already exists (use {', or '.join(advice)})")
    for path in existing:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return out


def prepare_output(out: str | Path, owned: Iterable[str | Path] | None, force: bool = False) -> Path:
    """:func:`refuse_existing`, then ``out`` created (for tools that write into it straight away)."""
    out = refuse_existing(out, owned, force)
    out.mkdir(parents=True, exist_ok=True)
    return out
