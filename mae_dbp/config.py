"""YAML configs with defaults, dotted ``key=value`` overrides and strict key checking.

A job (pretrain, classify) owns a defaults dict. The user's YAML file and command-line overrides may
only name keys that exist there; an unknown key is a ``UserInputError`` naming it. A default of
``{}`` marks a free-form mapping (e.g. ``model.encoder_args``) whose keys are not checked.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from mae_dbp.errors import UserInputError


def _merge(config: dict, update: dict, schema: dict, prefix: str, source: str) -> dict:
    """``config`` updated with ``update``; every key must exist in ``schema`` (the defaults)."""
    out = copy.deepcopy(config)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise UserInputError(f"{source}: unknown config key '{path}' (known here: {known})")
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise UserInputError(f"{source}: config key '{path}' must be a mapping, got {value!r}")
            current = out.get(key) or {}
            out[key] = _merge(current, value, expected, f"{path}.", source) if expected else {**current, **value}
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML: numbers, bools, lists, null)."""
    if "=" not in text:
        raise UserInputError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as error:
        raise UserInputError(f"override {text!r}: value is not valid YAML ({error})") from None
    return key.strip().split("."), value


def _nest(keys: list[str], value: Any) -> dict:
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested}
    return nested


def load_config(defaults: dict, path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Defaults <- YAML file <- overrides, every key checked against the defaults."""
    config = copy.deepcopy(defaults)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UserInputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise UserInputError(f"{path}: expected a mapping of config sections at the top level")
        config = _merge(config, loaded, defaults, "", str(path))
    for text in overrides:
        keys, value = parse_override(text)
        config = _merge(config, _nest(keys, value), defaults, "", "command line")
    return config


def save_config(config: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
