"""Cost-adaptive DBP layers (fused / unfused form by shape) and R updates from summed subsamples."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mae_dbp import decor
from mae_dbp.decor import DecorConv2d, DecorLinear
from tests.conftest import correlated, perturb_r, reference_step


def test_form_rule_at_the_issue_shapes():
    # ViT-B MAE batch: 12,544 tokens, qkv 768 -> 2304 and fc1 768 -> 3072: fused
    assert decor.fused_is_cheaper(12544, 768, 2304, cached=False)
    assert decor.fused_is_cheaper(12544, 768, 3072, cached=False)
    # zoo MLP hidden layer, 256 rows, 1000 -> 1000: unfused (2·256·d² against 2·1000·d²)
    assert not decor.fused_is_cheaper(256, 1000, 1000, cached=False)
    assert not decor.fused_is_cheaper(256, 1000, 1000, cached=True)  # W's gradient dA Rᵀ alone costs more
    # its first layer (input without gradient) too, its classifier (1000 -> 10) fused
    assert not decor.fused_is_cheaper(256, 256, 1000, cached=False, input_grad=False)
    assert decor.fused_is_cheaper(256, 1000, 10, cached=False)
    # one build shared by 16 micro-batches (rows 600): fused; built per forward: unfused
    assert decor.fused_is_cheaper(600, 1000, 1000, cached=False, forwards_per_build=16)
    assert not decor.fused_is_cheaper(600, 1000, 1000, cached=False, forwards_per_build=1)
    # evaluation (no gradients): an up-to-date A is free
    assert decor.fused_is_cheaper(8, 1000, 1000, cached=True, weight_grad=False, input_grad=False)
    assert not decor.fused_is_cheaper(8, 1000, 1000, cached=False, weight_grad=False, input_grad=False)


def _flops(layer: nn.Module, x: torch.Tensor) -> int:
    """Multiply-add FLOPs of one forward + backward, counted by torch's dispatcher (an independent reference)."""
    with FlopCounterMode(display=False) as counter:
        layer(x).square().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("rows,d,out", [(8, 32, 32), (64, 32, 8), (16, 32, 64), (100, 16, 16), (40, 32, 24)])
@pytest.mark.parametrize("input_grad", [True, False])
def test_rule_agrees_with_counted_flops_and_auto_takes_the_cheaper(rows, d, out, input_grad):
    torch.manual_seed(0)
    plain = nn.Linear(d, out).double()
    x = torch.randn(rows, d, dtype=torch.float64, requires_grad=input_grad)
    counted = {}
    for form in ("fused", "unfused", "auto"):  # a fresh layer each: A = W R not built yet, as after a step
        layer = DecorLinear.wrap(plain, decor.DecorSettings()).eval()  # eval: no subsample, same matmuls
        layer.form = form
        counted[form] = _flops(layer, x)
    extra_fused, extra_unfused = counted["fused"] - _flops(plain, x), counted["unfused"] - _flops(plain, x)
    assert extra_fused == 2 * 2 * out * d * d  # build A, and W's gradient dA Rᵀ (2 FLOPs per multiply-add)
    assert extra_unfused == 2 * rows * d * d * (2 if input_grad else 1)
    rule = decor.fused_is_cheaper(rows, d, out, cached=False, input_grad=input_grad)
    assert rule == (counted["fused"] <= counted["unfused"])
    assert counted["auto"] == min(counted["fused"], counted["unfused"])


