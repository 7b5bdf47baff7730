"""Put DBP on a model by module-name patterns, run the R updates, and fuse it back to a plain model.

    names = apply(model, ["blocks.*.attn.qkv", "blocks.*.mlp.fc1"], kappa=0.0, lr=5e-4)
    ... loss.backward(); optimizer.step(); metrics = update(model)   # after every optimizer step
    plain = fuse(model)                                              # W <- W R, no DBP left

To update R only every k optimizer steps, call ``update`` every k-th step: the subsamples of all
training forwards since the last update are summed, so nothing drawn is wasted.

Patterns are ``fnmatch`` globs over qualified module names (``*`` also crosses dots).
"""

from __future__ import annotations

from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Iterable, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn

from mae_dbp.decor.conv import DecorConv2d
from mae_dbp.decor.errors import DecorError
from mae_dbp.decor.layers import DecorLinear, DecorMixin
from mae_dbp.decor.matrix import SampleStats, update_r_stacked
from mae_dbp.decor.settings import DecorSettings

_WRAPPERS: dict[type, type] = {nn.Linear: DecorLinear, nn.Conv2d: DecorConv2d}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def decor_modules(model: nn.Module) -> list[tuple[str, DecorMixin]]:
    """(qualified name, layer) of every decorrelated layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, DecorMixin)]


def apply(model: nn.Module, patterns: Iterable[str], lr_scales: Mapping[str, float] | None = None,
          **settings) -> list[str]:
    """Wrap the ``nn.Linear`` / ``nn.Conv2d`` modules whose names match ``patterns``, in place.

    Settings are :class:`DecorSettings` fields; each layer's subsample seed is ``seed + index``.
    ``lr_scales`` {pattern: multiplier} gives the layers whose name a pattern matches that
    multiplier of every R step (a per-site R lr; the first matching pattern wins, else
    ``lr_scale``). Returns the wrapped names. Raises :class:`DecorError` (a ValueError) for a pattern
    that matches nothing, a pattern that matches only other module types, or an unsupported layer.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    base = DecorSettings(**settings)
    scales = dict(lr_scales or {})
    named = [(n, m) for n, m in model.named_modules() if n]
    chosen: list[str] = []
    for pattern in patterns:
        matches = [(n, m) for n, m in named if fnmatchcase(n, pattern)]
        if not matches:
            raise DecorError(f"decor pattern {pattern!r} matches no module of {type(model).__name__}")
        layers = [n for n, m in matches if type(m) in _WRAPPERS or isinstance(m, DecorMixin)]
        if not layers:
            found = ", ".join(f"{n} ({type(m).__name__})" for n, m in matches[:3])
            raise DecorError(
                f"decor pattern {pattern!r} matches no nn.Linear or nn.Conv2d, only: {found}"
            )
        chosen += [n for n in layers if n not in chosen]
    for pattern in scales:
        if not any(fnmatchcase(n, pattern) for n in chosen):
            raise DecorError(f"decor lr scale pattern {pattern!r} matches none of the decorrelated layers "
                             f"({', '.join(chosen[:4])}{', ...' if len(chosen) > 4 else ''})")
    for name in chosen:
        module = model.get_submodule(name)
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise DecorError(f"decor layer {name!r}: DBP on Conv2d needs groups=1, got groups={module.groups}")
    wrapped = []
    for index, name in enumerate(chosen):
        module = model.get_submodule(name)
        if isinstance(module, DecorMixin):
            continue
        scale = next((float(v) for p, v in scales.items() if fnmatchcase(name, p)), base.lr_scale)
        layer_settings = base.replace(seed=base.seed + index, lr_scale=scale)
        _set_submodule(model, name, _WRAPPERS[type(module)].wrap(module, layer_settings))
        wrapped.append(name)
    return wrapped


def _all_reduce_stats(stats: list[SampleStats], dims: list[int]) -> list[SampleStats]:
    """Sum the statistics of every layer over all processes with one all-reduce."""
    flat = torch.cat([s.flat() for s in stats])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for d in dims:
        size = d * d + 2
        out.append(SampleStats.from_flat(flat[offset : offset + size], d))
        offset += size
    return out


