"""Entry point for ``accelerate launch`` in the launch-check test: report processes as a trainer does.

Usage: ``accelerate launch [--cpu|--multi_gpu] --num_processes 2 tests/training/launch_announce.py``.
Prints the trainer's start line (main process) or, when the launch is refused, ``error: ...`` and exits 2.
"""

from __future__ import annotations

import sys


def main() -> int:
    from accelerate import Accelerator

    from sound2image.errors import UsageError
    from sound2image.training.checkpoints import announce_processes

    accelerator = Accelerator()
    try:
        announce_processes(
            "train soundiff",
            accelerator.num_processes,
            accelerator.device.type,
            2,
            is_main_process=accelerator.is_main_process,
            label="probe",
        )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
