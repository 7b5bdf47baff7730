"""The benchmark commands run and report what they promise (no timing assertions: see docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mae_dbp import decor
from mae_dbp.bench.decor_layers import run_decor_bench
from mae_dbp.bench.inference import run_inference_bench
from mae_dbp.bench.overhead import run_overhead_bench
from mae_dbp.cli import main
from mae_dbp.config import load_config
from mae_dbp.train.pretrain import PretrainConfig

TINY = "configs/pretrain/tiny_cpu_dbp.yaml"


@pytest.mark.slow
def test_bench_pretrain_cli_writes_ratios(tmp_path):
    out = tmp_path / "pretrain.json"
    assert main(["bench", "pretrain", "--config", TINY, "--steps", "1", "--batch-size", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["overhead_ratio"] == pytest.approx(result["dbp_step_s"] / result["bp_step_s"])
    assert result["decor_sites"] == 9
    # the contenders are what the ratio claims: the FLOPs of one BP step (forward + backward) and of
    # one DBP step (the same + the R update), counted here on models built apart from the bench;
    # a bench that timed BP twice would report 1.0
    from mae_dbp.train.pretrain import build_model

    config = load_config(PretrainConfig, TINY)
    flops = {}
    for name, enabled in (("bp", False), ("dbp", True)):
        config.decor.enabled = enabled
        model = build_model(config)[0].train()
        assert len(decor.decor_modules(model.encoder)) == (9 if enabled else 0)
        images = torch.randn(4, model.in_chans, model.img_size, model.img_size)
        with FlopCounterMode(display=False) as counter:
            model(images)[0].backward()
            decor.update(model.encoder, lr=1e-3)
        flops[name] = counter.get_total_flops()
    assert flops["dbp"] > flops["bp"] > 0
    assert result["flop_ratio"] == pytest.approx(flops["dbp"] / flops["bp"], rel=1e-6)


@pytest.mark.slow
def test_bench_pretrain_contenders_are_bp_without_dbp_and_dbp_whose_r_moves():
    from mae_dbp.bench.pretrain_step import _models, training_step

    config = load_config(PretrainConfig, TINY)
    models = _models(config, torch.device("cpu"))
    (bp, no_policy), (dbp, policy) = models["bp"], models["dbp"]
    assert no_policy is None and decor.decor_modules(bp) == []
    assert sorted(n for n, _ in decor.decor_modules(dbp.encoder)) == policy.summary()["decor_sites"]
    assert len(policy.summary()["decor_sites"]) == 9
    images = torch.randn(4, dbp.in_chans, dbp.img_size, dbp.img_size)
    before = {n: layer.R.clone() for n, layer in decor.decor_modules(dbp.encoder)}
    weights = bp.encoder.blocks[0].attn.qkv.weight.detach().clone()
    for name, (model, pol) in models.items():
        step = training_step(model, images, pol, optimizer=config.train.optimizer,
                             optimizer_args=config.train.optimizer_args)
        step(), step()
    assert not torch.equal(bp.encoder.blocks[0].attn.qkv.weight, weights)  # BP trains
    for name, layer in decor.decor_modules(dbp.encoder):  # and every DBP layer's R took its steps
        assert not torch.equal(layer.R, before[name]) and layer.R.isfinite().all(), name


@pytest.mark.slow
def test_inference_bench_fused_model_matches_unfused():
    config = load_config(PretrainConfig, TINY)
    result = run_inference_bench(config, repeats=1, batch_size=2)
    assert result["max_abs_diff_vs_unfused"] <= 1e-4
    assert result["ratio"] == pytest.approx(result["fused_s"] / result["plain_s"])
    # equal work, as the ratio claims: the fused model does a plain ViT's arithmetic (no R product
    # left), counted here on a timm ViT built apart from the bench
    import timm

    vit = timm.create_model(config.model.encoder, pretrained=False, num_classes=0, img_size=config.model.img_size,
                            in_chans=config.model.in_chans, **dict(config.model.encoder_args)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vit(torch.randn(2, config.model.in_chans, config.model.img_size, config.model.img_size))
    assert result["flops"] == {"plain": counter.get_total_flops(), "fused": counter.get_total_flops()}


@pytest.mark.slow
def test_overhead_and_layer_bench_run_small():
    overhead = run_overhead_bench(load_config(PretrainConfig, TINY), steps=1, batch_size=4)
    assert overhead["framework_ratio"] == pytest.approx(overhead["mae_dbp_bp_step_s"] / overhead["plain_mae_step_s"])
    # equal work, as the ratio claims: our MAE in BP mode (no DBP layer) does the straightforward MAE's arithmetic
    assert overhead["flops"]["ours"] == overhead["flops"]["plain"] > 0
    result = run_decor_bench(repeats=1, tokens=64, images=2)
    assert (result["linear_ratio"], result["conv_ratio"]) == (result["vitb_qkv"]["ratio"], result["patch_embed"]["ratio"])
    for shape in ("vitb_qkv", "patch_embed"):  # one repeat: the ratio is that pair's DBP / plain seconds
        assert result[shape]["ratio"] == pytest.approx(result[shape]["dbp_s"] / result[shape]["plain_s"])


@pytest.mark.slow
def test_layer_bench_runs_the_low_rank_variant():
    result = run_decor_bench(repeats=1, shapes=["mlp_1000"], variant="low_rank", rank=4)
    assert (result["variant"], result["rank"]) == ("low_rank", 4)
    assert result["mlp_1000"]["form"] == "unfused"
    assert result["mlp_1000_ratio"] == pytest.approx(result["mlp_1000"]["dbp_s"] / result["mlp_1000"]["plain_s"])


@pytest.mark.slow
def test_layer_bench_accumulates_micro_batches_with_deferred_weight_gradients():
    result = run_decor_bench(repeats=1, shapes=["vitb_qkv"], tokens=64, micro_batches=3)
    assert result["micro_batches"] == 3 and result["vitb_qkv"]["micro_batches"] == 3
    assert result["vitb_qkv_ratio"] == pytest.approx(result["vitb_qkv"]["dbp_s"] / result["vitb_qkv"]["plain_s"])


def test_alternating_timer_reverses_the_order_every_round():
    from mae_dbp.bench.timing import alternating_samples, time_alternating

    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    samples = alternating_samples(steps, repeats=3, warmup=1, clock="cpu")
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3}
    assert all(v >= 0 for values in samples.values() for v in values)
    assert set(time_alternating(steps, repeats=2)) == {"a", "b"}
