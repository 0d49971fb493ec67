"""`python -m deps_fast.train`: train a once-for-all supernet (DεpS by default); see --help."""
from __future__ import annotations

import errno
import sys
from typing import Optional


def main(argv: Optional[list] = None) -> int:
    """Exit status 0 on success or a clean stop (resume with --resume). 2 with one line (or one paragraph) on a
    user's mistake or a condition the user must act on: bad options, data or backend, a folder in use or holding
    another run, no usable checkpoint, an unreadable image, divergence, a disk too full for the final save.
    Anything else keeps its traceback: it is a bug or a fault worth reporting, not a user's typo."""
    from deps_fast.ops import BackendUnavailable
    from deps_fast.trainer.distributed import shutdown
    from deps_fast.trainer.loaders import BadImage
    from deps_fast.trainer.loop import DivergedError, SaveError, Trainer
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
    except (DivergedError, SaveError, BadImage) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"error: {exc} (the newest checkpoint in {trainer.out / 'checkpoints'} is intact; rerun with "
              f"--resume once the cause is fixed)", file=sys.stderr)
        return 2
    finally:
        trainer.close()
        shutdown(trainer.world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
