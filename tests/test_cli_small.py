"""Small command-line behaviours: ``--version`` and the progress lines of ``bench all``."""

from __future__ import annotations

import re

import pytest

import mae_dbp
from mae_dbp.commands.bench import run_stages
from mae_dbp.cli import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mae-dbp {mae_dbp.__version__}"


def test_bench_stages_report_progress_on_stderr_and_keep_results(capsys):
    results = run_stages({"first": lambda: {"ratio": 1.5}, "second": lambda: {"ratio": 0.9}})
    assert results == {"first": {"ratio": 1.5}, "second": {"ratio": 0.9}}
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[0] == "bench all: [1/2] first ..." and lines[2] == "bench all: [2/2] second ..."
    assert re.fullmatch(r"bench all: \[2/2\] second done in \d+ s \(\d+ s in all\)", lines[3])
