import sys

from amn.cli import main

sys.exit(main())
