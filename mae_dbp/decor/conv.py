"""``nn.Conv2d`` decorrelated patch-wise: R acts on every C_in·K·K input patch.

The convolution becomes "R on each patch, then the original kernel as a D -> C_out map"
(D = C_in·K·K, R is D x D); fused, that is one ordinary convolution with the kernel W R. The
subsample for R's update is a random set of output positions' input patches, in the weight's
(C_in, Kh, Kw) flattening order. The ViT patch embedding (K = stride) is exactly a linear layer on
flattened patches. Everything else (forms, statistics, update) is :class:`~mae_dbp.decor.layers.DecorMixin`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mae_dbp.decor.errors import DecorError
from mae_dbp.decor.layers import DecorMixin
from mae_dbp.decor.matrix import times_rt
from mae_dbp.decor.settings import DecorSettings


class DecorConv2d(DecorMixin, nn.Conv2d):
    """``nn.Conv2d`` decorrelated patch-wise: R acts on each C_in·K·K input patch (groups = 1)."""

    @classmethod
    def wrap(cls, conv: nn.Conv2d, settings: DecorSettings) -> "DecorConv2d":
        if conv.groups != 1:
            raise DecorError(f"DBP on Conv2d needs groups=1, got groups={conv.groups}")
        module = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, device="meta",
        )
        module.weight, module.bias = conv.weight, conv.bias
        module.train(conv.training)
        kh, kw = conv.kernel_size
        module._init_decor(conv.in_channels * kh * kw, settings)
        return module

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the convolution sees it, with its padding (and padding mode) applied."""
        if any(self._reversed_padding_repeated_twice):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=mode)
        return x

    def _out_size(self, height: int, width: int) -> tuple[int, int]:
        """(H_out, W_out) of the convolution over an already padded input of height x width pixels."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        return (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1

    def _forward_rows(self, x: torch.Tensor) -> int:
        """Output positions B·H_out·W_out (the patches R acts on), from x's shape and the padding."""
        left, right, top, bottom = self._reversed_padding_repeated_twice
        out_h, out_w = self._out_size(x.shape[-2] + top + bottom, x.shape[-1] + left + right)
        return (x.shape[0] if x.dim() == 4 else 1) * out_h * out_w

    def _rows_for_update(self, x: torch.Tensor) -> torch.Tensor:
        """Sampled input patches, (k, C_in·K·K) in the weight's (C_in, Kh, Kw) flattening order."""
        x = self._pad(x)
        batch = x.shape[0]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        out_h, out_w = self._out_size(*x.shape[-2:])
        idx = self.subsample.draw(batch * out_h * out_w, x.device)
        b, pos = idx // (out_h * out_w), idx % (out_h * out_w)
        if (kh, kw) == (sh, sw) and (dh, dw) == (1, 1):  # non-overlapping patches (ViT patch embed)
            grid = x[:, :, : out_h * kh, : out_w * kw].reshape(batch, x.shape[1], out_h, kh, out_w, kw)
            patches = grid[b, :, pos // out_w, :, pos % out_w, :]  # (k, C_in, Kh, Kw)
            return patches.reshape(idx.shape[0], -1)
        rows = (pos // out_w)[:, None] * sh + torch.arange(kh, device=x.device)[None, :] * dh  # (k, Kh)
        cols = (pos % out_w)[:, None] * sw + torch.arange(kw, device=x.device)[None, :] * dw  # (k, Kw)
        patches = x[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (k, Kh, Kw, C_in)
        return patches.permute(0, 3, 1, 2).reshape(idx.shape[0], -1)

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, self.bias)

    def explicit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unfold into patches, z = R patch, then the kernel as a D -> C_out map (the unfused reference)."""
        x = self._pad(x)
        patches = F.unfold(x, self.kernel_size, dilation=self.dilation, stride=self.stride)  # (B, D, L)
        z = times_rt(patches.transpose(1, 2), self.R, self.factors())  # (B, L, D)
        out = torch.einsum("od,bld->bol", self.weight.reshape(self.out_channels, -1), z)
        if self.bias is not None:
            out = out + self.bias[None, :, None]
        return out.reshape(x.shape[0], self.out_channels, *self._out_size(*x.shape[-2:]))

    def fused_plain_module(self) -> nn.Conv2d:
        plain = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
            padding=self.padding, dilation=self.dilation, bias=self.bias is not None,
            padding_mode=self.padding_mode, device="meta",
        )
        plain.weight, plain.bias = self._plain_weight(), self.bias
        plain.train(self.training)
        return plain
