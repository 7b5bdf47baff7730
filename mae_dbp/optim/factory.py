"""``train.optimizer`` -> a torch optimizer over the trainer's weight-decay groups.

Every name timm's factory knows (``timm.optim.create_optimizer_v2``: adamw, muon, nmuon, adamuon,
lamb, lion, kron, laprop, mars, ...) plus ``mud`` (:class:`~mae_dbp.optim.mud.Mud`, not in timm).
``train.optimizer_args`` is passed through as keyword arguments (``ns_steps``, ``adjust_lr_fn``,
``momentum``, ...). The trainer's ``betas`` go to every optimizer that takes them (Muon's and
MUD's AdamW fallback included); timm sets ``momentum`` 0.9 where an optimizer has one.

``adamw`` stays torch's fused kernel where torch has one for the device (``fused=True``: CUDA, CPU
and a few others in torch >= 2.4): it updates every parameter in one kernel per dtype and keeps
its step counters as tensors on the device, so an optimizer step reads nothing back to the host
(the for-loop implementation calls ``.item()`` on each parameter's step counter).

timm's Muon family (muon, nmuon, adamuon, nadamuon) runs its Newton-Schulz iterations in bfloat16,
which GPUs multiply at full speed but many CPUs only emulate (7x slower than float32 on an AMD EPYC
without AVX512-BF16). On a CPU device they run in float32 instead (:class:`NewtonSchulzDtype`);
``train.optimizer_args: {ns_dtype: bfloat16}`` keeps timm's choice, ``float32`` forces it anywhere.

The hybrid optimizers (Muon, MUD) treat a decorrelated layer's W like any weight: a DBP Linear's W
is a plain 2-D parameter and the patch embedding's conv kernel is flattened to (out, in·K·K), the
same matrix R acts on. 1-D parameters, tokens and position embeddings take their AdamW fallback.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from mae_dbp.errors import UserInputError, closest

OWN = ("mud",)  # optimizers of this package, besides timm's
MUON_FAMILY = ("muon", "nmuon", "adamuon", "nadamuon")  # timm's Newton-Schulz optimizers
NS_DTYPES = ("float32", "bfloat16")


class NewtonSchulzDtype:
    """Run timm's Newton-Schulz iterations in ``dtype`` during one optimizer's ``step`` (timm has no
    argument for it: its ``zeropower_via_newtonschulz`` defaults to bfloat16)."""

    def __init__(self, optimizer: torch.optim.Optimizer, dtype: torch.dtype) -> None:
        import functools

        import timm.optim.muon as muon

        self.module, self.dtype = muon, dtype
        self.original = muon.zeropower_via_newtonschulz
        self.patched = functools.partial(self.original, dtype=dtype)
        step = optimizer.step

        @functools.wraps(step)
        def step_in_dtype(*args, **kwargs):
            self.module.zeropower_via_newtonschulz = self.patched
            try:
                return step(*args, **kwargs)
            finally:
                self.module.zeropower_via_newtonschulz = self.original

        optimizer.step = step_in_dtype


def fused_available(device: torch.device | str) -> bool:
    """Whether torch has a fused AdamW kernel for ``device``'s type."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


def optimizer_names() -> list[str]:
    """Every name ``train.optimizer`` accepts (timm's registry and :data:`OWN`), sorted."""
    from timm.optim import list_optimizers

    return sorted({*list_optimizers(), *OWN})


def check_name(name: str, key: str = "train.optimizer") -> str:
    """``name`` lower-cased, or one error line naming ``key`` with the closest known names."""
    known = optimizer_names()
    lowered = str(name).lower()
    base = lowered.removeprefix("lookahead_")  # timm's "lookahead_<name>" wraps any optimizer
    if base in known and not (base != lowered and base in OWN):
        return lowered
    close = closest(lowered, known, n=3, cutoff=0.5)
    hint = f" (closest: {', '.join(close)})" if close else f" (known: {', '.join(known)})"
    raise UserInputError(f"{key}: unknown optimizer {name!r}{hint}")


def build_optimizer(params: Iterable, name: str, lr: float, betas: tuple[float, float], device: torch.device | str,
                    args: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``params`` (tensors, or param groups that carry their own
    ``weight_decay``) at ``lr``, with ``betas`` where it takes them and ``args`` passed through.
    A keyword the optimizer does not take is one error line naming ``train.optimizer_args``."""
    name, args = check_name(name), dict(args or {})
    base = name.removeprefix("lookahead_")
    ns_dtype = args.pop("ns_dtype", None)
    if ns_dtype is not None and (base not in MUON_FAMILY or ns_dtype not in NS_DTYPES):
        raise UserInputError(f"train.optimizer_args.ns_dtype: expected one of {', '.join(NS_DTYPES)} with one of "
                             f"{', '.join(MUON_FAMILY)}, got {ns_dtype!r} with {name}")
    try:
        if name == "mud":
            from mae_dbp.optim.mud import Mud

            args.setdefault("momentum", 0.9)  # as timm's factory sets it for every optimizer with momentum
            return Mud(params, lr=lr, betas=tuple(betas), **args)
        from timm.optim import create_optimizer_v2

        if name == "adamw" and "fused" not in args and "foreach" not in args and fused_available(device):
            args["fused"] = True
        optimizer = create_optimizer_v2(params, name, lr=lr, betas=tuple(betas), **args)
    except TypeError as error:  # an argument the optimizer's constructor does not take
        raise UserInputError(f"train.optimizer_args {args}: not accepted by {name} ({error})") from None
    if base in MUON_FAMILY and (ns_dtype or ("float32" if torch.device(device).type == "cpu" else None)) == "float32":
        NewtonSchulzDtype(optimizer, torch.float32)
    return optimizer
