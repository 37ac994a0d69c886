"""surfmap: flatten cortical surfaces onto the unit square and turn vertex metrics into images.

Conformal map by discrete Ricci flow, area-preserving map by semi-discrete optimal transport,
barycentric rasterization to 224 x 224 images, after "Deep transfer learning for cerebral cortex using
area-preserving geometry mapping" (Cerebral Cortex 32(14):2972-2984, 2022).
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> module; imported on first use so that ``import surfmap`` stays fast
_API = {
    "SurfmapError": "exceptions",
    "FormatError": "exceptions",
    "MeshError": "exceptions",
    "MetricError": "exceptions",
    "MaskError": "exceptions",
    "TemplateError": "exceptions",
    "ConvergenceError": "exceptions",
    "InputFileNotFoundError": "exceptions",
    "ParameterError": "exceptions",
    "BatchError": "exceptions",
    "Mesh": "mesh",
    "CutMesh": "mesh",
    "cut": "mesh",
    "read_surface": "io",
    "read_metric": "io",
    "read_mask": "io",
    "write_surface": "io",
    "write_metric": "io",
    "write_label": "io",
    "load_template": "templates",
    "Hemisphere": "templates",
    "FlatMap": "flatmap",
    "flatten": "pipeline",
    "conformal_map": "conformal",
    "area_preserving_map": "transport",
    "distortion": "distortion",
    "Distortion": "distortion",
    "Rasterizer": "raster",
    "rasterize": "raster",
    "Resampler": "resample",
    "project_unproject": "resample",
    "to_template": "resample",
    "load_standard_sphere": "templates",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'surfmap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


class _Package(types.ModuleType):
    """``surfmap.distortion`` is both a submodule and the public function of that submodule: importing the
    submodule sets the package attribute to the module, which must not shadow the function."""

    def __setattr__(self, name, value):
        if name == "distortion" and isinstance(value, types.ModuleType):
            value = value.distortion
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
