"""`python -m deps_fast.search`: see deps_fast/search/cli.py and --help."""
import sys

from deps_fast.search.cli import main

if __name__ == "__main__":
    sys.exit(main())
