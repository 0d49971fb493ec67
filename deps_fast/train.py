"""`python -m deps_fast.train`: train a once-for-all supernet (DεpS by default); see --help."""
from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list] = None) -> int:
    """Exit status 0 on success or a clean stop (resume with --resume), 2 on bad options or data."""
    from deps_fast.ops import BackendUnavailable
    from deps_fast.trainer.loop import train
    from deps_fast.trainer.options import parse_options

    try:
        train(parse_options(argv))
    except (ValueError, BackendUnavailable) as exc:  # bad options, data, backend, resume: one clear line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
