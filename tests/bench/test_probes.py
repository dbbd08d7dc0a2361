"""The bench's measuring instruments, each on the real thing at a small size."""

from __future__ import annotations

import torch

from qedit.bench.probes import Clock, MemoryMeter, TransformerProbe, weight_bytes


class Blocks(torch.nn.Module):
    """Shaped like a transformer: ``transformer_blocks`` run in turn, the first ``skip`` skipped (as a cache does)."""

    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.transformer_blocks = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(n))
        self.skip = 0

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks[self.skip :]:
            hidden_states = block(hidden_states)
        return hidden_states


def test_probe_counts_calls_rows_and_the_blocks_that_ran() -> None:
    model = Blocks()
    probe = TransformerProbe(model, Clock(torch.device("cpu")))
    model(hidden_states=torch.zeros(1, 3, 8))
    model(torch.zeros(2, 3, 8))  # both CFG branches in one call: 2 passes
    assert (probe.counts.calls, probe.counts.passes, probe.counts.computed_passes) == (2, 3, 3.0)
    assert probe.counts.seconds > 0
    probe.reset()
    model.skip = 2
    model(hidden_states=torch.zeros(1, 3, 8))
    assert (probe.counts.passes, probe.counts.computed_passes) == (1, 0.5)
    probe.remove()
    model(hidden_states=torch.zeros(1, 3, 8))
    assert probe.counts.calls == 1


def test_weight_bytes_count_int8_weights_as_int8() -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(256, 256))
    fp32 = weight_bytes(model)
    assert fp32 == 2 * (256 * 256 + 256) * 4
    quantize_(model, Int8WeightOnlyConfig())
    assert 0.25 <= weight_bytes(model) / fp32 < 0.3  # int8 weights, fp32 biases and per-row scales


def test_memory_meter_sees_a_peak_that_is_already_freed() -> None:
    with MemoryMeter(torch.device("cpu")) as meter:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    assert meter.result is not None and meter.result.kind == "rss"
    assert 60 * 2**20 < meter.result.added < 80 * 2**20
