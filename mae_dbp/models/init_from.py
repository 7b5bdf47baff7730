"""``model.init_from``: start pretraining from public or own weights, before DBP is applied.

Accepted: a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file, a folder (or timm's
``local-dir:FOLDER``) holding ``model.safetensors`` or ``pytorch_model.bin`` (a ``mae-dbp export``,
a timm hub folder, one of our plain run checkpoints), or a facebookresearch/mae checkpoint (its
``model`` key; decoder weights included). Key layouts: timm's ViT names at the top level (MAE's
decoder beside them as ``decoder_*`` / ``mask_token``), or our MAE's (``encoder.`` prefix).

The encoder must be the same architecture, except for what is adapted:

- ``patch_embed.proj.weight`` (D, C', p, p) -> (D, ``model.in_chans``, p, p) with timm's
  ``adapt_input_conv`` (3 -> 1 sums RGB, 3 -> 2 repeats and rescales the channels);
- ``pos_embed`` (1, prefix + g'^2, D) -> (1, prefix + g^2, D) with timm's ``resample_abs_pos_embed``
  (``model.img_size`` / patch = g); it stays frozen, as every MAE position table here.

Any other difference is a :class:`UserInputError` naming the first mismatching key and both shapes.
Classifier heads (``head.*``, ``fc_norm.*``) are ignored. The decoder loads key by key where the
shapes agree, when it has ``model.decoder.depth`` blocks (else it is left new, and the line says so);
the rest is left new (e.g. ``decoder_pred`` of another channel count). DBP layers applied afterwards start at R = I, so the
loaded encoder's function is unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from mae_dbp.errors import UserInputError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth")
IGNORED_PREFIXES = ("head.", "fc_norm.", "head_drop.")
DECODER_PREFIXES = ("decoder", "mask_token")


def _weight_file(source: str) -> Path:
    path = Path(source.removeprefix("local-dir:"))
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise UserInputError(f"model.init_from: {path} holds none of {', '.join(WEIGHT_FILES)}")
    if not path.is_file():
        raise UserInputError(f"model.init_from: {path} does not exist (a .safetensors / .pth / .bin file or a folder)")
    return path


def read_state(source: str) -> tuple[dict[str, Tensor], Path]:
    """(flat state dict of float tensors, the file read) of ``source`` (see the module docstring)."""
    path = _weight_file(source)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's file
        raise UserInputError(f"model.init_from: cannot read {path} ({str(error).splitlines()[0]})") from error
    for key in ("model", "state_dict", "module"):  # facebookresearch/mae: {"model": ...}; others wrap the same way
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise UserInputError(f"model.init_from: {path} holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    if any(k.endswith(".R") for k in state):
        raise UserInputError(f"model.init_from: {path} is an unfused DBP checkpoint (it has R matrices): export it "
                             "first (mae-dbp export RUN_DIR --out DIR) and give the export")
    return state, path


def split_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(encoder keys in timm names, MAE decoder keys) of a checkpoint in either layout."""
    encoder, decoder = {}, {}
    for key, value in state.items():
        if key.startswith("encoder."):
            encoder[key.removeprefix("encoder.")] = value
        elif key.startswith(DECODER_PREFIXES):
            decoder[key] = value
        elif not key.startswith(IGNORED_PREFIXES):
            encoder[key] = value
    return encoder, decoder


def _mismatch(source: Path, key: str, have: tuple | None, want: tuple | None) -> UserInputError:
    have_text = "absent" if have is None else str(have)
    want_text = "nothing (no such key in model.encoder)" if want is None else str(want)
    return UserInputError(f"model.init_from: {source} is another architecture than model.encoder: first mismatch "
                          f"{key}: checkpoint {have_text}, model expects {want_text}")


def _adapt_encoder(encoder, state: dict[str, Tensor], source: Path) -> tuple[dict[str, Tensor], list[str]]:
    """The checkpoint's encoder state shaped for ``encoder`` (see the module docstring), and what was adapted."""
    from timm.layers import resample_abs_pos_embed
    from timm.models import adapt_input_conv

    own = encoder.state_dict()
    adapted, notes = {}, []
    for key, target in own.items():
        value = state.get(key)
        if value is None:
            raise _mismatch(source, key, None, tuple(target.shape))
        if key == "patch_embed.proj.weight" and value.dim() == 4 and value.shape[1] != target.shape[1] \
                and (value.shape[0], *value.shape[2:]) == (target.shape[0], *target.shape[2:]):
            notes.append(f"patch embedding {value.shape[1]} -> {target.shape[1]} channels")
            value = adapt_input_conv(target.shape[1], value.float(), base_chans=value.shape[1])
        elif key == "pos_embed" and value.shape != target.shape and value.shape[-1] == target.shape[-1]:
            prefix = 0 if encoder.no_embed_class else encoder.num_prefix_tokens
            old_side = round((value.shape[1] - prefix) ** 0.5)
            grid = list(encoder.patch_embed.grid_size)
            if old_side * old_side + prefix != value.shape[1]:
                raise _mismatch(source, key, tuple(value.shape), tuple(target.shape))
            value = resample_abs_pos_embed(value.float(), grid, [old_side, old_side], num_prefix_tokens=prefix)
            notes.append(f"positions {old_side}x{old_side} -> {grid[0]}x{grid[1]}")
        if value.shape != target.shape:
            raise _mismatch(source, key, tuple(value.shape), tuple(target.shape))
        adapted[key] = value.to(target.dtype)
    extra = [key for key in state if key not in own]
    if extra:
        raise _mismatch(source, extra[0], tuple(state[extra[0]].shape), None)
    return adapted, notes


def _blocks(keys) -> int:
    return len({k.split(".")[1] for k in keys if k.startswith("decoder_blocks.")})


def _load_decoder(mae, state: dict[str, Tensor]) -> str:
    """Load the checkpoint's decoder where it has as many blocks as ``mae``'s, tensor by tensor where
    the shapes agree; returns what happened, in words."""
    if not state:
        return "decoder: left new (none in the checkpoint)"
    own = {k: v for k, v in mae.state_dict().items() if k.startswith(DECODER_PREFIXES)}
    if _blocks(state) != _blocks(own):
        return (f"decoder: left new (the checkpoint's has {_blocks(state)} blocks, model.decoder.depth is {_blocks(own)}; "
                f"set it to {_blocks(state)} to load them)")
    loaded = {k: v.to(own[k].dtype) for k, v in state.items() if k in own and v.shape == own[k].shape}
    mae.load_state_dict(loaded, strict=False)
    new = sorted({k.rsplit(".", 1)[0] for k in own if k not in loaded})
    return f"decoder: {len(loaded)} of {len(own)} tensors loaded" + (f", left new: {', '.join(new)}" if new else "")


def init_from(mae, source: str) -> str:
    """Load ``source`` into the plain (not yet DBP) MAE ``mae`` in place; returns the one line saying
    what was loaded, adapted and left new."""
    state, path = read_state(source)
    encoder_state, decoder_state = split_state(state)
    adapted, notes = _adapt_encoder(mae.encoder, encoder_state, path)
    mae.encoder.load_state_dict(adapted, strict=True)
    mae.encoder.pos_embed.requires_grad_(False)
    decoder = _load_decoder(mae, decoder_state)
    return (f"model.init_from: loaded the encoder ({len(adapted)} tensors) from {path}"
            + (f", adapted {', '.join(notes)}" if notes else "") + f"; {decoder}")