def _outputs_and_grads(layer: nn.Module, x: torch.Tensor, form: str):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    with decor.use_form(layer, form):
        out = layer(x)
    out.sin().sum().backward()
    return out.detach(), x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_both_forms_give_equal_outputs_and_gradients(kind):
    torch.manual_seed(0)
    if kind == "linear":
        layer = DecorLinear.wrap(nn.Linear(12, 5).double(), decor.DecorSettings())
        x = torch.randn(3, 7, 12, dtype=torch.float64)
        r = torch.eye(12, dtype=torch.float64) + 0.2 * torch.randn(12, 12, dtype=torch.float64)
    else:
        layer = DecorConv2d.wrap(nn.Conv2d(2, 4, 3, stride=2, padding=1).double(), decor.DecorSettings())
        x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
        r = torch.eye(18, dtype=torch.float64) + 0.2 * torch.randn(18, 18, dtype=torch.float64)
    layer.R.copy_(r)
    layer.train()
    fused = _outputs_and_grads(layer, x, "fused")
    unfused = _outputs_and_grads(layer, x, "unfused")
    for a, b in zip(fused, unfused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if kind == "linear":  # and both against explicit algebra: y = W (R x) + b
        w = layer.weight.detach().clone().requires_grad_()
        xr = x.detach().clone().requires_grad_()
        ref = xr @ r.T @ w.T + layer.bias.detach()
        ref.sin().sum().backward()
        for got, want in zip(fused[:3], (ref.detach(), xr.grad, w.grad)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _low_rank_layer(kind: str, rank: int = 3):
    """A low_rank layer with non-zero factors U, V (R = I + U Vᵀ kept consistent) and an input."""
    g = torch.Generator().manual_seed(3)
    if kind == "linear":
        layer = DecorLinear.wrap(nn.Linear(16, 5).double(), decor.DecorSettings(variant="low_rank", rank=rank))
        x = torch.randn(3, 7, 16, dtype=torch.float64, generator=g)
    else:
        layer = DecorConv2d.wrap(nn.Conv2d(2, 4, 3, stride=2, padding=1).double(),
                                 decor.DecorSettings(variant="low_rank", rank=rank))
        x = torch.randn(2, 2, 9, 8, dtype=torch.float64, generator=g)
    with torch.no_grad():
        layer.R_u.copy_(0.3 * torch.randn(layer.R_u.shape, dtype=torch.float64, generator=g))
        layer.R.copy_(torch.eye(layer.decor_dim, dtype=torch.float64) + layer.R_u @ layer.R_v.T)
    return layer.train(), x


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_low_rank_factored_forms_equal_the_dense_r(kind):
    layer, x = _low_rank_layer(kind)
    assert layer.factors() is not None  # rank 3 < d / 2: products go through U, V
    dense = copy.deepcopy(layer)
    dense.settings = decor.DecorSettings(variant="standard")  # the same R, used as a d x d matrix
    assert dense.factors() is None
    reference = _outputs_and_grads(dense, x, "unfused")
    for form in ("fused", "unfused"):
        for got, want in zip(_outputs_and_grads(layer, x, form), reference):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_low_rank_factors_cut_the_counted_flops():
    torch.manual_seed(0)
    rows, d, out, rank = 64, 128, 128, 4
    x = torch.randn(rows, d, dtype=torch.float64, requires_grad=True)
    plain = nn.Linear(d, out).double()
    for form, extra in (("unfused", 2 * rows * 2 * d * rank * 2), ("fused", 2 * out * 2 * d * rank * 2)):
        layer = DecorLinear.wrap(plain, decor.DecorSettings(variant="low_rank", rank=rank)).eval()
        layer.form = form
        # z = x + (x V) Uᵀ and its input gradient (unfused), or A = W + (W U) Vᵀ and dA + (dA V) Uᵀ
        # (fused): 2·d·rank multiply-adds per row each, instead of d²
        assert _flops(layer, x) - _flops(plain, x) == extra


def test_update_cost_rule_with_low_rank_factors():
    assert decor.rows_update_is_cheaper(26, 1000)  # zoo MLP: 26 rows, full R
    assert not decor.rows_update_is_cheaper(1254, 768)  # ViT-B qkv subsample: dense S
    assert decor.rows_update_is_cheaper(700, 1000, rank=16)  # with factors: rows up to about d
    assert not decor.rows_update_is_cheaper(1254, 768, rank=16)


def test_auto_form_follows_the_shape_rule_in_training():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))
    decor.apply(model, ["0", "2"])
    model.train()
    model(torch.randn(8, 64)).sum().backward()  # 8 rows: unfused for 64 -> 64, fused for 64 -> 4
    assert (model[0].last_form, model[2].last_form) == ("unfused", "fused")
    assert not decor.fused_is_cheaper(8, 64, 64, cached=False, input_grad=False)
    assert decor.fused_is_cheaper(8, 64, 4, cached=False)
    assert model[0].forms.fused is None  # the unfused layer never built A
    model(torch.randn(512, 64)).sum().backward()  # many rows: fused everywhere
    assert (model[0].last_form, model[2].last_form) == ("fused", "fused")


# rows (n <= 2 d, dense), Gram (n > 2 d), low-rank rows (n (n + d) < d²): k forwards, then one update
@pytest.mark.parametrize("rows_per_step,d", [(4, 6), (10, 6), (3, 24)])
@pytest.mark.parametrize("variant", decor.VARIANTS)
@pytest.mark.parametrize("kappa", [0.0, 0.5])
def test_k_step_statistics_equal_one_update_on_the_concatenated_rows(rows_per_step, d, variant, kappa):
    k, lr = 3, 0.05
    layer = DecorLinear.wrap(nn.Linear(d, 3).double(),
                             decor.DecorSettings(kappa=kappa, lr=lr, sample_frac=1.0, variant=variant, rank=2))
    low_rank = variant == "low_rank"
    if not low_rank:  # a general R (low_rank keeps R = I + U Vᵀ, here U = 0)
        perturb_r(nn.Sequential(layer), 0.1, torch.Generator().manual_seed(5))
    model = nn.Sequential(layer).train()
    r = layer.R.clone()
    u, v = (layer.R_u.clone(), layer.R_v.clone()) if low_rank else (None, None)
    batches = [correlated(rows_per_step, d, seed=10 + i) for i in range(k)]
    for x in batches:  # k optimizer steps' forwards, no update in between
        model(x)
    assert layer.subsample.kept_count() == k * rows_per_step
    decor.update(model)
    expected, _, _ = reference_step(r, torch.cat(batches), kappa, lr, variant, u, v)
    torch.testing.assert_close(layer.R, expected, rtol=1e-10, atol=1e-12)
    assert layer.subsample.kept_count() == 0 and layer.subsample.kept_gram() is None  # forgotten after the update


