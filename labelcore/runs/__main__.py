"""``python -m labelcore.runs RUN_FOLDER [TOKEN]``: do one run in this process (what the job
queue's subprocesses run, with the token of the claim the queue took)."""

from __future__ import annotations

import sys

from labelcore.runs.store import RunError
from labelcore.runs.tasks import execute


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m labelcore.runs RUN_FOLDER [CLAIM_TOKEN]", file=sys.stderr)
        return 2
    try:
        run = execute(argv[0], token=argv[1] if len(argv) == 2 else None)
    except RunError as exc:
        print(f"labelcore.runs: {exc}", file=sys.stderr)
        return 2
    return 0 if run.state in ("done", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
