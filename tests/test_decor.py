"""The DBP core against explicit matrix algebra, on real torch layers."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mae_dbp import decor
from mae_dbp.decor import DecorConv2d, DecorLinear
from tests.conftest import correlated, perturb_r, reference_step


# the three ways of computing the step: dense Zᵀ Z from rows (8 <= 2 d), from XᵀX (40 > 2 d), and
# the low-rank step Zᵀ (Z R) from the rows themselves (6 (6 + 20) < 20²)
@pytest.mark.parametrize("n,d", [(8, 6), (40, 6), (6, 20)])
@pytest.mark.parametrize("variant", decor.VARIANTS)
@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0])
def test_update_matches_explicit_rule(kappa, variant, n, d):
    layer = nn.Linear(d, 3).double()
    wrapped = DecorLinear.wrap(layer, decor.DecorSettings(kappa=kappa, lr=0.05, sample_frac=1.0, variant=variant, rank=2))
    x = correlated(n, d, seed=1)
    x = x / x.std()  # unit scale, so lr · |G| < 1 and R stays bounded over the steps
    r, u, v = wrapped.R.clone(), None, None
    if variant == "low_rank":
        u, v = wrapped.R_u.clone(), wrapped.R_v.clone()
    wrapped.train()
    for step in range(3):  # several steps so R != I enters the rule
        wrapped(x)
        model = nn.Sequential(wrapped)
        decor.update(model)
        r, u, v = reference_step(r, x, kappa, 0.05, variant, u, v)
        torch.testing.assert_close(wrapped.R, r, rtol=1e-10, atol=1e-12)
    if variant == "triangular":
        assert torch.equal(wrapped.R, torch.tril(wrapped.R))


def test_layers_of_one_width_updated_together_match_the_rule_each():
    """update() stacks the layers whose steps go through the rows path (same width and rows): each
    layer's own kappa, lr scale and variant still apply, and each R matches the explicit rule."""
    d, n = 20, 6  # 6 (6 + 20) < 20²: the rows path
    kinds = [(0.0, 1.0, "standard"), (0.5, 2.0, "standard"), (1.0, 0.5, "triangular"), (0.0, 1.0, "gain")]
    model = nn.Sequential(*[nn.Linear(d, d).double() for _ in kinds])
    for index, (kappa, scale, variant) in enumerate(kinds):
        model[index] = DecorLinear.wrap(model[index], decor.DecorSettings(
            kappa=kappa, lr=0.05, lr_scale=scale, sample_frac=1.0, variant=variant, seed=index))
    inputs = [correlated(n, d, seed=i) for i in range(len(kinds))]
    inputs = [x / x.std() for x in inputs]
    expected = [layer.R.clone() for layer in model]
    for _ in range(3):
        for layer, x in zip(model, inputs):
            layer(x)
        metrics = decor.update(model)
        for i, ((kappa, scale, variant), x) in enumerate(zip(kinds, inputs)):
            expected[i] = reference_step(expected[i], x, kappa, 0.05 * scale, variant)[0]
            torch.testing.assert_close(model[i].R, expected[i], rtol=1e-10, atol=1e-12)
    assert list(metrics) == ["0", "1", "2", "3"] and all(torch.isfinite(m) for m in metrics.values())


@pytest.mark.parametrize("variant", ["standard", "gain"])  # the stacked rows path and update_r
def test_site_lr_scale_multiplies_each_matching_layers_step_as_the_reference(variant):
    """``decor.site_lr_scale`` {glob: multiplier} from the config through :func:`decor.apply`: each
    layer's R takes the reference step at lr x its site's multiplier (3 and 0.25 here, 1 unmatched),
    also under a per-step lr override (the trainer's schedule)."""
    from mae_dbp.config import DecorConfig

    widths = [(6, 6), (6, 6), (6, 5)]
    model = nn.Sequential(*[nn.Linear(a, b) for a, b in widths]).double()
    cfg = DecorConfig(sites=["0", "1", "2"], site_lr_scale={"0": 3.0, "2": 0.25}, kappa=0.5, lr=0.05,
                      sample_frac=1.0, variant=variant)
    decor.apply(model, cfg.sites, **cfg.layer_settings())
    scales = {"0": 3.0, "1": 1.0, "2": 0.25}
    inputs = {name: correlated(8, 6, seed=i) / 4 for i, name in enumerate(scales)}
    expected = {name: torch.eye(6, dtype=torch.float64) for name in scales}
    for lr in (None, 0.02):
        for name, x in inputs.items():
            model.get_submodule(name).train()(x)
        decor.update(model, lr=lr)
        for name, scale in scales.items():
            expected[name] = reference_step(expected[name], inputs[name], 0.5, (lr or 0.05) * scale, variant)[0]
            torch.testing.assert_close(model.get_submodule(name).R, expected[name], rtol=1e-10, atol=1e-12,
                                       msg=f"layer {name} (scale {scale}), lr {lr}")


