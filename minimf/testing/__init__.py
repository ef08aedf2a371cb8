"""Test doubles that ship with minimf: the strict CuPy stand-in (strict_cupy.py).

Part of the ground: imports NumPy only. No training code imports it; minimf.backend returns it for
the cupy backend when MINIMF_STRICT_CUPY=1.
"""
