"""Bad input, table-driven: each row makes one kind of bad input and runs the ``mae-dbp`` command
line on it (in-process, ``mae_dbp.cli.main``).

An ``error`` row must exit with code 2 and print exactly one ``mae-dbp: error:`` line that names
the file or key (``names``); a ``warning`` row must run to the end (exit 0) and print exactly one
``mae-dbp: warning:`` line naming it. No row may change or remove a file that existed before it
ran (every file under the test's folders is hashed before and after), and unless ``leaves_files``
no row may leave new files behind either (a failed start removes its half-made run directory).

To add a case: write a ``setup(ws)`` function that builds the bad input under ``ws.dir`` and
returns the command line (``ws`` offers clean copies of a small data set, a tiny config, a finished
run and a segmentation split), then add a :class:`Case` row to ``CASES``. docs/usage.md lists the
rows.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from data_tools.stats import compute_stats
from data_tools.synthetic import write_synthetic
from mae_dbp.cli import main
from mae_dbp.data.io import write_image, write_mask
from tests.conftest import tiny_pretrain, write_config

SEG_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "segmentation" / "upernet_tiny_cpu.py"


@dataclass
class Workspace:
    """What a row's ``setup`` builds on: its own empty ``dir`` and read-only shared inputs."""

    dir: Path
    data: Path  # 10 synthetic 2-channel uint16 32 px images (flat folder), shared: copy before changing
    config: Path  # tiny pretraining YAML without data.root (1 epoch)
    run: Path  # a finished 1-epoch pretraining run on ``data``
    seg: Path  # a segmentation data root: train/ and val/ (images, masks, classes.yaml, stats.json)

    def data_copy(self, name: str = "data") -> Path:
        """A private copy of ``data`` under ``dir``."""
        return Path(shutil.copytree(self.data, self.dir / name))

    def seg_copy(self) -> Path:
        return Path(shutil.copytree(self.seg, self.dir / "seg"))

    def pretrain(self, root: Path, *extra: str) -> list[str]:
        """``mae-dbp pretrain`` of the tiny config on ``root`` into ``dir/run``."""
        return ["pretrain", "--config", str(self.config), "--out", str(self.dir / "run"), f"data.root={root}", *extra]

    def segment(self, root: Path) -> list[str]:
        return ["segment", "train", str(SEG_CONFIG), "--work-dir", str(self.dir / "work"),
                "--cfg-options", f"data_root={root}", "train_cfg.max_iters=1", "train_cfg.val_interval=1"]


@dataclass
class Case:
    name: str
    setup: Callable[[Workspace], list[str]]
    names: Callable[[Workspace], str]  # the text (a file or key) the one message line must contain
    kind: str = "error"  # or "warning"
    leaves_files: bool = False  # True: new files are fine (a finished run, an mmengine work dir's log)
    slow: bool = False  # trains or builds an mmseg runner before failing: left out of the fast tier


# ---- setups: one bad input each -----------------------------------------------------------------


def _float_image(value: float) -> np.ndarray:
    image = np.full((2, 32, 32), 30000.0, np.float32)
    image[1, 5, 7] = value
    return image