def test_metric_is_mean_squared_offdiagonal_correlation():
    x = correlated(500, 5, seed=2)
    layer = DecorLinear.wrap(nn.Linear(5, 2).double(), decor.DecorSettings(sample_frac=1.0, lr=0.0))
    layer.train()
    layer(x)
    metric = decor.update(nn.Sequential(layer))["0"]
    s = x.T @ x / len(x)
    corr = s / torch.sqrt(torch.outer(torch.diag(s), torch.diag(s)))
    off = corr[~torch.eye(5, dtype=torch.bool)]
    assert float(metric) == pytest.approx(float((off**2).mean()), rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("kappa", [0.0, 0.5])
def test_repeated_updates_decorrelate(kappa):
    d = 16
    x = correlated(4000, d, seed=3).float()
    layer = DecorLinear.wrap(nn.Linear(d, 4), decor.DecorSettings(kappa=kappa, lr=0.02, sample_frac=0.25, seed=1))
    model = nn.Sequential(layer).train()
    metrics = []
    for _ in range(1500):
        model(x)
        metrics.append(decor.update(model)["0"])
    z = x @ layer.R.T
    s = z.T @ z / len(z)
    final = decor.correlation_metric(s)
    assert final <= 0.1 * metrics[0], (metrics[0], final)
    if kappa == 0.5:
        variances = torch.diag(s)
        assert torch.all((variances - 1).abs() <= 0.1), variances


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (3, 2, 2), (4, 0, 1), (3, 0, 1), (3, 1, 1)])
def test_conv_wrapper_matches_unfold_reference(stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation).double()
    wrapped = DecorConv2d.wrap(conv, decor.DecorSettings(sample_frac=1.0))
    with torch.no_grad():
        wrapped.R.copy_(torch.eye(27, dtype=torch.float64) + 0.1 * torch.randn(27, 27, dtype=torch.float64))
    x = torch.randn(2, 3, 11, 13, dtype=torch.float64)
    wrapped.train()
    out = wrapped(x)
    # reference: unfold into patches, decorrelate each patch with R, then the kernel as D -> C_out
    patches = F.unfold(x, 3, dilation=dilation, padding=padding, stride=stride)  # (B, D, L)
    z = torch.einsum("ed,bdl->bel", wrapped.R, patches)
    ref = torch.einsum("od,bdl->bol", conv.weight.reshape(5, -1), z) + conv.bias[None, :, None]
    torch.testing.assert_close(out, ref.reshape(out.shape), rtol=1e-10, atol=1e-10)
    # the stored sample (all positions, sample_frac=1) is exactly the set of unfold patches
    expected = patches.permute(0, 2, 1).reshape(-1, 27)
    assert wrapped.subsample.kept_count() == expected.shape[0]
    torch.testing.assert_close(wrapped.subsample.kept_gram(), expected.T @ expected)
    sample = wrapped.subsample.kept_rows()
    assert (sample is None) == decor.gram_is_cheaper(expected.shape[0], 27)  # many rows: kept as XᵀX only
    if sample is not None:  # same multiset of rows: equal sorted row fingerprints
        fingerprint = torch.linspace(1, 2, 27, dtype=torch.float64)
        torch.testing.assert_close(torch.sort(sample @ fingerprint).values, torch.sort(expected @ fingerprint).values)


def _perturb_r(model: nn.Module) -> None:
    perturb_r(model, 0.05)


def test_fused_linear_and_conv_equal_unfused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 2, stride=2), nn.Flatten(), nn.Linear(64, 3)).double()
    names = decor.apply(model, ["*"])
    assert names == ["0", "2", "4"]
    _perturb_r(model)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    model.eval()
    with decor.explicit(model):  # the unfused reference W (R x), computed step by step
        expected = model(x)
    with decor.use_form(model, "fused"):  # the cached (W R) x path agrees
        torch.testing.assert_close(model(x), expected)
    decor.fuse(model)
    assert not decor.decor_modules(model)
    assert all(type(m) in (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten, nn.Sequential) for m in model.modules())
    assert not any(k.endswith(("R", "R_u", "R_v", "_extra_state")) for k in model.state_dict())
    assert (model(x) - expected).abs().max() <= 1e-5