def test_subsampled_rows_of_all_micro_batches_are_used():
    d, frac = 10, 0.3
    layer = DecorLinear.wrap(nn.Linear(d, 2).double(), decor.DecorSettings(lr=0.1, sample_frac=frac, seed=7))
    model = nn.Sequential(layer).train()
    batches = [correlated(20, d, seed=i) for i in range(4)]
    g = torch.Generator().manual_seed(7)
    drawn = [x[torch.randperm(20, generator=g)[:6]] for x in batches]  # ceil(0.3 · 20) rows each, as the layer draws
    for x in batches:
        model(x)
    decor.update(model)
    expected, _, _ = reference_step(torch.eye(d, dtype=torch.float64), torch.cat(drawn), 0.0, 0.1, "standard")
    torch.testing.assert_close(layer.R, expected, rtol=1e-10, atol=1e-12)


def test_rows_path_metric_equals_dense_metric():
    z = correlated(7, 30, seed=4)
    s = z.T @ z / 7
    from mae_dbp.decor.matrix import SampleRows, SampleStats, update_r

    settings = decor.DecorSettings(lr=0.0)
    r = torch.eye(30, dtype=torch.float64)
    rows_metric = update_r(r.clone(), SampleRows(z, (z * z).sum()), settings, 0.0)
    dense_metric = update_r(r.clone(), SampleStats(z.T @ z, (z * z).sum(), torch.tensor(7.0, dtype=torch.float64)), settings, 0.0)
    assert float(rows_metric) == pytest.approx(float(dense_metric), rel=1e-10)
    assert float(dense_metric) == pytest.approx(float(decor.correlation_metric(s)), rel=1e-12)


@pytest.mark.parametrize("n", [5, 50])  # kept as rows / folded into XᵀX
def test_kept_subsample_survives_a_state_dict_round_trip(n):
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 3))
        decor.apply(model, ["0"], lr=0.1, sample_frac=1.0)
        return model.train()

    model, other = build(), build()
    model(correlated(n, 8, seed=1).float())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x = correlated(n, 8, seed=2).float()
    for m in (model, other):
        m(x)
        decor.update(m)
    assert not torch.equal(model[0].R, torch.eye(8))
    assert torch.equal(model[0].R, other[0].R)


def test_bad_form_is_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4))
    decor.apply(model, ["0"])
    with pytest.raises(ValueError, match="decor form must be one of auto, fused, unfused"):
        with decor.use_form(model, "fast"):
            pass
    assert model[0].form == "auto"
    x = torch.randn(3, 4)
    with torch.no_grad(), decor.explicit(model):
        assert model[0].form == "unfused"
        torch.testing.assert_close(model(x), F.linear(x @ model[0].R.T, model[0].weight, model[0].bias))
    assert model[0].form == "auto"


def test_build_of_a_is_spread_over_the_forwards_that_share_it():
    layer = DecorLinear.wrap(nn.Linear(64, 64), decor.DecorSettings()).eval()
    x = torch.randn(8, 64)
    with torch.no_grad():  # validation batches of 8 rows at one W, R: A = W R pays off once 8 share it
        picks = []
        for _ in range(10):
            layer(x)
            picks.append(layer.last_form)
        assert picks == ["unfused"] * 7 + ["fused"] * 3
        assert decor.fused_is_cheaper(8, 64, 64, cached=False, forwards_per_build=8, weight_grad=False, input_grad=False)
        assert layer.forms.fused is not None  # built at the 8th forward, reused after


