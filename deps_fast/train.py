"""`python -m deps_fast.train`: train a once-for-all supernet (DεpS by default); see --help."""
from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list] = None) -> int:
    """Exit status 0 on success or a clean stop (resume with --resume), 2 on a setup mistake (options, data,
    backend, a checkpoint of other options) with one line saying what is wrong. Once training has started,
    an error keeps its traceback: it is a bug or a fault worth reporting, not a user's typo."""
    from deps_fast.ops import BackendUnavailable
    from deps_fast.trainer.loop import Trainer
    from deps_fast.trainer.options import parse_command_line
    from deps_fast.trainer.plan import print_plan

    try:
        options, mode = parse_command_line(argv)
        if mode is not None:  # --plan / --plan-json: no data is read, nothing trains
            print_plan(options, as_json=mode == "plan-json")
            return 0
        trainer = Trainer(options)
    except (ValueError, BackendUnavailable, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        trainer.run()
    finally:
        from deps_fast.trainer.distributed import shutdown
        shutdown(trainer.world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