def test_r_gets_no_gradient_and_is_not_a_parameter():
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    decor.apply(model, ["0", "2"], lr=0.01)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    param_ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for _, layer in decor.decor_modules(model):
        assert id(layer.R) not in param_ids and not layer.R.requires_grad
    assert len(param_ids) == 4
    model.train()
    before = model[0].weight.detach().clone()
    model(torch.randn(32, 8)).pow(2).mean().backward()
    assert model[0].R.grad is None and model[0].weight.grad is not None
    optimizer.step()
    decor.update(model)
    assert not torch.equal(model[0].weight, before)
    assert not torch.equal(model[0].R, torch.eye(8))


def test_weight_gradient_equals_autograd_through_w_r():
    torch.manual_seed(1)
    layer = nn.Linear(6, 4).double()
    ref_weight = layer.weight.detach().clone().requires_grad_()
    wrapped = DecorLinear.wrap(layer, decor.DecorSettings())
    r = torch.eye(6, dtype=torch.float64) + 0.2 * torch.randn(6, 6, dtype=torch.float64)
    wrapped.R.copy_(r)
    x = torch.randn(10, 6, dtype=torch.float64)
    wrapped(x).sin().sum().backward()
    F.linear(x @ r.T, ref_weight, layer.bias.detach()).sin().sum().backward()
    torch.testing.assert_close(wrapped.weight.grad, ref_weight.grad)


def test_fused_weight_cache_rebuilds_only_on_change():
    layer = DecorLinear.wrap(nn.Linear(4, 3), decor.DecorSettings(lr=0.1, sample_frac=1.0))
    model = nn.Sequential(layer)
    with torch.no_grad():
        first = layer.fused_weight()
        assert layer.fused_weight() is first  # unchanged W and R: the same cached tensor
        layer.weight.add_(1.0)
        second = layer.fused_weight()
        assert second is not first
        torch.testing.assert_close(second, layer.weight @ layer.R)
    model.train()
    model(torch.randn(20, 4) @ torch.randn(4, 4))
    decor.update(model)
    with torch.no_grad():
        torch.testing.assert_close(layer.fused_weight(), layer.weight @ layer.R)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 5), nn.Conv2d(1, 2, 2))
    decor.apply(model, ["0", "1"], variant="low_rank", rank=2)
    _perturb_r(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = nn.Sequential(nn.Linear(5, 5), nn.Conv2d(1, 2, 2))
    decor.apply(other, ["0", "1"], variant="low_rank", rank=2)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for (_, a), (_, b) in zip(decor.decor_modules(model), decor.decor_modules(other)):
        assert torch.equal(a.R, b.R) and torch.equal(a.R_u, b.R_u) and torch.equal(a.R_v, b.R_v)
        assert a.subsample.seed == b.subsample.seed
    x = torch.randn(3, 5)
    with torch.no_grad():
        torch.testing.assert_close(model[0](x), other[0](x))


def test_subsample_size_and_determinism():
    def sample(seed):
        layer = DecorLinear.wrap(nn.Linear(8, 2), decor.DecorSettings(sample_frac=0.1, seed=seed)).train()
        layer(torch.arange(800.0).reshape(100, 8))
        return layer.subsample.kept_rows()

    a, b, c = sample(0), sample(0), sample(1)
    assert a.shape == (10, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[:, 0].tolist())) == 10  # without replacement
    layer = DecorLinear.wrap(nn.Linear(3, 2), decor.DecorSettings()).train()
    with torch.no_grad():
        layer(torch.randn(10, 3))
    assert layer.subsample.kept_rows() is None  # no sample outside training with gradients


def test_bad_inputs_raise_clear_errors():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="'blocks.*' matches no module"):
        decor.apply(model, ["blocks.*"])
    with pytest.raises(ValueError, match=r"'1' matches no nn.Linear or nn.Conv2d, only: 1 \(LayerNorm\)"):
        decor.apply(model, ["1"])
    with pytest.raises(ValueError, match="groups=1"):
        decor.apply(model, ["2"])
    for frac in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"decor.sample_frac: expected a number in \(0, 1\]"):
            decor.apply(model, ["0"], sample_frac=frac)
    with pytest.raises(ValueError, match="decor.rank: expected an int >= 1"):
        decor.apply(model, ["0"], variant="low_rank", rank=0)
    with pytest.raises(ValueError, match="decor.variant: expected one of"):
        decor.apply(model, ["0"], variant="nope")
    assert type(model[0]) is nn.Linear  # nothing was wrapped by the failed calls


