"""``python -m harness COMMAND``: the project's entry points by one name.

    python -m harness doctor            check the environment (lmms-eval, PyAV, mamba-ssm, Slurm, disk)
    python -m harness compressors [NAME]   the compressor registry (or one entry's fields)

The jobs themselves have their own modules: ``python -m harness.sweep`` (a study), ``harness.train``,
``harness.evaluate``, ``harness.report``, ``harness.data``.
"""

from __future__ import annotations

import sys

from harness import doctor
from harness.model import list_compressors

COMMANDS = {"doctor": doctor.main, "compressors": list_compressors.main}
JOBS = "harness.sweep STUDY.yaml | harness.train CONFIG | harness.evaluate RUN | harness.report | harness.data"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: python -m harness {{{','.join(COMMANDS)}}} [options]\n"
              f"  doctor        check that this environment can run the harness\n"
              f"  compressors   the compressor registry: names, kinds, an entry's fields\n"
              f"jobs: python -m {JOBS} (each has --help)", file=sys.stderr if argv and argv[0] not in
              ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
