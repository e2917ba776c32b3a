"""Running the installed ``diffusers-sde`` console script in a subprocess, as a user does."""

import os
import subprocess
import sys

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "diffusers-sde")


def run_cli(*args, cwd, timeout=300):
    """``diffusers-sde *args`` in ``cwd``, offline, one thread; returns the CompletedProcess (text stdout/stderr)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([CONSOLE_SCRIPT, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