@pytest.mark.slow  # a fresh interpreter
def test_decor_imports_nothing_else_of_the_package():
    import subprocess
    import sys

    code = ("import sys, mae_dbp.decor as d; d.apply, d.update, d.fuse, d.DecorConv2d, d.fused_state_dict; "
            "print(sorted(m for m in sys.modules if m.startswith(('mae_dbp', 'segmentation', 'data_tools'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = eval(loaded)
    assert modules and all(m == "mae_dbp" or m.startswith("mae_dbp.decor") for m in modules), modules


# ---- the API's edges: error messages, plain states, fused states (found by mutation testing) -------


def _error(call) -> str:
    with pytest.raises(decor.DecorError) as caught:
        call()
    return str(caught.value)


def test_apply_errors_name_the_pattern_and_what_it_found():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Conv2d(2, 2, 3, groups=2), *[nn.LayerNorm(4) for _ in range(4)])
    assert decor.apply(copy_of(model), "0") == ["0"]  # a single pattern as a str
    assert _error(lambda: decor.apply(model, ["nothing"])) == "decor pattern 'nothing' matches no module of Sequential"
    assert _error(lambda: decor.apply(model, ["1"])) == "decor pattern '1' matches no nn.Linear or nn.Conv2d, only: 1 (ReLU)"
    assert _error(lambda: decor.apply(model, ["[3-6]"])) == (
        "decor pattern '[3-6]' matches no nn.Linear or nn.Conv2d, only: 3 (LayerNorm), 4 (LayerNorm), 5 (LayerNorm)")
    assert _error(lambda: decor.apply(model, ["2"])) == "decor layer '2': DBP on Conv2d needs groups=1, got groups=2"
    assert _error(lambda: decor.apply(model, ["0"], lr_scales={"9": 2.0})) == (
        "decor lr scale pattern '9' matches none of the decorrelated layers (0)")
    five = nn.Sequential(*[nn.Linear(3, 3) for _ in range(5)])
    assert _error(lambda: decor.apply(five, ["*"], lr_scales={"x": 2.0})) == (
        "decor lr scale pattern 'x' matches none of the decorrelated layers (0, 1, 2, 3, ...)")
    assert type(model[0]) is nn.Linear  # a refused apply wraps nothing


