"""Graph breaks and recompiles of a ``torch.compile``'d contender, from dynamo's own counters.

Dynamo counts, process-wide, every frame it compiles (``counters["frames"]["total"]``: first
compiles and recompiles alike), every graph it produces (``counters["stats"]["unique_graphs"]``) and
every graph break by reason (``counters["graph_break"]``). :class:`CompileWatch` attributes them to
one contender: :meth:`start` clears the counters, the contender runs its first ``warmup`` steps
(where compiling belongs), :meth:`warmed_up` keeps what they compiled; afterwards every call of
:meth:`watch`'s wrapped step adds the frames it compiled to ``recompiles``. Contenders therefore
warm up one after the other; their timed steps may alternate (each call's difference belongs to
the step that ran). Reasons of recompiles: run with ``TORCH_LOGS=recompiles``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


def _counters():
    from torch._dynamo.utils import counters

    return counters


def frames_compiled() -> int:
    """Frames dynamo compiled so far in this process (since the last clear)."""
    return int(_counters()["frames"]["total"])


@dataclass
class CompileWatch:
    """Compile counts of one contender (see the module docstring)."""

    graph_breaks: int = 0  # break events while compiling the warm-up steps
    graphs: int = 0  # graphs compiled in the warm-up steps
    frames_warmup: int = 0  # frames compiled in the warm-up steps (1 + one per break, per mode)
    recompiles: int = 0  # frames compiled after the warm-up steps (should be 0)
    break_reasons: dict[str, int] = field(default_factory=dict)  # first line of each reason: count

    def start(self) -> None:
        """Before the contender's first (compiling) call: forget what others compiled."""
        _counters().clear()

    def warmed_up(self) -> None:
        """After the contender's warm-up steps: keep their compile counts."""
        counters = _counters()
        self.frames_warmup = frames_compiled()
        self.graphs = int(counters["stats"]["unique_graphs"])
        self.break_reasons = {}
        for reason, count in counters["graph_break"].items():
            line = str(reason).strip().splitlines()[0]
            self.break_reasons[line] = self.break_reasons.get(line, 0) + int(count)
        self.graph_breaks = sum(self.break_reasons.values())

    def watch(self, step: Callable[[], None]) -> Callable[[], None]:
        """``step`` counting the frames each of its calls compiles as recompiles."""

        def watched() -> None:
            before = frames_compiled()
            step()
            self.recompiles += frames_compiled() - before

        return watched

    def record(self) -> dict:
        return {"graph_breaks": self.graph_breaks, "graphs": self.graphs, "frames_warmup": self.frames_warmup,
                "recompiles_after_warmup": self.recompiles, "break_reasons": self.break_reasons}
