"""``TimmMAEViT``: the exported (or a fresh) timm ViT as an mmseg backbone for UperNet.

Feature maps of chosen blocks come out as ``(B, D, H/p, W/p)`` for a ``Feature2Pyramid`` neck.
The position embedding is resampled (bicubic) once to the training crop grid, where it is trained,
and on the fly to any other grid (slide-inference windows, whole images).

Parameter names follow mmseg's own ViTs (``cls_token``, ``pos_embed``, ``patch_embed.*``,
``layers.<i>.*``), because ``LearningRateDecayOptimizerConstructor`` derives layer ids from those
names (0 for embeddings, i+1 for ``layers.i``, the rest last) and accepts only backbones whose class
name contains "MAE". Importing this module needs :func:`segmentation.compat.ensure` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import nn

from mae_dbp.errors import UserInputError
from segmentation.export_reader import build_vit, load_export


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


@MODELS.register_module()
class TimmMAEViT(BaseModule):
    """A timm ViT encoder returning block features as NCHW maps.

    Args:
        export_dir: folder from ``mae-dbp export`` (``config.json`` + ``model.safetensors``), loaded
            strictly. None: build ``arch`` with ``model_args`` from random init (BP-from-scratch).
        arch: timm model name, only without ``export_dir`` (e.g. ``'vit_base_patch16_224'``).
        model_args: ``timm.create_model`` arguments, only without ``export_dir``
            (e.g. ``dict(in_chans=2, img_size=512)``).
        img_size: training crop (H, W) in px; the position embedding is resampled to its grid.
        out_indices: blocks (0-based) whose outputs are returned; blocks after the last are dropped.
        in_channels: if given, must equal the encoder's input channels (a config consistency check).
        final_norm: apply the encoder's last LayerNorm to the last block's output (needs that block
            in ``out_indices``); MAE/BEiT segmentation uses plain block outputs (False).
        drop_path_rate: stochastic depth for fine-tuning (0.1 in mmseg's MAE recipe).
        init_cfg: not supported (must be None): weights come from ``export_dir``.
    """

    def __init__(self, export_dir: str | None = None, arch: str | None = None,
                 model_args: dict[str, Any] | None = None, img_size: int | Sequence[int] = 224,
                 out_indices: Sequence[int] = (3, 5, 7, 11), in_channels: int | None = None,
                 final_norm: bool = False, drop_path_rate: float = 0.0,
                 init_cfg: dict | None = None) -> None:
        if init_cfg is not None:
            raise UserInputError("TimmMAEViT takes its weights from export_dir (or timm's init); init_cfg is not "
                                 "supported; to start from a whole segmentor checkpoint use load_from")
        super().__init__()
        if export_dir:
            if arch is not None or model_args:
                raise UserInputError("TimmMAEViT: give either export_dir or arch/model_args, not both "
                                     "(the export's config.json fixes the architecture)")
            vit, _ = load_export(export_dir, drop_path_rate=drop_path_rate)
            source = str(export_dir)
        elif arch:
            vit = build_vit(arch, dict(model_args or {}), drop_path_rate=drop_path_rate)
            source = f"{arch} (random init)"
        else:
            raise UserInputError("TimmMAEViT needs export_dir (an exported encoder) or arch (random init)")
        if vit.pos_embed is None:
            raise UserInputError(f"{source}: TimmMAEViT needs a ViT with an absolute position embedding")
        self.source = source
        self.in_chans = int(vit.patch_embed.proj.in_channels)
        if in_channels is not None and int(in_channels) != self.in_chans:
            raise UserInputError(f"{source} takes {self.in_chans} input channels but the config says "
                                 f"in_channels={in_channels}; fix the config or the data")
        depth = len(vit.blocks)
        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or any(i < 0 or i >= depth for i in self.out_indices):
            raise UserInputError(f"out_indices {tuple(out_indices)} must be blocks in 0..{depth - 1} of {source}")
        if final_norm and depth - 1 not in self.out_indices:
            raise UserInputError(f"final_norm=True needs the last block ({depth - 1}) in out_indices")
        self.final_norm = bool(final_norm)
        self.patch_size = _pair(vit.patch_embed.patch_size)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.pos_prefix = 0 if vit.no_embed_class else self.num_prefix_tokens

        crop = _pair(img_size)
        self.grid_size = (crop[0] // self.patch_size[0], crop[1] // self.patch_size[1])
        self.patch_embed = vit.patch_embed
        self.cls_token = vit.cls_token
        self.reg_token = vit.reg_token
        self.pos_embed = nn.Parameter(self.resample_pos_embed(vit.pos_embed.detach(), self.grid_size,
                                                              tuple(vit.patch_embed.grid_size)))
        self.pos_drop = vit.pos_drop
        self.norm_pre = vit.norm_pre
        self.layers = nn.ModuleList(vit.blocks[: max(self.out_indices) + 1])
        self.norm = vit.norm if self.final_norm else None

    def init_weights(self) -> None:
        """Nothing to do: weights come from the export or timm's own init in ``__init__``."""

    def resample_pos_embed(self, pos_embed: torch.Tensor, new_grid: tuple[int, int],
                           old_grid: tuple[int, int]) -> torch.Tensor:
        """Bicubic resampling of a (1, prefix + h*w, D) table from ``old_grid`` to ``new_grid`` (patches)."""
        from timm.layers import resample_abs_pos_embed

        if tuple(new_grid) == tuple(old_grid):
            return pos_embed
        return resample_abs_pos_embed(pos_embed, new_size=list(new_grid), old_size=list(old_grid),
                                      num_prefix_tokens=self.pos_prefix, interpolation="bicubic")

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens with prefix tokens and position embedding: (B, C, H, W) -> (B, T, D), grid."""
        x = self.patch_embed.proj(x)  # (B, D, H/p, W/p)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        pos = self.resample_pos_embed(self.pos_embed, grid, self.grid_size)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.pos_prefix == 0:  # no_embed_class: add, then prepend prefix tokens
            x = torch.cat([*prefix, x + pos], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + pos
        return self.norm_pre(self.pos_drop(x)), grid

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, C, H, W) normalised images -> one (B, D, H // p, W // p) map per ``out_indices``."""
        x, (h, w) = self._tokens(inputs)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.norm is not None and i == len(self.layers) - 1:
                x = self.norm(x)
            if i in self.out_indices:
                patches = x[:, self.num_prefix_tokens:]
                outs.append(patches.transpose(1, 2).reshape(x.shape[0], -1, h, w).contiguous())
        return tuple(outs)
