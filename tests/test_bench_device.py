"""Bench device flags: the device chosen, bf16 autocast, the JSON record, and the compile counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mae_dbp.bench.compile_stats import CompileWatch
from mae_dbp.bench.device import autocast, device_record, resolve_device, torch_threads
from mae_dbp.cli import main
from mae_dbp.errors import UserInputError


def test_auto_is_cuda_only_where_there_is_one_and_bad_names_are_one_line():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserInputError, match="--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_torch_threads_sets_them_in_the_block_and_restores_them_after_an_error_too():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other) as used:
        assert used == other and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(None) as used:  # None: left as they are, and reported
        assert used == before == torch.get_num_threads()


def test_bf16_autocast_runs_matmuls_in_bf16_and_float32_leaves_them():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ w).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "float32"):
        assert (x @ w).dtype == torch.float32
    record = device_record(torch.device("cpu"), "bf16", compile=True)
    assert record["device"] == "cpu" and record["dtype"] == "bf16" and record["compile"] is True
    assert record["torch"] == torch.__version__ and record["device_name"]


@pytest.mark.slow
def test_bench_decor_records_the_device_in_its_json(tmp_path):
    import json

    out = tmp_path / "decor.json"
    assert main(["bench", "decor", "--shapes", "mlp_1000", "--repeats", "1", "--device", "cpu", "--dtype", "bf16",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["device"], result["dtype"], result["compile"]) == ("cpu", "bf16", False)
    assert result["mlp_1000"]["dbp_s"] > 0 and result["mlp_1000"]["plain_s"] > 0
    # the DBP contender ran a DBP layer (a bench timing the plain layer twice leaves no form)
    assert result["mlp_1000"]["form"] in ("fused", "unfused")


class _Breaks(nn.Module):
    """One graph break (a print) and a guard on ``self.scale`` (an int: a change recompiles)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.scale = nn.Linear(4, 4), 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        print(end="")
        return (y * self.scale).sum()


@pytest.mark.slow
def test_compile_watch_counts_a_break_and_only_the_recompiles_after_warmup():
    model = _Breaks()
    compiled = torch.compile(model)
    watch = CompileWatch()
    watch.start()
    for _ in range(3):
        compiled(torch.randn(2, 4)).backward()
    watch.warmed_up()
    assert watch.graph_breaks == 1 and watch.graphs == 2  # one before the print, one after it
    step = watch.watch(lambda: compiled(torch.randn(2, 4)).backward())
    step()
    assert watch.recompiles == 0  # steady state: nothing compiles
    model.scale = 2  # the guard on scale fails: the frame after the break compiles again
    step()
    step()
    assert watch.recompiles == 1
    assert watch.record()["recompiles_after_warmup"] == 1
