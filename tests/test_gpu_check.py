"""benchmarks/gpu_check.sh's probe cannot be fooled: importing CuPy and counting devices is not enough,
it must compile a kernel and run it and a matrix product, with the right numbers.

Checked with stand-ins for CuPy put first on PYTHONPATH (no GPU here), each a way a machine can look
like a GPU machine and not be one; ``bash benchmarks/gpu_check.sh --probe`` runs the probe alone.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"

FAKE_CUPY = textwrap.dedent('''
    """A CuPy that finds one device; how its kernels behave is FAKE_CUPY's."""
    import os
    import types

    import numpy as np

    __version__ = "14.0.0+fake"
    MODE = os.environ["FAKE_CUPY"]


    class _Runtime:
        @staticmethod
        def getDeviceCount():
            return 1

        @staticmethod
        def getDeviceProperties(device):
            return {"name": b"Fake GPU"}


    cuda = types.SimpleNamespace(runtime=_Runtime)


    class ndarray(np.ndarray):
        def get(self):
            return np.asarray(self)


    def asarray(a):
        return np.asarray(a).view(ndarray)


    class ElementwiseKernel:
        def __init__(self, in_params, out_params, operation, name):
            if MODE == "no-nvrtc":      # what CuPy says when NVRTC is missing
                raise RuntimeError("CompileException: libnvrtc.so.12: cannot open shared object file")

        def __call__(self, x):
            return (np.asarray(x) * (1 if MODE == "wrong" else 2)).view(ndarray)
''')


def probe(tmp_path, mode):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    package = tmp_path / "cupy"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_CUPY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHON": sys.executable, "FAKE_CUPY": mode}
    done = subprocess.run([bash, str(SCRIPT), "--probe"], env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, (done.stdout + done.stderr).strip()


def test_a_device_that_compiles_and_multiplies_passes(tmp_path):
    code, said = probe(tmp_path, "works")
    assert code == 0, said
    assert "1 CUDA device(s), device 0 Fake GPU: compiled a kernel, ran it and a product" in said


@pytest.mark.parametrize("mode, reason", [
    ("no-nvrtc", "cannot compile and run a kernel and a product"),     # a driver, but no NVRTC
    ("wrong", "gave wrong numbers"),
])
def test_importing_cupy_and_counting_devices_is_not_enough(tmp_path, mode, reason):
    code, said = probe(tmp_path, mode)
    assert code != 0 and reason in said, said
    if mode == "no-nvrtc":
        assert "libnvrtc" in said and "cuda-toolkit[nvrtc]" in said
