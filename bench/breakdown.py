"""Where a flash's device time goes, step by step (not a scenario: ``changes`` and ``full`` use it).

Runs one flash in a fresh process, the way ``scons flash`` does it (``operations``' pyOCD layer:
``Connection.open``, the identity checks, ``Connection.flash``), on a simulated board at the
benchmarks' SWD frequency, and reads the board's device clock (``SimProbe.chip.now``) at each
boundary: the connect, the identity checks, loading the flash algorithm, the comparison with the
chip, the blank check, the erase-only calls, the calls that program (each ends with the CRC
check of the pages it programmed: the verify), the clocks put back, the reset. Alongside, the
plan's own estimate of each step (``Plan.steps``).
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from ._common import SITE_SCONS

SCRIPT = textwrap.dedent("""\
    import json, sys
    sys.path.insert(0, {site!r})
    from scons_pyocd import session as S
    from scons_pyocd.images import load_image
    probe = S.find_probe({board!r})
    marks = [("connect", 0.0)]

    def mark(phase):
        chip = probe.chip
        marks.append((phase, chip.now if chip else marks[-1][1]))

    def wrap(cls, name, before, after="host"):
        original = getattr(cls, name)
        def wrapped(self, *args, **kwargs):
            if before is not None:
                mark(before(self, *args) if callable(before) else before)
            try:
                return original(self, *args, **kwargs)
            finally:
                if after is not None:
                    mark(after)
        setattr(cls, name, wrapped)

    def kind(self, call, *rest):
        codes = {{code for code, _ in call.commands()}}
        if 3 in codes:                  # PROG: with the erases of its pages and their CRC checks
            return "program + verify"
        if codes & {{1, 2}}:              # ERASE, MASS
            return "erase"
        if codes == {{7}}:                # CLOCK 0 alone
            return "clocks back"
        return "blank check" if in_blank[0] else "compare"

    in_blank = [False]

    def blank_wrapper(original):
        def wrapped(self, *args, **kwargs):
            in_blank[0] = True
            try:
                return original(self, *args, **kwargs)
            finally:
                in_blank[0] = False
        return wrapped

    S._FpecExecutor.blank = blank_wrapper(S._FpecExecutor.blank)
    wrap(S.Connection, "check_identity", "identity")
    wrap(S.Connection, "chip_unique_id", "identity")
    wrap(S._FpecExecutor, "_ensure", "load algorithm")
    wrap(S._FpecExecutor, "_start", kind, None)
    wrap(S._FpecExecutor, "_wait", None, "host")
    wrap(S.Connection, "reset_after", "reset")
    settings = S.Settings(target="stm32f100rb", frequency={frequency}, erase={erase!r}, verify={verify!r})
    image = load_image({image!r}, 0x08000000)
    with S.Connection.open(settings, probe) as connection:
        mark("host")
        connection.chip_unique_id()
        result = connection.flash(image)
        mark("end")
    steps = {{}}
    for (name, start), (_, end) in zip(marks, marks[1:]):
        steps[name] = steps.get(name, 0.0) + end - start
    print(json.dumps({{"measured": steps, "total": marks[-1][1],
                      "estimated": [[s.name, s.what, s.seconds] for s in result.plan.steps],
                      "summary": result.summary()}}))
    """)


def breakdown(board: str, image: Path, frequency: int, erase: str = "auto", verify: str = "crc") -> dict:
    """The measured device time of each step of one flash of ``image`` onto ``board`` as it is
    now, and the plan's estimates: ``{"measured": {step: s}, "total": s, "estimated": [[step,
    what, s]], "summary": line}``."""
    code = SCRIPT.format(site=str(SITE_SCONS), board=board, frequency=frequency, image=str(image),
                         erase=erase, verify=verify)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the breakdown run failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(title: str, found: dict, reference: dict) -> None:
    """Print the breakdown: each step's measured device time, and the plan's estimates."""
    print(f"{title}: device time per step (measured on the simulated board; the plan's estimate)")
    for step, seconds in found["measured"].items():
        if seconds > 0:
            print(f"  {step:26} {seconds * 1000:9.2f} ms")
    print(f"  {'total':26} {found['total'] * 1000:9.2f} ms   ({found['summary']})")
    for step, what, seconds in found["estimated"]:
        print(f"    plan: {step:11} {what[:64]:64} {seconds * 1000:8.2f} ms")
    for name, seconds in reference.items():
        print(f"    reference: {name:40} {seconds * 1000:8.2f} ms")
