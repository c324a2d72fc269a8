"""What generator training reports while it runs: one :class:`GeneratorEvent` per step, grid or warning.

The GANs (``gan.py``) and the small diffusion model (``ddpm.py``) both report through it, so the page
and the job runner read one kind of event whichever family trains. Where this stops: no training, no
drawing (``ui/generate_views.py`` turns the events into curves and sample grids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GeneratorEvent:
    """One progress report: kind is "step", "samples", "warning" or "done"."""

    kind: str
    step: int
    total_steps: int
    values: dict[str, float]  # step: losses (d_loss, g_loss, gp; loss for diffusion); warning: ratio; else {}
    grid: np.ndarray | None = None  # samples: uint8 (classes*R, 8*R, 3), one row per class, fixed noise
    message: str = ""  # warning: the text
