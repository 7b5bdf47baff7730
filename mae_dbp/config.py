"""Typed run configs: dataclass sections loaded from YAML plus dotted ``key=value`` overrides.

Every default has one owner: the dataclass field that declares it. The sections shared by all jobs
live here (:class:`DecorConfig`, :class:`DataConfig`, :class:`TrainConfig`, :class:`LogConfig`);
each model declares its own ``model`` section next to its builder (``mae_dbp.models``), and each
job puts the sections together (``PretrainConfig``, ``ClassifyConfig``).

    config = load_config(PretrainConfig, "configs/pretrain/tiny_cpu_dbp.yaml", ["train.epochs=2"])
    config.train.epochs                                    # 2, an int
    save_config(config, run_dir / "config.yaml")           # the resolved config, atomically

Loading goes through OmegaConf structured configs, so a YAML file or an override may only name keys
that exist, with values of the declared type; anything else is one :class:`UserInputError` line
naming the key (``train.epochs: expected int, got 'abc'``; for an unknown key, the closest one).
Range checks live in each section's ``__post_init__`` and run on every load and :func:`checked`.
Where a field is a str, YAML 1.1's boolean words (``no``, ``yes``, ``on``, ``off``, ...) are kept as
written, in files and in overrides: ``train.mixed_precision=no`` is ``"no"``, not ``False``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from mae_dbp.decor.errors import DecorError, expect
from mae_dbp.decor.settings import DecorSettings
from mae_dbp.errors import UserInputError, closest

C = TypeVar("C")

DECOR_SCHEDULES = ("constant", "follow", "cosine")
MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")
TRAIN_DEVICES = ("auto", "cpu", "cuda")
ENCODER_SITES = ["patch_embed.proj", "blocks.*.attn.qkv", "blocks.*.mlp.fc1"]


def require(ok: bool, key: str, expected: str, value: Any) -> None:
    """:func:`mae_dbp.decor.errors.expect` as a :class:`UserInputError` (``key: expected EXPECTED, got VALUE``)."""
    expect(ok, key, expected, value, UserInputError)


@dataclass
class DecorConfig(DecorSettings):
    """DBP on the layers that ``sites`` (module-name globs) choose, and how the trainer drives R.

    The per-layer fields (kappa, lr, lr_scale, sample_frac, variant, rank, seed) and their checks
    are :class:`mae_dbp.decor.DecorSettings`'; ``lr`` is the base R step, which the trainer's
    :class:`~mae_dbp.train.decor_policy.DecorPolicy` scales by ``lr_schedule`` (its only reader).
    ``site_lr_scale`` {site glob: multiplier} gives some sites a larger or smaller R step.
    ``until`` (warm start): decorrelate only for the first part of training, then fuse R into W
    and continue as plain BP — a number below 1 is a fraction of the optimizer steps, 1 or more an
    epoch (after which the switch happens); null: DBP to the end.
    """

    enabled: bool = True
    sites: list[str] = field(default_factory=lambda: list(ENCODER_SITES))
    site_lr_scale: dict[str, float] = field(default_factory=dict)
    lr_schedule: str = "constant"  # one of DECOR_SCHEDULES
    lr_hold: float = 0.0  # cosine: fraction of the run at the full R lr before the decay starts
    update_every: int = 1  # R step every k optimizer steps, from the subsamples of all k (lr x k)
    warmup_steps: int = 0  # R lr ramps linearly from 0 over its first N optimizer steps (0: no R warm-up)
    defer_weight_grad: bool = True  # accumulating micro-batches: one Rᵀ per optimizer step (false for FSDP / ZeRO)
    until: Optional[float] = None  # warm start: fraction of the steps (< 1) or epoch (>= 1) to switch to plain BP

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.update_every >= 1, "decor.update_every", "an int >= 1", self.update_every)
        require(self.warmup_steps >= 0, "decor.warmup_steps", "an int >= 0", self.warmup_steps)
        require(self.lr_schedule in DECOR_SCHEDULES, "decor.lr_schedule", f"one of {', '.join(DECOR_SCHEDULES)}",
                self.lr_schedule)
        require(0 <= self.lr_hold < 1, "decor.lr_hold", "a fraction in [0, 1)", self.lr_hold)
        require(all(v >= 0 for v in self.site_lr_scale.values()), "decor.site_lr_scale", "multipliers >= 0",
                dict(self.site_lr_scale))
        require(self.until is None or (0 < self.until < 1 or float(self.until).is_integer()), "decor.until",
                "null, a fraction in (0, 1) or a whole epoch >= 1", self.until)

    def layer_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`mae_dbp.decor.apply`: the per-layer settings (with the base R
        lr, so a layer's repr shows it) and ``lr_scales``."""
        return {**self.layer_fields(), "lr_scales": dict(self.site_lr_scale)}


