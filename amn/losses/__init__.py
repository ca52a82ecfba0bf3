"""Student losses: the CC normaliser and every classification loss behind one interface.

``cc_log_normaliser`` lives in :mod:`amn.losses.cc`; ``get_loss`` and the other
losses in :mod:`amn.losses.library`.
"""

from amn.losses.cc import cc_log_normaliser, cc_loss  # noqa: F401

try:
    from amn.losses.library import LOSSES, LossOutput, get_loss  # noqa: F401
except ImportError:  # pragma: no cover - during bootstrap only
    pass
