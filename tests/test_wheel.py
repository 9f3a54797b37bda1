"""The release wheel works on its own: installed into a clean virtualenv, with no Rust toolchain
on PATH and nothing from the checkout importable, it runs the README's quickstart.

scripts/test.sh builds the wheel once (scripts/build-wheel.sh) and passes its path in
DSPEX_WHEEL. Without it the test is skipped, or fails under CI=true.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.py"  # README, "Two commands", 1.

# name-version-pythontag-abitag-platformtag.whl: one abi3 wheel for CPython 3.9+, manylinux
WHEEL_NAME = re.compile(r"^dspex-(?P<version>[^-]+)-cp39-abi3-(?P<platform>manylinux_\d+_\d+_[a-z0-9_]+)\.whl$")


@pytest.fixture(scope="module")
def wheel() -> pathlib.Path:
    path = os.environ.get("DSPEX_WHEEL")
    if not path:
        message = "DSPEX_WHEEL is not set (scripts/test.sh sets it to the wheel of scripts/build-wheel.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    wheel = pathlib.Path(path).resolve()
    assert wheel.is_file(), f"DSPEX_WHEEL={path} is not a file"
    return wheel


def _run(args: list[str], env: dict[str, str], cwd: pathlib.Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} exited with {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


def test_wheel_is_abi3_manylinux_with_the_extension(wheel):
    m = WHEEL_NAME.match(wheel.name)
    assert m, f"unexpected wheel name: {wheel.name}"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"dspex-{m['version']}.dist-info/WHEEL").decode()
    assert f"Tag: cp39-abi3-{m['platform']}" in meta.splitlines()
    assert "Root-Is-Purelib: false" in meta.splitlines()
    assert [n for n in names if n.endswith(".so")] == ["dspex/_native.abi3.so"]
    assert "dspex/__init__.py" in names and "dspex/py.typed" in names


def test_wheel_runs_the_quickstart_in_a_clean_venv_without_rust(wheel, tmp_path):
    version = WHEEL_NAME.match(wheel.name)["version"]
    venv = tmp_path / "venv"
    # the test interpreter may itself be a virtualenv; venv makes the new one from its base Python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / "bin"
    path = os.pathsep.join([str(bindir), "/usr/bin", "/bin"])
    for tool in ("cargo", "rustc", "maturin"):
        assert shutil.which(tool, path=path) is None, f"{tool} is on the test PATH {path}"
    home = tmp_path / "home"
    home.mkdir()
    # Nothing inherited: no PYTHONPATH/VIRTUAL_ENV/CARGO_* pointing back at the checkout or toolchain.
    env = {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    # dspex declares no runtime dependency, so the wheel installs without the package index.
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"dspex-{version}.dist-info/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    offline = [] if requires else ["--no-index"]  # should it gain dependencies, they come from the index
    _run([str(bindir / "python"), "-m", "pip", "install", "-q", *offline, str(wheel)], env, tmp_path)

    # cwd=tmp_path: the checkout is not on sys.path, so dspex can only come from the venv.
    probe = (
        "import dspex, dspex._native, sys; "
        "print(dspex.__version__); print(dspex.__file__); print(dspex._native.__file__); print(sys.prefix)"
    )
    lines = _run([str(bindir / "python"), "-c", probe], env, tmp_path).stdout.splitlines()
    assert lines[0] == version
    site = pathlib.Path(lines[3]).resolve()
    assert site == venv.resolve()
    for module_file in map(pathlib.Path, lines[1:3]):
        assert module_file.resolve().is_relative_to(venv.resolve()), module_file
        assert not module_file.resolve().is_relative_to(ROOT), module_file
    assert pathlib.Path(lines[2]).name == "_native.abi3.so"

    # The README's quickstart (examples/quickstart.py), run from a copy outside the checkout.
    script = tmp_path / "quickstart.py"
    shutil.copyfile(QUICKSTART, script)
    out = _run([str(bindir / "python"), str(script)], env, tmp_path).stdout
    m = re.search(r"^best params: (\{.*\})$", out, re.M)
    assert m, out
    assert set(ast.literal_eval(m[1])) == {"alpha", "lr", "steps"}
    m = re.search(r"^best value \(validation RMSE\): (\d+\.\d{4})$", out, re.M)
    assert m, out
    assert 0 < float(m[1]) < 10

    # The console script the wheel declares ([project.scripts] dspex = "dspex.cli:main").
    assert "serve" in _run([str(bindir / "dspex"), "--help"], env, tmp_path).stdout
