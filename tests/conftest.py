import ctypes.util
import os
import sys

import pytest

# Headless MuJoCo rendering (Debian's libosmesa6); must be set before mujoco creates a GL context.
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers share the cores: one torch thread each (set before torch loads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def opengl_backend_missing():
    """Why MuJoCo cannot render here, or None. Only OSMesa is detected up front (the other backends need a display
    or a GPU that the user chose on purpose)."""
    if os.environ["MUJOCO_GL"] == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        return "MuJoCo rendering needs OSMesa here: `apt-get install libosmesa6` (or set MUJOCO_GL=egl on a GPU)"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_opengl: renders a MuJoCo frame (skipped without a backend, except in CI)")


def pytest_collection_modifyitems(config, items):
    reason = opengl_backend_missing()
    if reason is None or os.environ.get("CI") == "true":  # in CI a missing backend is a failure, not a skip
        return
    for item in items:
        if "needs_opengl" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def generate(net, e):
    """The parameters a HyperNetwork generates from e: [(W (batch, n_out, n_in), b (batch, n_out)) per layer]."""
    return [(w(e).view(*e.shape[:-1], b.out_features, -1), b(e)) for w, b in zip(net.weight_heads, net.bias_heads)]
