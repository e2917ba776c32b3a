"""Saving that never leaves a half-written folder."""

import os
import shutil
import tempfile


def save_pretrained_atomically(model, folder):
    """``model.save_pretrained`` into a temporary folder beside ``folder``, then rename it into place: an interrupted
    save leaves the previous folder (or none), never a half-written one."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tmp-save-", dir=parent)
    try:
        model.save_pretrained(temporary)
        if os.path.exists(folder):
            shutil.rmtree(folder)
        os.replace(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
