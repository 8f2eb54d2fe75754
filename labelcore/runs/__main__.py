"""``python -m labelcore.runs RUN_FOLDER``: do one run in this process (what the job
queue's subprocesses run)."""

from __future__ import annotations

import sys

from labelcore.runs.tasks import execute


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m labelcore.runs RUN_FOLDER", file=sys.stderr)
        return 2
    run = execute(argv[0])
    return 0 if run.state in ("done", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
