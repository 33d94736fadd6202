"""How long a preset's own schedule trains on each kind of CPU, and the one line `ganforge train`
prints where the preset's time budget will not hold on this CPU.

The `*-best` presets promise a quality in a budget (30 or 60 minutes on 2 CPU cores). Their
schedules are fixed in images, so a record means the same on every machine, and the minutes
differ by CPU: with native bf16 (AVX-512 BF16 or AMX) `train.amp=auto` trains in bf16, with only
AVX2 it trains in fp32 on 256-bit vectors, 2 to 3 times slower on the same cores. The minutes
below were measured by `python -m benchmarks.cpu_kinds` (records/quality/cpu-kinds.json: an Intel
Xeon with AMX, 2 cores, once as it is and once with every kernel library capped at AVX2), so a
user whose CPU lacks bf16 learns at the start how many epochs fit the budget, not at its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuTiming:
    """Minutes the preset's own epochs take on 2 cores of each kind, and the budget it promises."""

    budget_minutes: float
    bf16_minutes: float    # native bf16: amp=auto trains in bf16 (a private run in fp32, as everywhere)
    avx2_minutes: float    # AVX2 only: fp32

    def describe(self) -> str:
        return (f"budget {self.budget_minutes:g} min on 2 CPU cores: measured {self.bf16_minutes:.0f} min with native "
                f"bf16, {self.avx2_minutes:.0f} min with only AVX2")

    def note(self, preset: str, *, preset_epochs: int, epochs: int, native_bf16: bool) -> str:
        """One line where `epochs` took longer than the budget on 2 cores of this kind of CPU, else "".
        Measured on 2 cores only: more cores help, by less than their number at these batch sizes."""
        measured = self.bf16_minutes if native_bf16 else self.avx2_minutes
        minutes = measured * epochs / preset_epochs
        if minutes <= self.budget_minutes:
            return ""
        kind = "with native bf16" if native_bf16 else "without native bf16 (AVX2, fp32)"
        fit = max(1, math.floor(preset_epochs * self.budget_minutes / measured))
        return (f"note: on 2 cores of a CPU {kind}, {epochs} epochs of preset {preset!r} take about {minutes:.0f} min, "
                f"past its {self.budget_minutes:g}-minute budget; there --epochs {fit} fits it")