def test_policy_updates_every_k_steps_from_all_their_subsamples():
    from mae_dbp.config import DecorConfig, GuardConfig
    from mae_dbp.train.decor_policy import DecorPolicy
    from mae_dbp.train.guard import InstabilityGuard
    from mae_dbp.train.schedules import WarmupCosine

    model = nn.Sequential(nn.Linear(6, 2).double())
    decor.apply(model, ["0"], sample_frac=1.0)
    policy = DecorPolicy(model, DecorConfig(lr=0.01, update_every=3))
    schedule, guard = WarmupCosine(peak=1e-3, total_steps=10), InstabilityGuard(GuardConfig())
    batches = [correlated(5, 6, seed=20 + i) / 4 for i in range(6)]
    r = model[0].R.clone()
    for step, x in enumerate(batches):
        model.train()(x)
        policy.after_step(step, schedule, guard)
        if step % 3 == 2:  # after steps 3 and 6: one step from their 3 x 5 rows, with 3 x the R lr
            r, _, _ = reference_step(r, torch.cat(batches[step - 2 : step + 1]), 0.0, 0.03, "standard")
        torch.testing.assert_close(model[0].R, r, rtol=1e-10, atol=1e-12)
    assert not torch.equal(r, torch.eye(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="decor.update_every"):
        DecorConfig(update_every=0)


def _accumulated_grads(layer: nn.Module, batches: list[torch.Tensor], defer: bool):
    """W.grad, bias grad and the inputs' grads after backwards over all micro-batches (and the finish)."""
    layer.zero_grad(set_to_none=True)
    decor.defer_weight_grads(layer, defer)
    inputs = [x.detach().clone().requires_grad_() for x in batches]
    for x in inputs:
        layer(x).sin().sum().backward()
    changed = decor.finish_weight_grads(layer)
    return changed, layer.weight.grad.clone(), layer.bias.grad.clone(), [x.grad for x in inputs]


@pytest.mark.parametrize("kind", ["linear", "conv", "low_rank"])
def test_deferred_weight_gradient_equals_the_per_backward_one(kind):
    torch.manual_seed(0)
    if kind == "conv":
        layer = DecorConv2d.wrap(nn.Conv2d(2, 4, 3, padding=1).double(), decor.DecorSettings())
        batches = [torch.randn(2, 2, 6, 5, dtype=torch.float64) for _ in range(3)]
    else:
        settings = decor.DecorSettings(variant="low_rank", rank=2) if kind == "low_rank" else decor.DecorSettings()
        layer = DecorLinear.wrap(nn.Linear(12, 5).double(), settings)
        batches = [torch.randn(4, 12, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        if kind == "low_rank":
            layer.R_u.normal_(0, 0.3)
            layer.R.copy_(torch.eye(12, dtype=torch.float64) + layer.R_u @ layer.R_v.T)
        else:
            perturb_r(nn.Sequential(layer), 0.2)
    layer.eval()  # no subsample: the same matmuls in both runs
    layer.form = "fused"
    changed, *deferred = _accumulated_grads(layer, batches, defer=True)
    assert changed == 1
    unchanged, *immediate = _accumulated_grads(layer, batches, defer=False)
    assert unchanged == 0
    for got, want in zip(deferred[:2] + deferred[2], immediate[:2] + immediate[2]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if kind == "linear":  # and against explicit algebra: dL/dW = sum_i dy_iᵀ (x_i Rᵀ)
        r = layer.R.detach()
        w = layer.weight.detach().clone().requires_grad_()
        sum(((x @ r.T) @ w.T + layer.bias.detach()).sin().sum() for x in batches).backward()
        torch.testing.assert_close(deferred[0], w.grad, rtol=1e-10, atol=1e-12)


def test_deferred_weight_gradient_keeps_one_form_per_step_and_refuses_a_mix():
    torch.manual_seed(0)
    # 8 rows per micro-batch through 64 -> 64: unfused once per backward (2·8·d² < 2·64·d²) ...
    assert not decor.fused_is_cheaper(8, 64, 64, cached=False, forwards_per_build=1, deferred_weight_grad=True)
    # ... fused when the build and W's gradient are both shared by 16 micro-batches (64·d²/8 < 2·8·d²)
    assert decor.fused_is_cheaper(8, 64, 64, cached=False, forwards_per_build=16, deferred_weight_grad=True)
    assert not decor.fused_is_cheaper(8, 64, 64, cached=False, forwards_per_build=16)
    layer = DecorLinear.wrap(nn.Linear(64, 64), decor.DecorSettings()).train()
    decor.defer_weight_grads(layer)
    layer(torch.randn(8, 64)).sum().backward()
    assert layer.last_form == "unfused"
    layer(torch.randn(512, 64)).sum().backward()  # alone it would take fused; within the step it follows
    assert layer.last_form == "unfused"
    assert decor.finish_weight_grads(layer) == 0  # unfused backwards gave dL/dW already
    layer(torch.randn(512, 64)).sum().backward()  # a new step: its own choice
    assert layer.last_form == "fused"
    with decor.use_form(layer, "unfused"):  # forcing the other form within the step mixes the two
        layer(torch.randn(8, 64)).sum().backward()
    with pytest.raises(RuntimeError, match="both forms"):
        decor.finish_weight_grads(layer)
