"""DBP under torch.compile and without host syncs: one graph, no recompiles, the eager numbers, no
reads of device tensors in the R update whatever the number of decorrelated layers."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

from mae_dbp import decor
from mae_dbp.bench.host_reads import HostReads
from mae_dbp.config import DecorConfig, GuardConfig
from mae_dbp.models.mae import DecoderConfig, MAEConfig, build_mae, fixed_noise
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.train.schedules import WarmupCosine

SITES = ["patch_embed.proj", "blocks.*.attn.qkv", "blocks.*.mlp.fc1"]


def tiny_dbp_mae(depth: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    mae = build_mae(MAEConfig(encoder="vit_tiny_patch16_224", img_size=16, in_chans=2,
                              encoder_args={"embed_dim": 16, "depth": depth, "num_heads": 2, "patch_size": 4},
                              decoder=DecoderConfig(dim=16, depth=1, heads=2)))
    decor.apply(mae.encoder, SITES, lr=0.01, sample_frac=0.5)
    return mae


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.config.error_on_recompile = False
    torch._dynamo.reset()


@pytest.mark.slow
def test_dbp_mae_forward_is_one_graph(fresh_dynamo):
    mae = tiny_dbp_mae().train()
    explained = torch._dynamo.explain(mae)(torch.randn(4, 2, 16, 16))
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.slow
def test_compiled_training_does_not_recompile_and_matches_eager(fresh_dynamo):
    from mae_dbp.bench.device import torch_threads

    with torch_threads(1):  # restored after: later tests compare runs across processes
        _compiled_training_matches_eager()


def _compiled_training_matches_eager() -> None:
    mae = tiny_dbp_mae()
    compiled = torch.compile(mae)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    images = torch.randn(4, 2, 16, 16)
    r_before = mae.encoder.blocks[0].attn.qkv.R.clone()
    for step in range(4):
        if step == 1:  # the first step compiled forward and backward; later steps must reuse them
            torch._dynamo.config.error_on_recompile = True
        compiled.train()
        loss = compiled(images)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = decor.update(mae.encoder)
    assert len(metrics) == 1 + 2 * 2 and all(torch.isfinite(m) for m in metrics.values())
    assert not torch.equal(mae.encoder.blocks[0].attn.qkv.R, r_before)  # R learned from compiled subsamples
    torch._dynamo.config.error_on_recompile = False
    noise = fixed_noise(4, mae.num_patches, seed=1)
    mae.eval()
    with torch.no_grad():
        eager = mae(images, noise)[1]
        traced = compiled(images, noise)[1]
        with decor.explicit(mae):
            reference = mae(images, noise)[1]
    torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eager, reference, rtol=1e-4, atol=1e-5)


def _host_reads(depth: int, variant: str, dbp: bool) -> HostReads:
    """Host reads during 3 training steps of a tiny MAE (forward, backward, AdamW, R update)."""
    torch.manual_seed(0)
    mae = build_mae(MAEConfig(encoder="vit_tiny_patch16_224", img_size=16, in_chans=2,
                              encoder_args={"embed_dim": 16, "depth": depth, "num_heads": 2, "patch_size": 4},
                              decoder=DecoderConfig(dim=16, depth=1, heads=2)))
    cfg = DecorConfig(enabled=dbp, lr=0.01, sample_frac=0.5, variant=variant, rank=2, kappa=0.5)
    if dbp:
        decor.apply(mae.encoder, SITES, **cfg.layer_settings())
    policy = DecorPolicy(mae.encoder, cfg)
    schedule, guard = WarmupCosine(peak=1e-3, total_steps=10, warmup_steps=2), InstabilityGuard(GuardConfig())
    optimizer = torch.optim.AdamW(mae.parameters(), lr=1e-3)
    images = torch.randn(4, 2, 16, 16)
    mae.train()
    with HostReads() as reads:
        for step in range(3):
            loss = mae(images)[0]
            loss.backward()
            policy.before_step()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            policy.after_step(step, schedule, guard)
    assert len(policy.metrics) == (1 + 2 * depth if dbp else 0)
    return reads


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["standard", "gain", "low_rank"])
def test_host_reads_per_step_do_not_grow_with_the_dbp_layers(variant):
    # 3 and 9 decorrelated layers: DBP's forwards, backwards and R updates read nothing and add no
    # read to the BP step's own (torch's CPU AdamW reads each parameter's step count)
    for depth in (1, 4):
        dbp = _host_reads(depth, variant, dbp=True)
        assert dbp.from_modules("mae_dbp.decor", "mae_dbp.train.decor_policy") == 0, dict(dbp.by_module)
        assert dbp.count == _host_reads(depth, variant, dbp=False).count, depth

