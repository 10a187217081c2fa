import os
import sys

# Headless MuJoCo rendering (Debian's libosmesa6); must be set before mujoco creates a GL context.
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
