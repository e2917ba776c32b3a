"""Saving that never leaves a half-written model or pipeline folder."""

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


def save_pipeline_atomically(pipeline, folder):
    """``pipeline.save_pretrained(folder)`` that never leaves a folder loading old and new parts together, and keeps
    what else ``folder`` holds (a training run's checkpoints/ and samples/).

    The pipeline is written to a temporary folder inside ``folder``; the old ``model_index.json`` is removed first, each
    component is then moved into place and ``model_index.json`` last: a save stopped halfway leaves a folder that does
    not load as a pipeline, instead of one that loads new weights with an old scheduler."""
    os.makedirs(folder, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tmp-save-", dir=folder)
    try:
        pipeline.save_pretrained(temporary)
        index = os.path.join(folder, "model_index.json")
        if os.path.exists(index):
            os.remove(index)
        for name in sorted(os.listdir(temporary), key=lambda name: name == "model_index.json"):  # the index last
            target = os.path.join(folder, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(temporary, name), target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
