"""The plugin's WeightedCrossEntropyLoss against torch's weighted cross-entropy, on ignored pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import needs

pytestmark = [pytest.mark.seg, pytest.mark.slow, needs("mmseg")]

ROOT = Path(__file__).resolve().parents[1]


def weighted_configs() -> list[Path]:
    """Shipped concrete configs where a head's loss has class_weight."""
    from mmengine.config import Config

    found = []
    for path in sorted((ROOT / "configs" / "segmentation").glob("*.py")):
        model = Config.fromfile(str(path)).model
        if any("class_weight" in model[head].loss_decode for head in ("decode_head", "auxiliary_head")):
            found.append(path)
    assert len(found) >= 2, found  # the tiny and the industrial config
    return found


@pytest.fixture(scope="module")
def models():
    import segmentation.plugin  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return MODELS


def logits_and_labels(seed: int = 0, num_classes: int = 5):
    """Logits (2, C, 6, 7) and labels (2, 6, 7) with a 255 border and a few ignored pixels inside."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 6, 7, generator=g)
    labels = torch.randint(0, num_classes, (2, 6, 7), generator=g)
    labels[:, -1, :] = 255  # seg_pad_val border, as padding to the crop writes it
    labels[0, 1, 2] = labels[1, 3, 4] = 255
    return logits, labels


def test_mmseg_cross_entropy_with_class_weight_fails_on_ignored_pixels(models):
    """The upstream bug this loss replaces (mmseg 1.2.2): class_weight[label] is taken before masking."""
    logits, labels = logits_and_labels()
    for avg_non_ignore in (False, True):
        loss = models.build(dict(type="CrossEntropyLoss", class_weight=[0.2, 1, 1, 1, 1],
                                 avg_non_ignore=avg_non_ignore))
        with pytest.raises(IndexError):
            loss(logits, labels, ignore_index=255)


def test_weighted_cross_entropy_matches_torch_values_and_gradients(models):
    weight = [0.2, 1.0, 0.5, 2.0, 1.0]
    loss = models.build(dict(type="WeightedCrossEntropyLoss", class_weight=weight, loss_weight=0.4))
    logits, labels = logits_and_labels()
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = loss(ours_in, labels, ignore_index=255)
    ref = 0.4 * F.cross_entropy(ref_in, labels, weight=torch.tensor(weight), ignore_index=255)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    assert loss.loss_name == "loss_ce"
    unweighted = models.build(dict(type="WeightedCrossEntropyLoss"))
    torch.testing.assert_close(unweighted(logits, labels, ignore_index=255),
                               F.cross_entropy(logits, labels, ignore_index=255))


def test_weighted_cross_entropy_is_zero_not_nan_when_every_pixel_is_ignored(models):
    loss = models.build(dict(type="WeightedCrossEntropyLoss", class_weight=[0.2, 1.0, 1.0, 1.0, 1.0]))
    logits, labels = logits_and_labels()
    logits.requires_grad_()
    value = loss(logits, torch.full_like(labels, 255), ignore_index=255)
    value.backward()
    assert value.item() == 0.0 and torch.all(logits.grad == 0)


def test_shipped_heads_with_class_weight_train_on_ignored_pixels(models):
    """Both heads of each config with class_weight: loss_by_feat on labels holding 255 equals torch's."""
    from mmengine.config import Config
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    logits, labels = logits_and_labels(seed=1)
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in labels]
    for config in weighted_configs():
        cfg = Config.fromfile(str(config))
        for head_key in ("decode_head", "auxiliary_head"):
            head_cfg = cfg.model[head_key].copy()
            head_cfg.update(in_channels=[8, 8, 8, 8] if head_key == "decode_head" else 8, num_classes=5,
                            norm_cfg=dict(type="BN", requires_grad=True))
            head = models.build(head_cfg)
            loss_cfg = head_cfg.loss_decode
            expected = loss_cfg.get("loss_weight", 1.0) * F.cross_entropy(
                logits, labels, weight=torch.tensor(loss_cfg.class_weight), ignore_index=255)
            torch.testing.assert_close(head.loss_by_feat(logits, samples)["loss_ce"], expected,
                                       msg=lambda text: f"{config.name} {head_key}: {text}")
