"""Make diffusers' loaders know diffusers_sde: the one place where this package plugs into diffusers.

diffusers 0.42 records a component by its library and refuses, on load, a library it does not know unless already
imported, and on the Hub it demands a `<component>/<module>.py` file for it. Registering ``diffusers_sde`` as a
loadable library makes `save_pretrained` record components as ``["diffusers_sde", "ClassName"]`` and lets both
``ScoreSDEPipeline.from_pretrained`` and ``DiffusionPipeline.from_pretrained`` load them from a folder or the Hub.
``DiffusionPipeline.from_pretrained`` looks the pipeline class up in the ``diffusers`` namespace, so ours is placed there.
"""

import diffusers
from diffusers.pipelines import pipeline_loading_utils

_LOAD_METHODS = ["save_pretrained", "from_pretrained"]


def register(pipeline_classes):
    loadable = {"ModelMixin": _LOAD_METHODS, "SchedulerMixin": _LOAD_METHODS, "DiffusionPipeline": _LOAD_METHODS}
    pipeline_loading_utils.LOADABLE_CLASSES.setdefault("diffusers_sde", loadable)
    pipeline_loading_utils.ALL_IMPORTABLE_CLASSES.update(loadable)
    for pipeline_class in pipeline_classes:
        if not hasattr(diffusers, pipeline_class.__name__):
            setattr(diffusers, pipeline_class.__name__, pipeline_class)
