"""Student losses: the CC normaliser and every classification loss behind one interface.

``cc_log_normaliser`` lives in :mod:`amn.losses.cc`; ``get_loss``, the interface and the
registry in :mod:`amn.losses.library`, the losses themselves in ``likelihood``, ``square``
and ``noel``.
"""

from amn.losses.cc import cc_log_normaliser, cc_loss  # noqa: F401
from amn.losses.library import LOSSES, LossOutput, get_loss  # noqa: F401

# The loss families register themselves in LOSSES (@_register) when imported: here, so that
# library.py, which they import for the base class, needs to import none of them.
from amn.losses import likelihood, noel, square  # noqa: E402,F401
