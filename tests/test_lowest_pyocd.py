"""The end-to-end flash tests again, against the lowest pyOCD that pyproject.toml allows.

pyproject.toml declares ``pyocd>=LOW,<HIGH``; the development environment (``.venv``) holds the
newest. This test builds a virtual environment with pyOCD LOW, and the other runtime and test
dependencies within their declared ranges, under ``.cache/lowest-pyocd/`` in the checkout
(``SCONS_PYOCD_LOWEST_DIR`` to put it elsewhere), then runs ``tests/test_tool_flash.py`` (the
real ``scons flash``/``erase``/``verify`` against the simulated board) and
``tests/test_flash_algo.py`` (our flash algorithm through pyOCD, and pyOCD's own FlashLoader on
our target) and ``tests/test_farm.py`` (boards behind pyOCD's probe server) with it. The environment is built once and reused while pyproject.toml's
dependencies stay the same (its folder is named after their digest); building it needs PyPI
(pip, about a minute). Bounds on its steps only catch hangs.
"""

import fcntl
import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

from conftest import ROOT

#: The e2e flash tests run again with the lowest pyOCD; test_farm.py for the remote probe client,
#: which builds on pyOCD's own TCPClientProbe.
E2E = ["tests/test_tool_flash.py", "tests/test_flash_algo.py", "tests/test_farm.py"]
INSTALL_TIMEOUT = 1800     # seconds: generous, to catch a hang only
RUN_TIMEOUT = 3600


def declared() -> dict:
    """``{"dependencies": [...], "sim": [...], "test": [...]}`` from pyproject.toml (the e2e tests
    flash the simulated board: the ``sim`` extra)."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
        data = tomllib.loads(text)
        return {"dependencies": data["project"]["dependencies"],
                "sim": data["project"]["optional-dependencies"]["sim"],
                "test": data["project"]["optional-dependencies"]["test"]}
    except ImportError:        # Python < 3.11: the two lists are simple enough to read
        def listed(key):
            block = re.search(rf"^{key}\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
            return re.findall(r'"([^"]+)"', block)
        return {"dependencies": listed("dependencies"), "sim": listed("sim"), "test": listed("test")}


def lowest_pyocd(dependencies) -> str:
    spec = next(d for d in dependencies if re.match(r"pyocd\b", d))
    match = re.search(r">=\s*([0-9][0-9.]*)", spec)
    assert match, f"pyproject.toml must give pyOCD a lower bound: {spec}"
    return match.group(1)


def requirements() -> list:
    deps = declared()
    low = lowest_pyocd(deps["dependencies"])
    pinned = [f"pyocd=={low}" if re.match(r"pyocd\b", d) else d for d in deps["dependencies"]]
    return pinned + deps["sim"] + deps["test"]


def environment() -> Path:
    """The virtual environment with the lowest pyOCD, built when missing (under a lock)."""
    wanted = requirements()
    digest = hashlib.sha256("\n".join(wanted + [sys.version]).encode()).hexdigest()[:12]
    base = Path(os.environ.get("SCONS_PYOCD_LOWEST_DIR") or ROOT / ".cache" / "lowest-pyocd")
    base.mkdir(parents=True, exist_ok=True)
    where = base / f"py{sys.version_info[0]}.{sys.version_info[1]}-{digest}"
    python = where / "bin" / "python"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = where / "ready"
        if not ready.exists():
            venv.EnvBuilder(clear=True, with_pip=True).create(where)
            result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                     *wanted], capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            assert result.returncode == 0, (
                f"pip could not install {' '.join(wanted)} into {where} (PyPI must be reachable):\n"
                + result.stdout[-3000:] + result.stderr[-3000:])
            ready.write_text("\n".join(wanted) + "\n")
    return python


def test_the_e2e_flash_tests_pass_with_the_lowest_declared_pyocd(tmp_path):
    low = lowest_pyocd(declared()["dependencies"])
    python = environment()
    version = subprocess.run([str(python), "-c", "import pyocd; print(pyocd.__version__)"],
                             capture_output=True, text=True, timeout=300)
    def parts(text):
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        while numbers and numbers[-1] == 0:
            numbers.pop()
        return numbers
    assert parts(version.stdout.strip()) == parts(low), version.stdout + version.stderr
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SCONS_PYOCD_STATE_DIR", "SCONS_PYOCD_SIM_DIR", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--basetemp", str(tmp_path / "lowest"), *E2E],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, f"with pyOCD {low}:\n" + result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(r"\b\d+ passed\b", result.stdout) and " failed" not in result.stdout