@dataclass
class DataConfig:
    """An image folder (``root``) or WebDataset ``shards``, the validation split; pixel statistics in
    raw units; how training crops are read (crop-first, k crops per read, the stream's shuffle buffer)."""

    root: Optional[str] = None
    val_root: Optional[str] = None  # null: a seeded val_fraction of root
    val_fraction: float = 0.05
    val_seed: int = 0
    mean: list[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])  # one value, or one per channel
    std: list[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    stats: Optional[str] = None  # a data-tools stats.json (raw units); overrides mean/std
    skip_bad: bool = False
    num_workers: int = 0
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # area fraction of the random crop
    crop_first: bool = True  # training crops read only their window (false: decode the whole image first)
    # pyramidal TIFFs (mae-dbp data pyramid): read each crop from the coarsest level on which it still
    # spans level_gap x model.img_size px (1: OpenSlide's best level for the downsample; null: always
    # the full resolution)
    level_gap: Optional[float] = 1.0
    crops_per_image: int = 1  # k random crops per read; an epoch still reads every image once (k x the crops)
    shuffle_buffer: int = 0  # crops mixed per loader worker when streaming (0: max(2, k) x train.batch_size)
    shards: Optional[str] = None  # WebDataset shards (a folder with manifest.json, or a pattern) instead of root

    def __post_init__(self) -> None:
        require(self.num_workers >= 0, "data.num_workers", "an int >= 0", self.num_workers)
        require(self.crops_per_image >= 1, "data.crops_per_image", "an int >= 1", self.crops_per_image)
        require(self.level_gap is None or self.level_gap >= 1, "data.level_gap", "a number >= 1, or null (full resolution)",
                self.level_gap)
        require(self.shuffle_buffer >= 0, "data.shuffle_buffer", "an int >= 0 (0: automatic)", self.shuffle_buffer)
        scale = list(self.crop_scale)
        require(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, "data.crop_scale", "[low, high] with 0 < low <= high <= 1",
                scale)


@dataclass
class GuardConfig:
    """The instability guard (:mod:`mae_dbp.train.guard`)."""

    enabled: bool = True
    tolerance: float = 0.1  # validation loss above (1 + tolerance) x best counts as bad
    patience: int = 2
    lr_factor: float = 0.5
    max_restores: int = 3
    min_scale: float = 0.01

    def __post_init__(self) -> None:
        require(self.tolerance >= 0, "train.guard.tolerance", "a number >= 0", self.tolerance)
        require(self.patience >= 1, "train.guard.patience", "an int >= 1", self.patience)
        require(0 < self.lr_factor <= 1, "train.guard.lr_factor", "a number in (0, 1]", self.lr_factor)
        require(self.max_restores >= 1, "train.guard.max_restores", "an int >= 1", self.max_restores)


@dataclass
class TrainConfig:
    """Optimisation: the optimizer (timm's factory, or ``mud``), warm-up + cosine per step,
    accumulation to ``effective_batch``."""

    epochs: int = 10
    batch_size: int = 64  # per process and micro-step, at most
    effective_batch: int = 64  # images per optimizer step over all processes
    base_lr: float = 1.5e-4  # peak lr = base_lr x effective_batch / 256
    min_lr: float = 0.0
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    # any name timm.optim.create_optimizer_v2 knows (adamw, muon, nmuon, adamuon, lamb, lion, ...) or mud
    # (mae_dbp.optim.Mud); optimizer_args are passed through (e.g. {ns_steps: 5, adjust_lr_fn: original})
    optimizer: str = "adamw"
    optimizer_args: dict[str, Any] = field(default_factory=dict)
    grad_clip: Optional[float] = None
    mixed_precision: str = "no"  # one of MIXED_PRECISION
    # auto: the GPU(s) accelerate sees, else the CPU; cpu: the CPU even where a GPU is (gloo ranks
    # under torchrun / accelerate launch); cuda: a GPU, or an error where torch sees none
    device: str = "auto"  # one of TRAIN_DEVICES
    # torch.compile the model (accelerate's dynamo plugin, inductor) for pretraining and classification:
    # worth it on GPUs for runs of hours (compiling takes minutes once); off for short CPU runs
    compile: bool = False
    # optimizer steps between the loop's reads of its numbers to the host (progress bar, the guard's
    # non-finite check, the time budget); null: 1 on the CPU (reads cost nothing), 10 on a GPU (each
    # read waits for the GPU). The guard acts on the interval: a bad batch costs up to that many steps
    check_every: Optional[int] = None
    seed: int = 0
    max_train_seconds: Optional[float] = None
    stop_after_epoch: Optional[int] = None  # a pre-emption point; never saved with the run
    # seconds a rank waits in a collective (all-reduce, barrier) for the others before the run ends
    # with an error: a hung or lost rank ends the job instead of freezing it until the wall time.
    # Longer than the slowest validation or checkpoint write (which other ranks wait for)
    collective_timeout: float = 1800.0
    guard: GuardConfig = field(default_factory=GuardConfig)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "effective_batch"):
            require(getattr(self, key) >= 1, f"train.{key}", "an int >= 1", getattr(self, key))
        for key in ("base_lr", "min_lr", "warmup_epochs", "weight_decay"):
            require(getattr(self, key) >= 0, f"train.{key}", "a number >= 0", getattr(self, key))
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "train.betas", "two numbers in [0, 1)",
                list(self.betas))
        from mae_dbp.optim.factory import check_name

        self.optimizer = check_name(self.optimizer)
        require(self.mixed_precision in MIXED_PRECISION, "train.mixed_precision", f"one of {', '.join(MIXED_PRECISION)}",
                self.mixed_precision)
        require(self.check_every is None or self.check_every >= 1, "train.check_every", "null or an int >= 1",
                self.check_every)
        require(self.device in TRAIN_DEVICES, "train.device", f"one of {', '.join(TRAIN_DEVICES)}", self.device)
        require(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", "null or a number > 0", self.grad_clip)
        require(self.max_train_seconds is None or self.max_train_seconds > 0, "train.max_train_seconds",
                "null or a number > 0", self.max_train_seconds)
        require(self.stop_after_epoch is None or self.stop_after_epoch >= 1, "train.stop_after_epoch",
                "null or an int >= 1", self.stop_after_epoch)
        require(self.collective_timeout > 0, "train.collective_timeout", "a number of seconds > 0", self.collective_timeout)


@dataclass
class LogConfig:
    """Where runs go and what they record."""

    dir: str = "runs"
    name: Optional[str] = None  # run folder under dir (default: config stem + time)
    log_with: Optional[str] = None  # an accelerate tracker, e.g. tensorboard
    project: str = "mae-dbp"
    country: str = "NLD"  # ISO code for codecarbon's offline CO2 estimate
    emissions: bool = True
    plots: bool = True
    progress: Optional[bool] = None  # progress bars; null: when stderr is a terminal (not in logs or pipes)


# ---------------------------------------------------------------------------------------------
# loading, checking and saving


def _type_name(annotation: Any) -> str:
    """A resolved annotation (from :func:`_field_type`) in words: ``int or null``, ``a list of float``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def _field_type(object_type: Any, key: Any) -> Any:
    if not (dataclasses.is_dataclass(object_type) and isinstance(key, str)):
        return None
    hints = typing.get_type_hints(object_type)
    return hints.get(key)


def _user_error(error: Exception, source: str) -> UserInputError:
    """An OmegaConf error as one line naming the key (and the closest key for an unknown one)."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = getattr(error, "full_key", None)
    where = f"{source}: " if source else ""
    if not key:
        text = str(getattr(error, "msg", None) or error).splitlines()[0].replace("Merge error: ", "")
        return UserInputError(f"{where}a section got a plain value ({text})")
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)):
        parent = getattr(error, "parent_node", None)
        known = list(parent.keys()) if isinstance(parent, DictConfig) else []
        prefix = key.rpartition(".")[0]
        close = closest(str(getattr(error, "key", key)), known)
        hint = f" (closest: {prefix + '.' if prefix else ''}{close[0]})" if close else (
            f" (known here: {', '.join(known)})" if known else "")
        return UserInputError(f"{where}unknown config key '{key}'{hint}")
    expected = _field_type(getattr(error, "object_type", None), getattr(error, "key", None))
    value = getattr(error, "value", None)
    if expected is None:
        return UserInputError(f"{where}{key}: {str(getattr(error, 'msg', error)).splitlines()[0]}")
    return UserInputError(f"{where}{key}: expected {_type_name(expected)}, got {value!r}")


