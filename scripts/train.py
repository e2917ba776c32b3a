"""Train a score-SDE model: the same options as ``diffusers-sde train``.

    python scripts/train.py --output-dir out/digits-vp
    accelerate launch --num_processes 2 scripts/train.py --output-dir out/digits-vp
"""

import sys

from diffusers_sde.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
