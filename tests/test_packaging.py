"""Packaging and layering: a wheel carries every shipped config; the library never imports the app layer."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPLICATION = ("mae_dbp.quickstart", "mae_dbp.bench", "mae_dbp.cli", "mae_dbp.commands", "segmentation", "mmseg")
LIBRARY = ["config.py", "errors.py", "export.py", "files.py", "process.py", "run_dir.py", "data", "decor", "models", "optim", "probe", "train"]


@pytest.mark.slow
def test_wheel_ships_every_config_and_an_install_finds_them(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "mae_dbp", "segmentation", "data_tools", "configs"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", "dist"],
                           cwd=source, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (source / "dist").glob("mae_dbp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts)
    assert shipped and [n for n in shipped if "mae_dbp/" + n not in names] == []
    # installed layout (the unpacked wheel), run from elsewhere: shipped configs resolve by package
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import json, mae_dbp, mae_dbp.bench.finetune as f; from mae_dbp.config import load_config, shipped_configs,"
             " resolve_config_path as find; from mae_dbp.train.pretrain import PretrainConfig;"
             "c = load_config(PretrainConfig, 'configs/pretrain/tiny_cpu_dbp.yaml');"
             "print(json.dumps([mae_dbp.__file__, str(shipped_configs()), str(find(f.SEGMENT_CONFIG, 'segmentation').parent.parent), c.model.img_size]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    package, configs, quickstart_configs, size = json.loads(result.stdout.strip().splitlines()[-1])
    assert package.startswith(str(site)) and configs == quickstart_configs == str(site / "mae_dbp" / "configs")
    assert size == 64
    for name in ("pretrain/tiny_cpu_bp.yaml", "pretrain/tiny_cpu_dbp.yaml", "segmentation/upernet_tiny_cpu.py"):
        assert (Path(configs) / name).is_file(), name  # what `mae-dbp quickstart` reads


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_library_never_imports_the_application_layer():
    files = [p for name in LIBRARY for p in ((ROOT / "mae_dbp" / name).rglob("*.py") if (ROOT / "mae_dbp" / name).is_dir()
                                            else [ROOT / "mae_dbp" / name])]
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.startswith(APPLICATION)) for p in files}
    assert {k: v for k, v in bad.items() if v} == {}