def _merge(base, update, source: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as error:
        raise _user_error(error, source) from None


def _to_object(node, source: str = ""):
    """The dataclass instance of a structured config (runs every section's ``__post_init__``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        raise _user_error(error, source) from None
    except DecorError as error:  # the DBP library's own range checks, in the config's words already
        raise UserInputError(str(error)) from None


def shipped_configs() -> Path:
    """The configs that ship with the package: ``mae_dbp.configs`` (package data of an installed
    wheel, mapped from the repository's ``configs/``), or ``configs/`` of a source checkout."""
    from importlib.resources import files

    try:
        return Path(str(files("mae_dbp.configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(path: str | Path, folder: str | None = None) -> Path:
    """The one config-path resolver: ``path`` if it exists, else the shipped config it names, either
    a relative ``configs/...`` path (so README commands such as ``--config
    configs/pretrain/tiny_cpu_dbp.yaml`` work anywhere) or, with ``folder`` (``pretrain``,
    ``segmentation``), a bare file name in that folder of the shipped configs."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    if path.parts[:1] == ("configs",):
        shipped = shipped_configs().joinpath(*path.parts[1:])
    elif folder is not None and len(path.parts) == 1:
        shipped = shipped_configs() / folder / path
    else:
        return path
    return shipped if shipped.exists() else path


def _expects_str(schema: Any, dotted: str) -> bool:
    """Whether the field ``dotted`` (``train.mixed_precision``) of config dataclass ``schema`` is a
    str or an optional str."""
    for name in dotted.split("."):
        schema = _field_type(schema, name)
    union = typing.get_origin(schema) in (typing.Union, types.UnionType)
    return schema is str or (union and str in typing.get_args(schema))


def _yaml_bool_words(node, prefix: str = "") -> typing.Iterator[tuple[str, str]]:
    """(dotted key, text as written) of every mapping value of a composed YAML ``node`` that YAML
    1.1 reads as a boolean (``no``, ``on``, ...)."""
    import yaml

    for key, value in node.value:
        name = f"{prefix}{key.value}"
        if isinstance(value, yaml.MappingNode):
            yield from _yaml_bool_words(value, name + ".")
        elif isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:bool":
            yield name, value.value


def _keep_str_words(schema: Any, node, words: typing.Iterable[tuple[str, str]]) -> None:
    """Put the written text back in ``node`` where YAML read a boolean but ``schema`` expects a str."""
    from omegaconf import OmegaConf

    for key, text in words:
        if _expects_str(schema, key):
            OmegaConf.update(node, key, text, merge=False)


def _read_yaml(path: Path, schema: Any):
    import yaml
    from omegaconf import DictConfig, OmegaConf

    path = resolve_config_path(path)
    if not path.is_file():
        raise UserInputError(f"config file {path} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as error:  # yaml.YAMLError and OmegaConf's own grammar errors
        raise UserInputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, DictConfig):
        raise UserInputError(f"{path}: expected a mapping of config sections at the top level")
    _keep_str_words(schema, loaded, _yaml_bool_words(yaml.compose(path.read_text(), Loader=yaml.SafeLoader)))
    return loaded


def _parse_overrides(overrides: typing.Iterable[str], schema: Any):
    from omegaconf import OmegaConf

    overrides = list(overrides)
    for text in overrides:
        if "=" not in text or not text.split("=", 1)[0].strip():
            raise UserInputError(f"override {text!r} must look like section.key=value")
    try:
        parsed = OmegaConf.from_dotlist(overrides)
    except Exception as error:
        raise UserInputError(f"overrides {' '.join(overrides)}: {str(error).splitlines()[0]}") from None
    pairs = [(key.strip(), value.strip()) for key, value in (text.split("=", 1) for text in overrides)]
    _keep_str_words(schema, parsed, [(key, value) for key, value in pairs if isinstance(OmegaConf.select(parsed, key), bool)])
    return parsed


def load_config(schema: type[C], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> C:
    """``schema()`` defaults <- YAML file <- ``key=value`` overrides, as a checked ``schema`` instance."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(schema)
    if path is not None:
        node = _merge(node, _read_yaml(Path(path), schema), str(path))
    node = _merge(node, _parse_overrides(overrides, schema), "")
    return _to_object(node, str(path) if path is not None else "")


def checked(config: C) -> C:
    """A re-checked copy of a config object built in code (types and ranges, as :func:`load_config`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        node = OmegaConf.structured(config)
    except OmegaConfBaseException as error:
        raise _user_error(error, "") from None
    return _to_object(node)


def to_dict(config: Any) -> dict:
    """Plain nested dict of a config object (for JSON, trackers and config.json of exports)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: Path) -> None:
    """Write ``config`` as YAML (atomically), without the run's pre-emption point ``train.stop_after_epoch``."""
    from omegaconf import OmegaConf

    from mae_dbp.files import atomic_write

    data = to_dict(config)
    if "train" in data:
        data["train"]["stop_after_epoch"] = None
    text = OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=False)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))
