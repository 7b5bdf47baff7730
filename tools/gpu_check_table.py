"""The Python side of ``tools/gpu_check.sh``: versions, the run-directory check, the final table.

    python tools/gpu_check_table.py versions OUT        # prints and writes OUT/versions.json
    python tools/gpu_check_table.py check-run RUN STEPS  # the run folder of the training piece; RUN/check.json
    python tools/gpu_check_table.py table OUT            # one markdown table of every piece (OUT/table.md)
"""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def versions(out: Path) -> dict:
    import accelerate
    import timm
    import torch

    gpu = torch.cuda.is_available()
    info = {
        "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if gpu else None, "accelerate": accelerate.__version__,
        "timm": timm.__version__, "device": torch.cuda.get_device_name(0) if gpu else "cpu (no CUDA GPU)",
        "gpus": torch.cuda.device_count(),
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if gpu else None,
    }
    (out / "versions.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return info


def check_run(run: Path, min_steps: int) -> dict:
    """What a finished run folder must hold; raises SystemExit(1) listing what is missing or wrong."""
    import csv

    import torch

    from mae_dbp.run_dir import RunDir, saved_checkpoint
    from mae_dbp.train import checkpoints

    problems: list[str] = []
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    for name in ("config.yaml", "metrics.csv", "summary.json"):
        if not (run / name).is_file():
            problems.append(f"no {name}")
    folders = RunDir(run)
    for folder in (folders.last, folders.best):
        for file in (checkpoints.MODEL_FILE, checkpoints.OPTIMIZER_FILE, "random_states_0.pkl", checkpoints.LOOP_FILE):
            if not (folder / file).is_file():
                problems.append(f"no {folder.name}/{file}")
    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").is_file() else []
    losses = [float(r["train_loss"]) for r in rows] + [float(r["val_loss"]) for r in rows]
    if not rows or not all(math.isfinite(v) for v in losses):
        problems.append(f"metrics.csv: {len(rows)} rows, non-finite losses {losses}")
    steps = summary.get("steps", 0)
    if steps < min_steps:
        problems.append(f"{steps} optimizer steps, expected >= {min_steps}")
    if saved_checkpoint(folders.last) is not None:
        state = checkpoints.model_state(folders.last)
        r = [v for k, v in state.items() if k.endswith(".R")]
        if not r or all(torch.equal(m, torch.eye(m.shape[0])) for m in r):
            problems.append("R never moved (no DBP layer trained)")
    result = {"ok": not problems, "problems": problems, "steps": steps, "epochs": len(rows),
              "best_val_loss": summary.get("best_val_loss"), "train_seconds": summary.get("train_seconds_total"),
              "last_val_loss": float(rows[-1]["val_loss"]) if rows else None}
    (run / "check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if problems:
        raise SystemExit(1)
    return result


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _tests(path: Path) -> str:
    try:
        suite = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return "not run"
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    get = lambda key: int(suite.get(key, 0))  # noqa: E731
    passed = get("tests") - get("failures") - get("errors") - get("skipped")
    return f"{passed} passed, {get('failures') + get('errors')} failed, {get('skipped')} skipped"


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def table(out: Path) -> str:
    """One markdown table of the check (what each piece measured, its status and seconds)."""
    info, decor, step, run = (_load(out / f"{n}.json") for n in ("versions", "decor", "pretrain", "run/check"))
    status = dict(line.split() for line in (out / "status.txt").read_text().split("\n") if line.strip()) \
        if (out / "status.txt").is_file() else {}
    seconds = dict(line.split() for line in (out / "seconds.txt").read_text().split("\n") if line.strip()) \
        if (out / "seconds.txt").is_file() else {}
    rows = [("device", info.get("device"), f"torch {info.get('torch')}, CUDA {info.get('cuda')}, "
             f"accelerate {info.get('accelerate')}, timm {info.get('timm')}", "versions")]
    rows.append(("tests marked cuda", _tests(out / "cuda_tests.xml"), "", "tests"))
    for shape in ("vitb_qkv", "vitb_fc1", "patch_embed", "mlp_1000"):
        if shape in decor:
            e = decor[shape]
            rows.append((f"bench decor {shape} ({decor.get('dtype')})", f"DBP / plain {e['ratio']:.3f}",
                         f"{e['dbp_s'] * 1e3:.2f} vs {e['plain_s'] * 1e3:.2f} ms/step, form {e['form']}", "decor"))
    counts = step.get("compile_counts", {})
    for name, first in step.get("contenders", {}).items():
        c = counts.get(name.removesuffix("_compiled"), {}) if name.endswith("_compiled") else {}
        compiled = (f"; graph breaks {c.get('graph_breaks')}, recompiles after warm-up "
                    f"{c.get('recompiles_after_warmup')}") if c else ""
        peak = f", peak {first['peak_mem_gib']:.1f} GiB" if first.get("peak_mem_gib") is not None else ""
        peak += f", {first['host_reads_per_step']:g} host reads/step" if "host_reads_per_step" in first else ""
        rows.append((f"bench pretrain {name} (batch {step.get('batch_size')}, {step.get('dtype')})",
                     f"{step[f'{name}_step_s'] * 1e3:.1f} ms/step", f"{step[f'{name}_step_s'] / step['bp_step_s']:.3f} x eager BP"
                     f"{peak}{compiled}", "pretrain"))
    if "compiled_ratio" in step:
        rows.append(("compiled DBP / compiled BP", _num(step["compiled_ratio"]), "target <= 1.05", "pretrain"))
        rows.append(("compiled DBP / eager DBP", _num(step["dbp_compiled_vs_eager"]), "target <= 1", "pretrain"))
    rows.append(("training run (ViT-B recipe, generated data)", "ok" if run.get("ok") else f"FAILED {run.get('problems')}",
                 f"{run.get('steps')} steps, {run.get('epochs')} epochs, val loss {_num(run.get('last_val_loss'))}, "
                 f"{_num(run.get('train_seconds'))} s of training", "run"))
    lines = ["| check | result | details | status | s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {status.get(piece, '-')} | {seconds.get(piece, '-')} |" for a, b, c, piece in rows]
    total = sum(float(v) for v in seconds.values())
    lines.append(f"| total | | | {'ok' if all(v == 'ok' for v in status.values()) else 'FAILED'} | {total:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "versions":
        versions(Path(rest[0]))
    elif command == "check-run":
        check_run(Path(rest[0]), int(rest[1]))
    elif command == "table":
        table(Path(rest[0]))
    else:
        raise SystemExit(f"unknown command {command!r}: versions, check-run or table")