def update(model: nn.Module, lr: float | None = None) -> dict[str, torch.Tensor]:
    """One R step on every decorrelated layer from the subsamples of its training forwards since
    the last update (one forward, several micro-batches, or the k steps of ``update_every``).

    ``lr`` overrides each layer's ``settings.lr`` for this step (an R-lr schedule; when updating
    every k steps, k·lr keeps R's progress per optimizer step about the same); each layer also
    multiplies it by its ``settings.lr_scale``. When torch.distributed is initialised the statistics
    are summed over all ranks first, so every rank applies the same step. Returns {layer name: mean
    squared off-diagonal correlation of z} as 0-dim tensors on the layers' devices (nan for a layer
    without a sample, which is left unchanged): nothing is read back to the host here, so a GPU
    never waits; read the metrics when logging.
    """
    layers = decor_modules(model)
    if not layers:
        return {}
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    metrics: dict[str, torch.Tensor] = {} if distributed else _update_stacked(layers, lr)
    layers = [(name, layer) for name, layer in layers if name not in metrics]
    stats = [layer.take_stats(summable=distributed) for _, layer in layers]
    if distributed:
        stats = _all_reduce_stats(stats, [layer.decor_dim for _, layer in layers])
    # low-rank layers about to take their first step (a Python flag: no GPU sync to find them)
    first_low_rank = [layer for _, layer in layers
                      if distributed and layer.settings.variant == "low_rank" and not layer._low_rank_started]
    metrics.update({name: layer.apply_update(layer_stats, lr) for (name, layer), layer_stats in zip(layers, stats)})
    if first_low_rank:
        _broadcast_factors(first_low_rank)
    return {name: metrics[name] for name, _ in decor_modules(model) if name in metrics}


def _update_stacked(layers: list[tuple[str, DecorMixin]], lr: float | None) -> dict[str, torch.Tensor]:
    """The updates that go through the rows path, stacked per (width, rows, variant): one batched
    product per group instead of a dozen small ops per layer (:func:`update_r_stacked`); the same
    step as :meth:`DecorMixin.apply_update`. Returns {name: metric} of the layers it updated."""
    groups: dict[tuple, list[tuple[str, DecorMixin, torch.Tensor]]] = {}
    for name, layer in layers:
        rows = layer.take_rows()
        if rows is not None:
            r = layer._r_work()
            key = (layer.decor_dim, rows.shape[0], layer.settings.variant, r.dtype, r.device)
            groups.setdefault(key, []).append((name, layer, rows))
    metrics = {}
    for (_, _, variant, dtype, device), members in groups.items():
        r = torch.stack([layer._r_work() for _, layer, _ in members])
        x = torch.stack([rows for _, _, rows in members])
        kappa = torch.tensor([layer.settings.kappa for _, layer, _ in members], dtype=dtype, device=device)
        step = torch.tensor([(layer.settings.lr if lr is None else lr) * layer.settings.lr_scale
                             for _, layer, _ in members], dtype=dtype, device=device)
        with torch.no_grad():
            values = update_r_stacked(r, x, kappa, step, triangular=variant == "triangular")
        for index, (name, layer, _) in enumerate(members):
            layer.set_r(r[index])
            metrics[name] = values[index]
    return metrics


def _broadcast_factors(layers: list[DecorMixin]) -> None:
    """Rank 0's R, U, V for low-rank layers that just took their first step: it starts V at an
    eigendecomposition, whose last bits may differ between devices; everything after is exact."""
    for layer in layers:
        for buffer in (layer.R, layer.R_u, layer.R_v):
            dist.broadcast(buffer, src=0)
        layer.invalidate_cache()