def copy_of(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


@pytest.mark.parametrize("settings, message", [
    ({"sample_frac": 0.0}, "decor.sample_frac: expected a number in (0, 1], got 0.0"),
    ({"sample_frac": 1.5}, "decor.sample_frac: expected a number in (0, 1], got 1.5"),
    ({"kappa": -0.1}, "decor.kappa: expected a number in [0, 1], got -0.1"),
    ({"kappa": 1.5}, "decor.kappa: expected a number in [0, 1], got 1.5"),
    ({"lr": -1e-3}, "decor.lr: expected a number >= 0, got -0.001"),
    ({"lr_scale": -1.0}, "decor.lr_scale: expected a number >= 0, got -1.0"),
    ({"variant": "whiten"}, "decor.variant: expected one of standard, gain, triangular, low_rank, got 'whiten'"),
    ({"variant": "low_rank", "rank": 0}, "decor.rank: expected an int >= 1 for the low_rank variant, got 0"),
])
def test_settings_refuse_out_of_range_values_by_name(settings, message):
    assert _error(lambda: decor.DecorSettings(**settings)) == message


def test_settings_accept_their_range_ends_and_replace_keeps_the_rest():
    for ok in ({"sample_frac": 1.0, "kappa": 0.0, "lr": 0.0, "lr_scale": 0.0}, {"kappa": 1.0},
               {"variant": "standard", "rank": 0}, {"variant": "low_rank", "rank": 1}):
        decor.DecorSettings(**ok)
    base = decor.DecorSettings(kappa=0.5, lr=0.01, sample_frac=0.5, variant="gain", seed=3)
    assert base.replace(seed=4) == decor.DecorSettings(kappa=0.5, lr=0.01, sample_frac=0.5, variant="gain", seed=4)
    assert decor.DecorSettings() == decor.DecorSettings(kappa=0.0, lr=decor.DEFAULT_LR, lr_scale=1.0, sample_frac=0.1,
                                                        variant="standard", rank=16, seed=0)


@pytest.mark.parametrize("variant", ["standard", "low_rank"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_a_plain_layers_state_loads_as_r_identity_and_an_empty_subsample(kind, variant):
    torch.manual_seed(0)
    plain = nn.Linear(6, 3) if kind == "linear" else nn.Conv2d(2, 3, 3)
    x = torch.randn(4, 6) if kind == "linear" else torch.randn(2, 2, 5, 5)
    settings = decor.DecorSettings(variant=variant, rank=2, sample_frac=1.0)
    layer = (DecorLinear if kind == "linear" else DecorConv2d).wrap(copy_of(plain), settings).double()
    layer.train()(x.double())  # a kept subsample and a cached fused weight, both to be replaced
    with torch.no_grad():
        layer.weight.mul_(2.0)
        if variant == "low_rank":
            layer.R_u.normal_()
            layer.R.copy_(torch.eye(layer.decor_dim, dtype=torch.float64) + layer.R_u @ layer.R_v.T)
        else:
            layer.R.add_(0.1)
    v = layer.R_v.clone() if variant == "low_rank" else None
    layer.load_state_dict({k: t.double() for k, t in plain.state_dict().items()}, strict=True)
    assert torch.equal(layer.R, torch.eye(layer.decor_dim, dtype=torch.float64))
    assert layer.subsample.kept_rows() is None and layer.subsample.kept_count() == 0
    if variant == "low_rank":
        assert not layer.R_u.any() and torch.equal(layer.R_v, v) and layer._low_rank_started is False
    with torch.no_grad():  # the same function as the plain layer, in either form (no stale fused weight)
        for form in ("fused", "unfused"):
            layer.form = form
            torch.testing.assert_close(layer.eval()(x.double()), plain.double()(x.double()), rtol=1e-12, atol=1e-12)


def test_a_low_rank_state_sets_the_started_flag_from_its_u():
    settings = decor.DecorSettings(variant="low_rank", rank=2)
    source = DecorLinear.wrap(nn.Linear(6, 3), settings)
    target = DecorLinear.wrap(nn.Linear(6, 3), settings)
    target.load_state_dict(source.state_dict())
    assert target._low_rank_started is False  # U = 0: the first step still starts V at eigenvectors
    with torch.no_grad():
        source.R_u.fill_(0.1)
    target.load_state_dict(source.state_dict())
    assert target._low_rank_started is True


def test_fused_state_dict_is_the_fused_models_state_dict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 3 * 3, 5), nn.Linear(5, 4), nn.Linear(4, 2))
    decor.apply(model, ["0", "2"], sample_frac=1.0)
    perturb_r(model, 0.1)
    decor.apply(model, ["3"], variant="low_rank", rank=2)
    with torch.no_grad():  # a low-rank R is I + U Vᵀ, whose factors fuse() uses
        model[3].R_u.normal_()
        model[3].R.copy_(torch.eye(5) + model[3].R_u @ model[3].R_v.T)
    model.train()(torch.randn(2, 2, 5, 5))  # kept subsamples: their entries must go too
    state = model.state_dict()
    fused = decor.fused_state_dict(state)
    expected = decor.fuse(copy_of(model)).state_dict()
    assert list(fused) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(fused[key], value, rtol=1e-6, atol=1e-6, msg=key)
    assert fused["4.weight"] is state["4.weight"]  # plain entries pass through
    assert decor.fused_state_dict(fused) == fused  # a plain state is left alone


def test_sample_stats_survive_the_flat_round_trip_of_the_all_reduce():
    from mae_dbp.decor.matrix import SampleStats

    d = 3
    stats = SampleStats(torch.arange(9.0).reshape(d, d), torch.tensor(7.0), torch.tensor(4.0))
    flat = stats.flat()
    assert flat.shape == (d * d + 2,) and flat.tolist() == list(range(9)) + [7.0, 4.0]
    back = SampleStats.from_flat(flat, d)
    assert torch.equal(back.zz, stats.zz) and back.xx.item() == 7.0 and back.count.item() == 4.0


def test_ranks_agree_without_distributed_is_true():
    model = nn.Sequential(nn.Linear(3, 3))
    decor.apply(model, ["0"])
    assert decor.ranks_agree(model) is True and decor.ranks_agree(nn.Sequential(nn.Linear(3, 3))) is True


@pytest.mark.parametrize("variant", ["standard", "gain", "low_rank"])
def test_a_layer_without_a_sample_keeps_its_r_and_reports_nan(variant):
    """update() steps only the layers that kept rows since the last update; one whose forward did
    not run (or ran in eval mode) keeps R bit for bit and reports a nan metric."""
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6)).double()
    decor.apply(model, ["0", "1"], lr=0.05, sample_frac=1.0, variant=variant, rank=2)
    model[0].train()(correlated(8, 6, seed=1))
    with torch.no_grad():
        model[1].eval()(correlated(8, 6, seed=2))  # no sample outside training
    before = model[1].R.clone()
    metrics = decor.update(model)
    assert torch.isfinite(metrics["0"]) and torch.isnan(metrics["1"])
    assert torch.equal(model[1].R, before) and not torch.equal(model[0].R, torch.eye(6, dtype=torch.float64))