def nan_pixel(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    write_image(data / "zz_nan.tif", _float_image(np.nan))
    return ws.pretrain(data)


def inf_pixel(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    write_image(data / "zz_inf.tif", _float_image(np.inf))
    return ws.pretrain(data)


def eight_bit_among_sixteen(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    write_image(data / "zz_8bit.tif", np.full((2, 32, 32), 100, np.uint8))
    return ws.pretrain(data)


def too_small(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    write_image(data / "zz_small.tif", np.full((2, 16, 32), 30000, np.uint16))
    return ws.pretrain(data)


def unknown_key(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "model.colour=blue")


def missing_config(ws: Workspace) -> list[str]:
    return ["pretrain", "--config", str(ws.dir / "nope.yaml"), "--out", str(ws.dir / "run")]


def empty_folder(ws: Workspace) -> list[str]:
    (ws.dir / "empty").mkdir()
    return ws.pretrain(ws.dir / "empty")


def truncated_png(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    write_image(ws.dir / "whole.png", np.full((1, 32, 32), 7, np.uint16))
    (data / "zz_cut.png").write_bytes((ws.dir / "whole.png").read_bytes()[:60])
    (ws.dir / "whole.png").unlink()
    return ws.pretrain(data)


def truncated_tiff(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    whole = sorted(data.iterdir())[3].read_bytes()
    (data / "zz_cut.tif").write_bytes(whole[: len(whole) // 3])
    return ws.pretrain(data)


def wrong_channels(ws: Workspace) -> list[str]:
    data = ws.data_copy()
    write_image(data / "zz_rgb.tif", np.full((3, 32, 32), 30000, np.uint16))
    return ws.pretrain(data)


def mask_out_of_range(ws: Workspace) -> list[str]:
    seg = ws.seg_copy()
    mask = np.zeros((64, 64), np.uint8)
    mask[3, 3] = 9
    write_mask(seg / "train" / "masks" / "synth_00001.png", mask)
    return ws.segment(seg)


def mask_size_mismatch(ws: Workspace) -> list[str]:
    seg = ws.seg_copy()
    write_mask(seg / "train" / "masks" / "synth_00001.png", np.zeros((32, 64), np.uint8))
    return ws.segment(seg)


def missing_classes(ws: Workspace) -> list[str]:
    seg = ws.seg_copy()
    (seg / "train" / "classes.yaml").unlink()
    return ws.segment(seg)


def out_on_existing_run(ws: Workspace) -> list[str]:
    return ["pretrain", "--config", str(ws.config), "--out", str(ws.run), f"data.root={ws.data}"]


def resume_non_run(ws: Workspace) -> list[str]:
    (ws.dir / "notes").mkdir()
    (ws.dir / "notes" / "todo.txt").write_text("not a run\n")
    return ["pretrain", "--resume", str(ws.dir / "notes")]


def truncated_checkpoint(ws: Workspace) -> list[str]:
    run = Path(shutil.copytree(ws.run, ws.dir / "run_copy"))
    model = run / "last" / "pytorch_model.bin"
    whole = model.read_bytes()
    model.write_bytes(whole[: len(whole) // 2])
    return ["pretrain", "--resume", str(run)]


def export_into_existing(ws: Workspace) -> list[str]:
    (ws.dir / "export").mkdir()
    (ws.dir / "export" / "model.safetensors").write_bytes(b"an earlier export")
    return ["export", str(ws.run), "--out", str(ws.dir / "export")]


def epochs_not_a_number(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "train.epochs=abc")


def bool_not_a_bool(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "decor.enabled=maybe")


def epochs_zero(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "train.epochs=0")


def batch_size_zero(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "train.batch_size=0")


def negative_lr(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "train.base_lr=-0.1")


def seg_option_of_wrong_kind(ws: Workspace) -> list[str]:
    return [*ws.segment(ws.seg), "model.backbone.drop_path_rate=abc"]


def seg_option_naming_nothing(ws: Workspace) -> list[str]:
    return [*ws.segment(ws.seg), "max_iter=5"]


def tile_without_validation(ws: Workspace) -> list[str]:
    return ["data", "tile", str(ws.seg / "train"), "--out", str(ws.dir / "tiles"), "--tile", "32",
            "--val-fraction", "0", "--no-progress"]


def img_size_not_multiple_of_patch(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "model.img_size=36")


def config_with_resume(ws: Workspace) -> list[str]:
    return ["pretrain", "--config", str(ws.config), "--resume", str(ws.run)]


def export_of_classify_run(ws: Workspace) -> list[str]:
    from mae_dbp.config import save_config
    from mae_dbp.train.classify import ClassifyConfig

    run = ws.dir / "classify_run"
    run.mkdir()
    save_config(ClassifyConfig(), run / "config.yaml")
    (run / "best").mkdir()
    (run / "best" / "pytorch_model.bin").write_bytes(b"weights of a classifier")
    return ["export", str(run), "--out", str(ws.dir / "export")]


def crops_per_image_zero(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "data.crops_per_image=0")


def level_gap_below_one(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "data.level_gap=0.5")


def pyramid_of_float_images(ws: Workspace) -> list[str]:
    write_image(ws.dir / "floats" / "zz_float.tif", np.ones((2, 32, 32), np.float32))
    return ["data", "pyramid", str(ws.dir / "floats"), "--out", str(ws.dir / "pyramid"), "--no-progress"]


def window_cannot_be_read(ws: Workspace) -> list[str]:
    """A tiled TIFF whose header reads but whose tiles are cut off: the crop window fails."""
    import tifffile

    data = ws.data_copy()
    path = data / "zz_window.tif"
    tifffile.imwrite(path, np.full((32, 32, 2), 30000, np.uint16), tile=(16, 16), photometric="minisblack",
                     planarconfig="contig")
    with tifffile.TiffFile(path) as tif:
        start = min(tif.pages[0].dataoffsets)
    path.write_bytes(path.read_bytes()[:start + 10])
    return ws.pretrain(data)


def truncated_shard(ws: Workspace) -> list[str]:
    from data_tools.shard import write_shards

    write_shards(ws.data, ws.dir / "shards", shard_mb=0.02, progress=False)  # 4 images of 4 KB per shard
    shard = ws.dir / "shards" / "shard-00001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return ws.pretrain(ws.data, f"data.shards={ws.dir / 'shards'}", f"data.val_root={ws.data}", "data.root=null")


def in_chans_zero(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "model.in_chans=0")


def mixed_precision_off(ws: Workspace) -> list[str]:
    return ws.pretrain(ws.data, "train.mixed_precision=off")  # 'off' read as written, then refused


CASES = [
    Case("NaN pixel in a float TIFF", nan_pixel, lambda ws: "zz_nan.tif", slow=True),
    Case("Inf pixel in a float TIFF", inf_pixel, lambda ws: "zz_inf.tif", slow=True),
    Case("8-bit image among 16-bit ones", eight_bit_among_sixteen, lambda ws: "zz_8bit.tif", "warning", True, slow=True),
    Case("image smaller than model.img_size", too_small, lambda ws: "zz_small.tif", "warning", True, slow=True),
    Case("unknown config key", unknown_key, lambda ws: "model.colour"),
    Case("missing config file", missing_config, lambda ws: "nope.yaml"),
    Case("empty data folder", empty_folder, lambda ws: str(ws.dir / "empty")),
    Case("truncated PNG", truncated_png, lambda ws: "zz_cut.png", slow=True),
    Case("truncated TIFF", truncated_tiff, lambda ws: "zz_cut.tif", slow=True),
    Case("wrong channel count", wrong_channels, lambda ws: "zz_rgb.tif", slow=True),
    Case("mask value out of range", mask_out_of_range, lambda ws: "synth_00001.png", leaves_files=True, slow=True),
    Case("mask size differs from its image", mask_size_mismatch, lambda ws: "synth_00001.png", leaves_files=True,
         slow=True),
    Case("missing classes.yaml", missing_classes, lambda ws: "classes.yaml", leaves_files=True, slow=True),
    Case("--out on an existing run", out_on_existing_run, lambda ws: str(ws.run)),
    Case("--resume of a folder that is no run", resume_non_run, lambda ws: str(ws.dir / "notes")),
    Case("truncated checkpoint", truncated_checkpoint, lambda ws: str(ws.dir / "run_copy" / "last")),
    Case("export into a folder with an export", export_into_existing, lambda ws: "model.safetensors"),
    Case("train.epochs=abc", epochs_not_a_number, lambda ws: "train.epochs"),
    Case("decor.enabled=maybe", bool_not_a_bool, lambda ws: "decor.enabled"),
    Case("model.img_size not a multiple of the patch", img_size_not_multiple_of_patch, lambda ws: "model.img_size"),
    Case("--config together with --resume", config_with_resume, lambda ws: "--config"),
    Case("export of a classification run", export_of_classify_run, lambda ws: "classify_run"),
    Case("train.epochs=0", epochs_zero, lambda ws: "train.epochs"),
    Case("train.batch_size=0", batch_size_zero, lambda ws: "train.batch_size"),
    Case("negative lr", negative_lr, lambda ws: "train.base_lr"),
    Case("segment --cfg-options value of the wrong kind", seg_option_of_wrong_kind,
         lambda ws: "model.backbone.drop_path_rate", leaves_files=True, slow=True),
    Case("segment --cfg-options key that names nothing", seg_option_naming_nothing,
         lambda ws: "train_cfg.max_iters", leaves_files=True, slow=True),
    Case("data tile writing 0 validation tiles", tile_without_validation, lambda ws: "0 val tiles", "warning", True),
    Case("data.crops_per_image=0", crops_per_image_zero, lambda ws: "data.crops_per_image"),
    Case("data.level_gap=0.5", level_gap_below_one, lambda ws: "data.level_gap: expected a number >= 1"),
    Case("data pyramid of float images", pyramid_of_float_images, lambda ws: "zz_float.tif: float32 pixels"),
    Case("TIFF whose crop window cannot be read", window_cannot_be_read, lambda ws: "zz_window.tif"),
    Case("truncated shard", truncated_shard, lambda ws: "shard-00001.tar", leaves_files=True),
    Case("model.in_chans=0", in_chans_zero, lambda ws: "model.in_chans: expected an int >= 1, got 0"),
    Case("train.mixed_precision=off", mixed_precision_off,
         lambda ws: "train.mixed_precision: expected one of no, fp16, bf16, fp8, got 'off'"),
]


# ---- shared inputs, built once -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_dbp_run) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs_shared")
    data = write_synthetic(root / "synthetic", num=10, size=32, seed=0, progress=False) / "images"
    config = tiny_pretrain(None, epochs=1)
    config.log.plots = False
    config_file = write_config(config, root / "tiny.yaml")
    run = tiny_dbp_run  # trained with train.base_lr=4e-2 train.mixed_precision=no
    seg = root / "seg"
    for split, seed in (("train", 1), ("val", 2)):
        write_synthetic(seg / split, num=2, size=64, seed=seed, progress=False)
    compute_stats(seg / "train", seg / "train" / "stats.json", progress=False)
    return {"data": data, "config": config_file, "run": run, "seg": seg, "root": root}


def _hashes(*roots: Path) -> dict[Path, str]:
    """sha256 of every file (symlinks as their target text) under ``roots``."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                found[path] = "link:" + str(path.readlink())
            elif path.is_file():
                found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] * c.slow) for c in CASES])
def test_bad_input(case: Case, shared, tmp_path, capsys):
    ws = Workspace(dir=tmp_path, data=shared["data"], config=shared["config"], run=shared["run"], seg=shared["seg"])
    argv = case.setup(ws)
    before = _hashes(tmp_path, shared["root"], shared["run"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    after = _hashes(tmp_path, shared["root"], shared["run"])
    prefix = f"mae-dbp: {case.kind}:"
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert code == (2 if case.kind == "error" else 0), err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert case.names(ws) in lines[0], lines[0]
    if case.kind == "warning":
        assert "mae-dbp: error:" not in err
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"changed or removed: {changed}"
    if not case.leaves_files:
        assert set(after) == set(before), f"left behind: {sorted(set(after) - set(before))}"


def test_scientific_notation_override_is_a_float(shared):
    """``train.base_lr=4e-2`` (YAML 1.1 reads it as a string) is taken as the number it means."""
    text = (shared["run"] / "config.yaml").read_text()
    assert "base_lr: 0.04" in text
    assert (shared["run"] / "metrics.csv").is_file()


def test_no_override_of_a_str_field_is_the_word_no(shared):
    """``train.mixed_precision=no`` (YAML 1.1 reads ``no`` as false) trained the shared run as written."""
    assert "mixed_precision: 'no'" in (shared["run"] / "config.yaml").read_text()


def test_yaml_boolean_words_are_kept_as_written_only_where_a_str_is_expected(tmp_path):
    from mae_dbp.config import load_config
    from mae_dbp.train.pretrain import PretrainConfig

    path = tmp_path / "words.yaml"
    path.write_text("model:\n  encoder_args: {class_token: no}\ndecor:\n  enabled: off\n"
                    "train:\n  mixed_precision: no\nlog:\n  name: yes\n  project: on\n")
    config = load_config(PretrainConfig, path, ["log.log_with=off", "log.emissions=no", "log.plots=yes"])
    assert (config.train.mixed_precision, config.log.project, config.log.name, config.log.log_with) == (
        "no", "on", "yes", "off")
    assert (config.decor.enabled, config.log.emissions, config.log.plots) == (False, False, True)  # bool fields
    assert config.model.encoder_args == {"class_token": False}  # free-form (Any) values stay YAML's booleans


def test_export_files_honour_the_umask(shared, tmp_path):
    """Under umask 022 every file of an export is 0644 (safetensors alone would leave 0600)."""
    import os

    previous = os.umask(0o022)
    try:
        assert main(["export", str(shared["run"]), "--out", str(tmp_path / "export"), "--format", "both"]) == 0
    finally:
        os.umask(previous)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "export").iterdir()}
    assert modes == {"model.safetensors": "0o644", "config.json": "0o644", "mmseg_backbone.pth": "0o644"}
