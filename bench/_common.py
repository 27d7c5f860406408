"""Shared helpers for the benchmarks: paths, a private simulator directory, result output."""

import json
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE_SCONS = ROOT / "site_scons"
SHARED_FIRMWARE = ROOT.parent / "shared" / "firmware"
RESULTS = ROOT / "bench" / "results"
#: Size of the image of the ``scons flash`` scenarios (``--image-bytes``): the founding
#: scenario's nuttx.bin by default.
IMAGE_BYTES = 78_128
#: The chip's half-word programming time (typical) and mass erase time (DS6517, as the simulator's
#: defaults), in seconds.
HALFWORD_S, ERASE_S = 52.5e-6, 20e-3

if str(SITE_SCONS) not in sys.path:
    sys.path.insert(0, str(SITE_SCONS))


def private_state() -> Path:
    """Point the tool and the simulator at a fresh temporary state directory.

    The processes the benchmarks start cache their compiled bytecode (in the run's temporary
    directory, ``PYTHONPYCACHEPREFIX``), as an installed tool's imports do: an environment
    with ``PYTHONDONTWRITEBYTECODE`` set would make every ``scons`` recompile the tool's
    modules from source and charge that to the no-op."""
    root = Path(tempfile.mkdtemp(prefix="scons-pyocd-bench-"))
    os.environ["SCONS_PYOCD_STATE_DIR"] = str(root)
    os.environ["SCONS_PYOCD_SIM_DIR"] = str(root / "sim")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE_SCONS), os.environ.get("PYTHONPATH")]))
    return root


def chip_limit(nbytes: int) -> float:
    """The chip's limit for ``nbytes`` (``../shared/REFERENCE.md``): its half-words programmed
    plus one mass erase, in seconds."""
    return (nbytes + 1) // 2 * HALFWORD_S + ERASE_S


def synthetic_image(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(size))


def nuttx_sized_image() -> bytes:
    """78,128 bytes, the founding scenario's nuttx.bin size: two real NuttX builds back to back when
    ../shared/firmware is present, synthetic bytes otherwise."""
    v1 = SHARED_FIRMWARE / "stm32vldiscovery-nsh-v1" / "nuttx.bin"
    if v1.exists():
        data = v1.read_bytes()
        return (data + data)[:78_128]
    return synthetic_image(78_128)


def flash_image() -> bytes:
    """The image of the ``scons flash`` scenarios: :data:`IMAGE_BYTES` long, NuttX's bytes
    where there are enough (see :func:`nuttx_sized_image`), random bytes after them."""
    data = nuttx_sized_image()
    if IMAGE_BYTES <= len(data):
        return data[:IMAGE_BYTES]
    return data + synthetic_image(IMAGE_BYTES - len(data), seed=11)


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
