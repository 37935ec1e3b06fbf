"""``python -m llmtrain.engine.universal_convert [--trust-pickle] DS_TO_UNIVERSAL_ARGS...``

DeepSpeed's ``ds_to_universal`` (a checkpoint for another data-parallel size) run with its files read
by torch's restricted unpickler (:mod:`llmtrain.engine.safe_load`). It runs in a child process of
the resuming rank, which keeps the conversion's memory out of the training process; a refused file
ends the child with :data:`EXIT_UNSAFE` and the error paragraph as the last line of stderr.
"""

from __future__ import annotations

import sys

from llmtrain.engine.safe_load import UnsafeCheckpointFile, restricted_torch_load

EXIT_UNSAFE = 3
TRUST_FLAG = "--trust-pickle"
OPT_IN_PREFIX = "--opt-in="


def main(argv: list[str]) -> int:
    trust = TRUST_FLAG in argv
    opt_in = next((a[len(OPT_IN_PREFIX):] for a in argv if a.startswith(OPT_IN_PREFIX)), TRUST_FLAG)
    rest = [a for a in argv if a != TRUST_FLAG and not a.startswith(OPT_IN_PREFIX)]
    from deepspeed.checkpoint import ds_to_universal

    sys.argv = ["ds_to_universal", *rest]
    args = ds_to_universal.parse_arguments()
    if trust:
        ds_to_universal.main(args)
        return 0
    try:
        with restricted_torch_load(opt_in):
            ds_to_universal.main(args)
    except UnsafeCheckpointFile as e:
        print(str(e).replace("\n", " "), file=sys.stderr)
        return EXIT_UNSAFE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
