"""The mmseg plugin on real mmseg / mmengine objects and tiny generated data (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mae_dbp.data.io import write_classes, write_image, write_mask
from mae_dbp.errors import UserInputError
from tests.conftest import background_only_miou, needs

pytestmark = [pytest.mark.seg, pytest.mark.slow, needs("mmseg")]

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "segmentation" / "upernet_tiny_cpu.py"
ADE_CONFIG = ROOT / "configs" / "segmentation" / "upernet_vit_b_ade20k_512.py"
CLASSES = ["background", "wire", "ball", "wedge", "epoxy"]
TINY_VIT = dict(img_size=64, in_chans=2, embed_dim=32, depth=4, num_heads=4, patch_size=8)


# ---- fixtures: a tiny export and a tiny 2-channel 16-bit data set ------------------------------

def make_export(directory: Path, model_args: dict = TINY_VIT, seed: int = 0) -> Path:
    """An export folder as `mae-dbp export` writes it: timm ViT weights + timm hub config.json."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **model_args)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    c = model_args["in_chans"]
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 0, "num_features": model_args["embed_dim"],
              "global_pool": "token", "model_args": model_args,
              "pretrained_cfg": {"input_size": [c, 64, 64], "mean": [20000.0] * c, "std": [9000.0] * c,
                                 "num_classes": 0},
              "mae_dbp": {"fused_sites": [], "source": "test"}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def make_split(directory: Path, num: int, seed: int, size: int = 64) -> Path:
    """`num` 2-channel uint16 TIFFs with index masks: blobs of classes 1..4 on background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(num):
        mask = np.zeros((size, size), np.uint8)
        for cls in range(1, len(CLASSES)):
            cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(5, 12)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
        base = 8000 + 9000 * mask.astype(np.float64)
        image = np.stack([base, 60000 - base]) + rng.normal(0, 800, (2, size, size))
        write_image(directory / "images" / f"img_{i:02d}.tif", np.clip(image, 0, 65535).astype(np.uint16))
        write_mask(directory / "masks" / f"img_{i:02d}.png", mask)
    write_classes(directory, CLASSES, ignore_index=255)
    return directory


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return make_export(tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg_data")
    make_split(root / "train", 6, seed=1)
    make_split(root / "val", 2, seed=2)
    (root / "train" / "stats.json").write_text(json.dumps({"mean": [25000.0, 35000.0], "std": [12000.0, 12000.0]}))
    return root


@pytest.fixture(scope="module")
def plugin():
    import segmentation.plugin  # noqa: F401
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)  # building outside a Runner needs the mmseg scope
    return segmentation.plugin


# ---- compat ------------------------------------------------------------------------------------

def test_compat_standin_is_idempotent_and_explains_missing_ops(plugin):
    import mmcv.ops

    from segmentation import compat

    compat.ensure()
    assert compat.install_mmcv_ops_standin() is True  # already installed: still reports the stand-in
    from mmcv.ops import point_sample

    out = point_sample(torch.rand(1, 3, 8, 8), torch.rand(1, 5, 2))
    assert out.shape == (1, 3, 5)
    with pytest.raises(NotImplementedError, match="mmcv-lite"):
        mmcv.ops.DeformConv2d(2, 2, 3)
    assert not isinstance(torch.nn.Conv2d(1, 1, 1), mmcv.ops.ModulatedDeformConv2d)


# ---- backbone ----------------------------------------------------------------------------------

def test_backbone_loads_export_and_matches_timm_features(plugin, export_dir):
    from segmentation.backbone import TimmMAEViT
    from segmentation.export_reader import load_export

    backbone = TimmMAEViT(export_dir=str(export_dir), img_size=64, out_indices=(0, 1, 2, 3), in_channels=2).eval()
    vit, _ = load_export(export_dir)
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        features = backbone(x)
        expected = vit.eval().forward_intermediates(x, indices=[0, 1, 2, 3], norm=False, output_fmt="NCHW",
                                                    intermediates_only=True)
    assert [tuple(f.shape) for f in features] == [(2, 32, 8, 8)] * 4
    for got, want in zip(features, expected):
        torch.testing.assert_close(got, want)
    assert torch.equal(backbone.pos_embed, vit.pos_embed)  # crop == export size: no resampling


def test_backbone_interpolates_pos_embed_to_crop_and_windows(plugin, export_dir):
    from segmentation.backbone import TimmMAEViT

    backbone = TimmMAEViT(export_dir=str(export_dir), img_size=(96, 80), out_indices=(1, 3)).eval()
    assert tuple(backbone.pos_embed.shape) == (1, 1 + 12 * 10, 32)
    with torch.no_grad():
        train_size = backbone(torch.randn(1, 2, 96, 80))
        window = backbone(torch.randn(1, 2, 48, 48))  # e.g. a slide-inference window
    assert [tuple(f.shape) for f in train_size] == [(1, 32, 12, 10)] * 2
    assert [tuple(f.shape) for f in window] == [(1, 32, 6, 6)] * 2
    truncated = TimmMAEViT(export_dir=str(export_dir), img_size=64, out_indices=(1,))
    assert len(truncated.layers) == 2  # blocks after the last output are dropped


def test_backbone_random_init_and_config_errors(plugin, export_dir):
    from segmentation.backbone import TimmMAEViT

    scratch = TimmMAEViT(arch="vit_tiny_patch16_224", model_args=dict(TINY_VIT, embed_dim=48),
                         img_size=64, out_indices=(0, 1, 2, 3))
    assert [tuple(f.shape) for f in scratch(torch.randn(1, 2, 64, 64))] == [(1, 48, 8, 8)] * 4
    with pytest.raises(UserInputError, match="either export_dir or arch"):
        TimmMAEViT(export_dir=str(export_dir), arch="vit_tiny_patch16_224")
    with pytest.raises(UserInputError, match="3 input channels|takes 2 input channels"):
        TimmMAEViT(export_dir=str(export_dir), in_channels=3, out_indices=(0,))
    with pytest.raises(UserInputError, match="out_indices"):
        TimmMAEViT(export_dir=str(export_dir), out_indices=(3, 5, 7, 11))


def test_backbone_fails_loudly_on_wrong_files(plugin, export_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from segmentation.backbone import TimmMAEViT

    def build(directory: Path) -> None:
        TimmMAEViT(export_dir=str(directory), img_size=64, out_indices=(0, 1, 2, 3))

    with pytest.raises(UserInputError, match=r"nowhere[/\\]config\.json does not exist"):
        build(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(export_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserInputError, match=r"broken[/\\]model\.safetensors does not exist"):
        build(broken)
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(UserInputError, match=r"model\.safetensors: not a readable safetensors file"):
        build(broken)
    state = load_file(str(export_dir / "model.safetensors"))
    state["blocks.9.attn.qkv.weight"] = state.pop("blocks.3.attn.qkv.weight")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(UserInputError, match="missing keys: blocks.3.attn.qkv.weight.*unexpected keys: blocks.9"):
        build(broken)
    config = json.loads((export_dir / "config.json").read_text())
    config["model_args"]["embed_dim"] = 64
    (broken / "config.json").write_text(json.dumps(config))
    shutil.copy(export_dir / "model.safetensors", broken / "model.safetensors")
    with pytest.raises(UserInputError, match="shape mismatches: blocks.0"):
        build(broken)


def test_layer_decay_optimizer_gives_per_layer_lrs(plugin, export_dir, data_root):
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    from segmentation.resolve import resolve
    from segmentation.runner import load_config

    cfg = load_config(TINY_CONFIG, {"data_root": str(data_root), "pretrained_export": str(export_dir),
                                    "optim_wrapper.paramwise_cfg.decay_rate": 0.5, "optim_wrapper.optimizer.lr": 1e-3})
    resolve(cfg)
    model = MODELS.build(cfg.model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    lr_of = {}
    for group in optim.optimizer.param_groups:
        for name in group["param_names"]:
            lr_of[name] = group["lr"]
    # num_layers=4 -> ids 0 (embeddings) .. 4 (block 3), 5 (neck/heads): lr * 0.5 ** (5 - id)
    assert lr_of["backbone.pos_embed"] == pytest.approx(1e-3 * 0.5 ** 5)
    assert lr_of["backbone.patch_embed.proj.weight"] == pytest.approx(1e-3 * 0.5 ** 5)
    for i in range(4):
        assert lr_of[f"backbone.layers.{i}.attn.qkv.weight"] == pytest.approx(1e-3 * 0.5 ** (4 - i))
    assert lr_of["decode_head.conv_seg.weight"] == pytest.approx(1e-3)
    assert len({round(v, 12) for v in lr_of.values()}) == 6
    # mmseg's older constructor (as in its MAE configs) gives the same per-layer lrs
    legacy = dict(cfg.optim_wrapper, constructor="LayerDecayOptimizerConstructor",
                  paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.5))
    for group in build_optim_wrapper(model, legacy).optimizer.param_groups:
        assert all(lr_of[name] == pytest.approx(group["lr"]) for name in group["param_names"])


# ---- data --------------------------------------------------------------------------------------

def _industrial_dataset(root: Path, **kwargs):
    from mmseg.registry import DATASETS

    pipeline = [dict(type="LoadImageChannels", channels=2), dict(type="LoadIndexMask"), dict(type="PackSegInputs")]
    return DATASETS.build(dict(type="IndustrialSegDataset", data_root=str(root), pipeline=pipeline, **kwargs))


def test_industrial_dataset_reads_16bit_two_channel_folders(plugin, data_root):
    dataset = _industrial_dataset(data_root / "train", classes=CLASSES, ignore_index=255)
    assert len(dataset) == 6
    assert list(dataset.metainfo["classes"]) == CLASSES and len(dataset.metainfo["palette"]) == 5
    sample = dataset[0]
    assert tuple(sample["inputs"].shape) == (2, 64, 64) and sample["inputs"].max() > 255  # raw 16-bit units
    assert set(np.unique(sample["data_samples"].gt_sem_seg.data.numpy())) <= set(range(5))
    with pytest.raises(UserInputError, match=r"classes\.yaml lists classes"):
        _industrial_dataset(data_root / "train", classes=["background", "wire"])


def _copy_split(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_masks_are_errors_naming_the_file(plugin, data_root, tmp_path):
    split = _copy_split(data_root / "val", tmp_path / "bad_size")
    write_mask(split / "masks" / "img_01.png", np.zeros((32, 64), np.uint8))
    dataset = _industrial_dataset(split)
    dataset[0]  # the good one loads
    with pytest.raises(UserInputError, match=r"img_01\.png: mask is 32x64 .* is 64x64"):
        dataset[1]

    split = _copy_split(data_root / "val", tmp_path / "bad_value")
    mask = np.zeros((64, 64), np.uint8)
    mask[:4, :4] = 7
    mask[8, 8] = 255  # the ignore index is fine
    write_mask(split / "masks" / "img_00.png", mask)
    with pytest.raises(UserInputError, match=r"img_00\.png: mask values 7 are neither classes 0\.\.4"):
        _industrial_dataset(split)[0]

    split = _copy_split(data_root / "val", tmp_path / "no_mask")
    (split / "masks" / "img_01.png").unlink()
    with pytest.raises(UserInputError, match=r"img_01\.tif \(expected .*img_01\.png\)"):
        _industrial_dataset(split)


def test_ade20k_layout_folder_loads_with_the_ade_config(plugin, tmp_path):
    from PIL import Image
    from mmseg.registry import DATASETS

    from segmentation.resolve import resolve
    from segmentation.runner import load_config

    rng = np.random.default_rng(0)
    for split, count in (("training", 3), ("validation", 2)):
        for i in range(count):
            stem = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
                _mkdir(tmp_path / "images" / split) / f"{stem}.jpg")
            Image.fromarray(rng.integers(0, 151, (48, 64), dtype=np.uint8)).save(
                _mkdir(tmp_path / "annotations" / split) / f"{stem}.png")
    cfg = load_config(ADE_CONFIG, dict(data_root=str(tmp_path), pretrained_export=None))
    resolve(cfg)  # ViT-B from random init: sizes from timm's vit_base_patch16_224 (built on the meta device)
    assert cfg.train_cfg.max_iters == 7977 and cfg.train_dataloader.batch_size == 16  # ceil(125 * 1021 / 16)
    assert cfg.optim_wrapper.optimizer.lr == 2.5e-5 and [s.end for s in cfg.param_scheduler] == [500, 7977]
    assert cfg.model.neck.embed_dim == 768 and cfg.optim_wrapper.paramwise_cfg.num_layers == 12
    assert cfg.model.decode_head.in_channels == [768] * 4 and cfg.model.auxiliary_head.num_classes == 150
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train) == 3 and len(val) == 2 and len(train.metainfo["classes"]) == 150
    sample = train[0]
    channels, height, width = sample["inputs"].shape  # random resize, then crop to at most 512 x 512
    assert channels == 3 and max(height, width) <= 512 and min(height, width) >= 128
    labels = set(np.unique(sample["data_samples"].gt_sem_seg.data.numpy()))
    assert labels <= set(range(150)) | {255}  # reduce_zero_label: 0 -> 255, 1..150 -> 0..149
    assert tuple(val[1]["inputs"].shape) == (3, 512, 683)  # test pipeline: Resize to (2048, 512)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- configs and end-to-end fine-tuning ----------------------------------------------------------

@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "segmentation").rglob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_loads_with_plain_mmengine(config):
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))  # no project import, no call at parse time (mmengine's lazy mode)
    assert "lazy" not in type(cfg).__name__.lower()
    if config.parent.name == "segmentation":  # concrete configs: the whole model, data and schedule
        assert cfg.model.backbone.type == "TimmMAEViT" and cfg.train_cfg.max_iters > 0
        assert cfg.runner_type == "SegRunner" and cfg.train_dataloader.dataset.type


def test_runner_fills_sizes_from_export_and_data_and_checks_literals(plugin, export_dir, data_root, tmp_path):
    from segmentation.resolve import resolve
    from segmentation.runner import load_config

    def resolved(**options):
        cfg = load_config(TINY_CONFIG, {"data_root": str(data_root), "pretrained_export": str(export_dir), **options})
        resolve(cfg)
        return cfg

    cfg = resolved(**{"train_cfg.max_iters": 3})
    assert cfg.model.backbone.export_dir == str(export_dir) and "arch" not in cfg.model.backbone
    assert cfg.model.backbone.out_indices == (0, 1, 2, 3)  # the last four of the export's 4 blocks
    assert cfg.model.neck.embed_dim == 32 and cfg.model.decode_head.in_channels == [32] * 4
    assert cfg.model.auxiliary_head.in_channels == 32 and cfg.optim_wrapper.paramwise_cfg.num_layers == 4
    assert cfg.model.decode_head.num_classes == 5 == cfg.model.auxiliary_head.num_classes  # classes.yaml
    assert cfg.model.data_preprocessor.mean == [25000.0, 35000.0]  # train/stats.json wins over the export
    assert cfg.train_dataloader.dataset.data_root == str(data_root) == cfg.test_dataloader.dataset.data_root
    assert [(s.begin, s.end) for s in cfg.param_scheduler] == [(0, 3)]  # warm-up clipped, empty poly dropped
    assert [s.end for s in resolved().param_scheduler] == [5, 40]

    no_stats = _copy_split(data_root / "train", tmp_path / "plain" / "train")
    (no_stats / "stats.json").unlink()
    cfg = resolved(data_root=str(tmp_path / "plain"))
    assert cfg.model.data_preprocessor.std == [9000.0, 9000.0]  # the export's pretraining statistics

    with pytest.raises(UserInputError, match=r"model\.neck\.embed_dim=48 in the config but .*config\.json gives 32"):
        resolved(**{"model.neck.embed_dim": 48})
    with pytest.raises(UserInputError, match=r"decode_head\.num_classes=4 .*classes\.yaml"):
        resolved(**{"model.decode_head.num_classes": 4})
    with pytest.raises(UserInputError, match=r"class_weight has 3 entries but there are 5 classes"):
        resolved(**{"model.auxiliary_head.loss_decode.class_weight": [1.0, 1.0, 1.0]})
    with pytest.raises(UserInputError, match=r"optim_wrapper\.paramwise_cfg\.num_layers=12 .* gives 4"):
        resolved(**{"optim_wrapper.paramwise_cfg.num_layers": 12})
    with pytest.raises(UserInputError, match=r"data_preprocessor\.mean has 3 values but the encoder takes 2"):
        resolved(**{"model.data_preprocessor.mean": [1.0, 2.0, 3.0], "model.data_preprocessor.std": [1.0, 1.0, 1.0]})


@pytest.mark.parametrize("option, message", [
    ("max_iter=5", "--cfg-options max_iter: no such key in .*upernet_tiny_cpu.py; did you mean train_cfg.max_iters?"),
    ("pretrained_exprt=x", "--cfg-options pretrained_exprt: no such key .*; did you mean pretrained_export?"),
    ("train_dataloader.batchsize=8", "did you mean train_dataloader.batch_size?"),
    ("max_iters", "expects KEY=VALUE"),
    ("model.backbone.drop_path_rate=abc", r"drop_path_rate: expected a number \(as in .*upernet_tiny_cpu.py: 0.0\), got 'abc'"),
    ("model.backbone.in_channels=two", r"in_channels: expected a number .* got 'two'"),
    ("train_cfg.max_iters=[5]", r"max_iters: expected a number .* got \[5\]"),
])
def test_cfg_options_that_name_nothing_are_one_line_errors(option, message, capsys):
    from mae_dbp.cli import main

    assert main(["segment", "train", str(TINY_CONFIG), "--work-dir", "unused", "--cfg-options", option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mae-dbp: error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err


def test_background_only_baseline_is_what_mmseg_scores_an_all_background_prediction(plugin, data_root):
    """The mIoU floor the fine-tuning tests compare with: the plugin's metric (mmseg's IoUMetric) on
    predictions of class 0 everywhere gives exactly background_only_miou of the masks."""
    from PIL import Image

    from segmentation.metric import PerClassIoUMetric

    metric = PerClassIoUMetric(ignore_index=255)
    metric.dataset_meta = {"classes": CLASSES}
    for path in sorted((data_root / "val" / "masks").glob("*.png")):
        mask = torch.from_numpy(np.asarray(Image.open(path)).astype(np.int64))[None]
        metric.process([], [{"pred_sem_seg": {"data": torch.zeros_like(mask)}, "gt_sem_seg": {"data": mask}}])
    scores = metric.compute_metrics(metric.results)
    assert scores["mIoU"] == pytest.approx(background_only_miou(data_root / "val" / "masks"), abs=0.01)
    assert scores["IoU.background"] > 0 and scores["IoU.wire"] == 0.0


def test_tiny_upernet_finetune_evaluates_resumes_and_tests(plugin, export_dir, data_root, tmp_path, capsys):
    from mae_dbp.cli import main
    from segmentation.runner import train

    work = tmp_path / "work"
    options = {"data_root": str(data_root), "pretrained_export": str(export_dir),
               "model.test_cfg.crop_size": (48, 48), "model.test_cfg.stride": (32, 32),  # slide: 48 px windows
               "train_cfg.max_iters": 20, "train_cfg.val_interval": 20, "train_dataloader.batch_size": 2,
               "model.decode_head.channels": 32, "optim_wrapper.optimizer.lr": 3e-3,  # enough to learn something
               "log_level": "WARNING"}
    record = train(TINY_CONFIG, work, options)
    # above what predicting background everywhere scores on these masks (a segmenter that learnt
    # nothing); mmseg rounds to 2 decimals, so a background-only score may read up to 0.005 higher
    baseline = background_only_miou(data_root / "val" / "masks") + 0.01
    assert record["mode"] == "val" and record["iter"] == 20 and baseline < record["mIoU"] <= 100.0
    assert list(record["per_class_iou"]) == CLASSES
    assert json.loads((work / "metrics.json").read_text()) == record
    assert sorted(p.name for p in (work / "vis").iterdir()) == ["img_00.png", "img_01.png"]
    dumped = work / TINY_CONFIG.name  # the resolved config of the run, loadable by plain mmengine
    from mmengine.config import Config

    assert Config.fromfile(str(dumped)).model.neck.embed_dim == 32

    cli_options = [f"{k}={v}" for k, v in options.items() if k not in ("train_cfg.max_iters", "log_level")]
    assert main(["segment", "train", str(TINY_CONFIG), "--work-dir", str(work), "--cfg-options", *cli_options]) == 2
    assert "already exists (use --resume to continue that run, or --force" in capsys.readouterr().err
    first_logs = set(work.glob("*/*.log"))
    assert main(["segment", "train", str(TINY_CONFIG), "--work-dir", str(work), "--resume", "--cfg-options",
                 *cli_options, "train_cfg.max_iters=25", "log_level=INFO"]) == 0
    resumed = json.loads((work / "metrics.json").read_text())
    assert resumed["iter"] == 25 and (work / "iter_25.pth").is_file()
    (log,) = set(work.glob("*/*.log")) - first_logs
    text = log.read_text()
    assert "resumed epoch: 0, iter: 20" in text  # continued, not restarted
    assert "Config:" in text and "Param groups" in text  # the dumps stay in the log file ...
    out = capsys.readouterr().out
    assert "val metrics at iteration 25" in out and "Config:" not in out and "Param groups" not in out  # ... only

    show = tmp_path / "show"  # no --cfg-options: the run's dumped config has them all
    assert main(["segment", "test", str(TINY_CONFIG), str(work / "iter_25.pth"), "--show-dir", str(show)]) == 0
    tested = json.loads((work / "test_iter_25" / "metrics.json").read_text())
    assert tested["mode"] == "test" and tested["mIoU"] == pytest.approx(resumed["mIoU"])
    assert resumed["mIoU"] > baseline
    assert len(list(show.glob("*.png"))) == 2
    out = capsys.readouterr().out
    assert "using the training run's config" in out and "mIoU" in out and "epoxy" in out


def test_resume_without_checkpoint_is_a_clear_error(plugin, tmp_path):
    from mae_dbp.cli import main

    assert main(["segment", "train", str(TINY_CONFIG), "--work-dir", str(tmp_path), "--resume"]) == 2


def test_preview_is_readable_size_with_titles_and_a_class_legend(tmp_path):
    """A 32 x 32 crop is upscaled (whole factor) to panels >= 256 px; the legend shows every class colour."""
    from PIL import Image

    from segmentation.preview import save_preview

    write_image(tmp_path / "x.tif", (np.arange(2 * 32 * 32).reshape(2, 32, 32) * 40).astype(np.uint16))
    prediction = np.zeros((32, 32), np.int64)
    prediction[8:16, 4:28] = 1
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    out = save_preview(tmp_path / "x.tif", prediction, palette, tmp_path / "p.png", prediction.copy(),
                       class_names=["background", "wire", "ball", "wedge", "epoxy"])
    pixels = np.asarray(Image.open(out).convert("RGB"))
    assert pixels.shape[0] >= 256 and pixels.shape[1] >= 3 * 256
    legend = pixels[-40:].reshape(-1, 3)  # the strip under the panels
    for colour in palette[1:]:  # class 1 is only predicted, classes 2-4 appear in the legend alone
        assert (legend == colour).all(axis=1).any(), colour
