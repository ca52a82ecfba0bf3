import sys
from pathlib import Path

# cc_reference.py (the mpmath reference) and fp_bounds.py (rounding bounds) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
