"""``python/dspex/_native.pyi`` describes the extension as built: mypy's stubtest compares every
name, class, method, property and signature of the stub with the imported ``dspex._native``
(a signature changed in ``crates/pysdk`` without the stub fails here)."""

import os
import site
import subprocess
import sys
import sysconfig

import pytest

import dspex

pytest.importorskip("mypy.stubtest")


def test_the_stub_of_the_extension_matches_it(tmp_path):
    # The stub next to the module that is imported: mypy finds an installed package by itself
    # (PEP 561, py.typed), a source tree (editable install) through mypy_path.
    parent = os.path.realpath(os.path.dirname(os.path.dirname(dspex.__file__)))
    installed = {os.path.realpath(p) for p in (*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))}
    (tmp_path / "mypy.ini").write_text("[mypy]\n" + ("" if parent in installed else f"mypy_path = {parent}\n"))
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "dspex._native", "--mypy-config-file", "mypy.ini"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
