"""Loads the compiled extension (``_C.so``) that registers ``torch.ops.dsa``.

The extension is the installed ``dsa/_C*.so`` next to this file, or the file named by the environment
variable ``DSA_TORCH_LIBRARY`` (the test suite runs the package from the source tree against a build).
"""
import ctypes
import glob
import os

import torch

_ENV = "DSA_TORCH_LIBRARY"


def _find() -> str:
    path = os.environ.get(_ENV)
    if path:
        if not os.path.isfile(path):
            raise ImportError(f"dsa: {_ENV}={path} is not a file")
        return path
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_C*.so")))
    if not found:
        raise ImportError(
            f"dsa: the compiled extension _C.so is not in {here}; install the package with `pip install .` "
            f"or point {_ENV} at a build's python/dsa/_C.so")
    return found[0]


_PATH = _find()
torch.ops.load_library(_PATH)


def library_path() -> str:
    """The path of the loaded extension."""
    return _PATH


def version() -> str:
    """The version of the C++ library the extension was built from (the CMake project version)."""
    fn = ctypes.CDLL(_PATH).dsa_torch_version
    fn.restype = ctypes.c_char_p
    return fn().decode()
