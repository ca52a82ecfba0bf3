"""The student's arithmetic: ``precision: auto | float32 | bfloat16`` in the config.

``bfloat16`` runs the student's forward and backward (the update, and acting) under
``torch.autocast``: convolutions and matrix products in bfloat16, everything autocast keeps in
float32 (softmax, log-softmax, reductions) in float32. The master weights, the Adam state and
the checkpoints stay float32, the loss is computed from the logits cast back to float32, and the
CC normaliser computes in float64 inside whatever it is given.

The experts label in float32 in every precision. Measured on real states of the four shipped
games (200 states each): bfloat16 labelling moves the soft targets by up to 3.8e-3–9.5e-3,
28–59 times what their float16 storage in the replay already costs (1.3e-4–1.8e-4), so it
would not be a rounding of the target but a change of it.

``auto`` takes bfloat16 where the device runs it natively and float32 elsewhere:
- CPU: AVX-512-BF16 or AMX-BF16 (``torch.cpu._is_avx512_bf16_supported``,
  ``torch.cpu._is_amx_tile_supported``). Without them oneDNN emulates bfloat16, which is
  slower than float32.
- CUDA: ``torch.cuda.is_bf16_supported()`` (compute capability 8.0 and newer).
``scripts/bench_trainer.py`` times every part in both precisions on the machine it runs on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from amn.errors import UsageError

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 arithmetic units (not an emulation)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(check()) for check in checks if check is not None)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"float32"`` or ``"bfloat16"`` for the config value ``precision`` on ``device``."""
    if precision not in PRECISIONS:
        raise UsageError(f"config: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


def describe(precision: str, requested: str, device: torch.device) -> str:
    """One line for the run's log: what was chosen and why."""
    why = ""
    if requested == "auto":
        why = (f" (auto: {device.type} has native bfloat16)" if precision == "bfloat16"
               else f" (auto: no native bfloat16 on {device.type})")
    elif precision == "bfloat16" and not native_bfloat16(device):
        why = f" (asked for; {device.type} has no native bfloat16, so it is emulated and likely slower)"
    return f"precision: {precision}{why}"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """The student's forward under ``precision`` (a no-op for float32)."""
    if precision == "bfloat16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
