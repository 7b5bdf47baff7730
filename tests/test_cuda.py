"""On a CUDA GPU (marked ``cuda``: skipped elsewhere; ``tools/gpu_check.sh`` runs them): the DBP
layers compute what they compute on the CPU, and a compiled DBP MAE trains."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.bench.compile_stats import CompileWatch
from mae_dbp.bench.pretrain_step import training_step
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.pretrain import build_model
from tests.conftest import tiny_pretrain

pytestmark = pytest.mark.cuda


@pytest.fixture
def exact_float32():
    """float32 matmuls and convolutions without TF32 (cuDNN allows it by default), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("kind", ["linear", "patch_embed"])
def test_dbp_layer_forward_backward_update_on_cuda_equal_cpu(kind, exact_float32):
    torch.manual_seed(0)
    if kind == "linear":
        model, x = nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 16)), torch.randn(512, 48)
        sites = ["0", "2"]
    else:
        model, x = nn.Sequential(nn.Conv2d(3, 32, 8, stride=8), nn.Flatten(), nn.Linear(32 * 16, 10)), torch.randn(8, 3, 32, 32)
        sites = ["0"]
    # every row in the subsample, so the statistics do not depend on which generator drew it
    decor.apply(model, sites, sample_frac=1.0, kappa=0.5, lr=0.05)
    gpu = copy.deepcopy(model).cuda()
    results = {}
    for name, net, inputs in (("cpu", model, x.clone()), ("cuda", gpu, x.cuda())):
        inputs.requires_grad_(True)
        out = net.train()(inputs)
        out.square().mean().backward()
        decor.finish_weight_grads(net)
        decor.update(net)
        results[name] = {"out": out.detach().cpu(), "input_grad": inputs.grad.cpu(),
                         **{f"{n}.R": layer.R.cpu() for n, layer in decor.decor_modules(net)},
                         **{f"{n}.grad": p.grad.cpu() for n, p in net.named_parameters()}}
    for key, value in results["cpu"].items():
        torch.testing.assert_close(results["cuda"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert not torch.equal(results["cpu"][f"{sites[0]}.R"], torch.eye(results["cpu"][f"{sites[0]}.R"].shape[0]))


def test_compiled_dbp_mae_trains_on_cuda_in_bf16():
    config = tiny_pretrain(None)
    torch.manual_seed(0)
    model = build_model(config)[0].cuda()
    images = torch.randn(16, 2, 32, 32, device="cuda")
    watch = CompileWatch()
    watch.start()
    step = training_step(model, images, DecorPolicy(model.encoder, config.decor), "bf16", torch.compile(model))
    for _ in range(5):
        step()
    watch.warmed_up()
    with torch.no_grad():
        loss = float(model(images)[0])
    r = dict(decor.decor_modules(model.encoder))["blocks.0.attn.qkv"].R
    assert r.dtype == torch.float32 and not torch.equal(r, torch.eye(r.shape[0], device="cuda"))
    assert loss == loss and loss < 10, loss  # finite
    print("compiled DBP MAE on CUDA:", watch.record())
