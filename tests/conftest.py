import sys
from pathlib import Path

# cc_reference.py (the mpmath reference) lives beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