def ranks_agree(model: nn.Module) -> bool:
    """True when every process holds the same R in every layer (always True without distributed).

    Compares two float64 fingerprints per layer (the sum of R and a position-weighted sum) across
    ranks with one all-gather: cheap enough to run every epoch as a guard against drift.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return True
    prints = []
    for _, layer in decor_modules(model):
        r = layer.R.detach().double().reshape(-1)
        weights = torch.arange(1, r.numel() + 1, dtype=torch.float64, device=r.device)
        prints.append(torch.stack([r.sum(), (r * weights).sum()]))
    if not prints:
        return True
    mine = torch.cat(prints)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(mine, other) for other in gathered)


def defer_weight_grads(model: nn.Module, enabled: bool = True) -> None:
    """Sum dL/dA over the micro-batches of an optimizer step and turn it into W's gradient once.

    In the fused form A = W R, so dL/dW = dL/dA Rᵀ: out·d² multiply-adds per backward, paid per
    micro-batch when gradients accumulate. With deferral on, the fused layers' backwards leave
    dL/dA in ``W.grad`` (summed by autograd over the micro-batches, and all-reduced by DDP, both
    linear) and :func:`finish_weight_grads` applies Rᵀ once: the same gradient for 1/m of the work.
    Each layer keeps one form for all micro-batches between two finishes (chosen by the cost rule,
    with the W-gradient work spread over them). **Call finish_weight_grads after the last backward
    and before clipping / optimizer.step**, or W gets the wrong gradient. Plain DDP only (not FSDP).
    """
    for _, layer in decor_modules(model):
        layer.defer_weight_grad = enabled


def finish_weight_grads(model: nn.Module) -> int:
    """W.grad <- (summed dL/dA) Rᵀ in every layer that deferred its weight gradient since the last
    call (see :func:`defer_weight_grads`); returns how many layers' gradients it changed."""
    return sum(layer.finish_weight_grad() for _, layer in decor_modules(model))


FORMS = ("auto", "fused", "unfused")


@contextmanager
def use_form(model: nn.Module, form: str) -> Iterator[nn.Module]:
    """Within the block, decorrelated layers compute in ``form``: "fused" (W R) x, "unfused"
    W (R x) step by step, or "auto" (the cheaper one per forward, the default)."""
    if form not in FORMS:
        raise DecorError(f"decor form must be one of {', '.join(FORMS)}, got {form!r}")
    layers = [layer for _, layer in decor_modules(model)]
    before = [layer.form for layer in layers]
    for layer in layers:
        layer.form = form
    try:
        yield model
    finally:
        for layer, old in zip(layers, before):
            layer.form = old


def explicit(model: nn.Module):
    """Within the block, decorrelated layers compute W (R x) step by step, never (W R) x: the
    independent reference that exports and tests compare fused models with."""
    return use_form(model, "unfused")


def fuse(model: nn.Module) -> nn.Module:
    """Replace every decorrelated layer by a plain nn.Linear / nn.Conv2d with weight W R, in place.

    The plain layer keeps W's Parameter object (now holding W R) and the bias, so an optimizer's
    state and gradient hooks carry over (a DBP warm start continues training the fused model);
    afterwards no module, buffer or state_dict key of DBP remains. Returns the model (a decorrelated
    layer passed directly is returned as its plain version; the decorrelated layer is consumed).
    """
    if isinstance(model, DecorMixin):
        return model.fused_plain_module()
    for name, layer in decor_modules(model):
        _set_submodule(model, name, layer.fused_plain_module())
    return model


def fused_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A decorrelated model's state_dict as its fused model's: every ``<layer>.weight`` with a sibling
    ``<layer>.R`` becomes W R (Conv2d kernels flattened to (out, C_in·K·K) for the product), and the
    DBP entries (R, R_u, R_v, the subsample) are dropped. Plain entries pass through unchanged."""
    layers = {key[: -len(".R")] for key in state if key.endswith(".R") and key[: -len(".R")] + ".weight" in state}
    dbp = (".R", ".R_u", ".R_v", ".subsample.gram", ".subsample.count", ".subsample._extra_state")
    out = {}
    for key, value in state.items():
        if any(key == layer + suffix for layer in layers for suffix in dbp):
            continue
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        if layer in layers:
            r = state[layer + ".R"]
            value = (value.reshape(value.shape[0], -1) @ r.to(value.dtype)).reshape(value.shape)
        out[key] = value
    return out
