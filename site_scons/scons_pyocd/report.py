"""The lines the tool prints about a flash: the one result line, and the page map.

The result line names the board (target and probe), the image and its address range,
the pages changed, erased and programmed, the bytes programmed, the wall time of the
whole operation (connecting included) and, where known, the device time the flash plan
estimated::

    flash stm32f100rb via sim-a: fw.hex 0x08000000-0x08004FFF: 3 of 20 pages changed
    (3 erased, 3 programmed), 3 KiB in 1.4 s (device est. 0.3 s), verified (crc)

(one line). Pure functions of a :class:`~scons_pyocd.session.FlashResult`; no pyOCD.
"""

from typing import Dict, List, Optional, Sequence, Tuple

from .ranges import merge

Range = Tuple[int, int]

#: Page map characters.
UNCHANGED, ERASED, PROGRAMMED, FILLED = ".", "e", "P", "p"
MAP_WIDTH = 64


def kib(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    return f"{value:.0f} KiB" if value == int(value) or value >= 10 else f"{value:.1f} KiB"


def span(ranges: Sequence[Range], most: int = 3) -> str:
    """Address ranges (end exclusive) as ``0x08000000-0x08004FFF`` (inclusive ends), joined;
    after ``most`` of them, how many more."""
    merged = merge(ranges)
    text = ", ".join(f"0x{lo:08X}-0x{hi - 1:08X}" for lo, hi in merged[:most])
    return text + (f" and {len(merged) - most} more" if len(merged) > most else "") if merged else "(empty)"


def _plan_pages(result) -> Optional[Dict[int, str]]:
    """page -> map character, from the flash plan (None without one)."""
    plan = getattr(result, "plan", None)
    if plan is None:
        return None
    pages = {page: ERASED if plan.mass_erase else UNCHANGED for page in plan.page_sizes}
    for page in plan.erase:
        pages[page] = ERASED
    for write in plan.program:
        pages[write.address] = PROGRAMMED if (write.erase or plan.mass_erase) else FILLED
    return pages


def page_states(result) -> Dict[int, str]:
    """page -> map character: unchanged, erased (now blank), programmed (erased first, or
    mass-erased), programmed without an erase (it was blank)."""
    planned = _plan_pages(result)
    if planned is not None:
        return planned
    pages = {page: UNCHANGED for page in result.page_crcs}
    for page in result.written:
        pages[page] = PROGRAMMED
    return pages


def flash_line(result, image: str, ranges: Sequence[Range], elapsed: float) -> str:
    """The result line of a flash of ``image`` (its name as the user gave it; ``ranges`` its
    bytes' address ranges) that took ``elapsed`` seconds of wall time."""
    plan = getattr(result, "plan", None)
    states = page_states(result)
    changed = sum(1 for c in states.values() if c != UNCHANGED)
    if plan is not None:
        erased = len(plan.erase)          # every page erased one by one, programmed after or not
        device = f" (device est. {plan.seconds:.1f} s)"
    else:
        erased = result.sectors_erased
        device = f" (erase and program {result.seconds:.1f} s)" if result.pages_programmed else ""
    if result.chip_erase:
        what = f"mass erase, {result.pages_programmed} of {result.pages_total} pages programmed"
    else:
        what = f"{changed} of {result.pages_total} pages changed"
        if changed:
            what += f" ({erased} erased, {result.pages_programmed} programmed)"
    line = (f"flash {result.target} via {result.probe}: {image} {span(ranges)}: {what}, "
            f"{kib(result.bytes_programmed)} in {elapsed:.1f} s{device}")
    if result.verify != "none":
        line += f", verified ({result.verify})"
    return line


def page_map(result, image: str, width: int = MAP_WIDTH) -> str:
    """The pages the image touches, one character each, ``width`` a line, each line starting
    with its first page's address; a page the image does not touch between two it does is
    a space."""
    states = page_states(result)
    if not states:
        return f"page map of {image}: no pages"
    pages = sorted(states)
    size = min(b - a for a, b in zip(pages, pages[1:])) if len(pages) > 1 else 0
    size = size or (max(getattr(getattr(result, "plan", None), "page_sizes", {}).values() or [1024]))
    legend = (f"page map of {image} ({size}-byte pages: {UNCHANGED} unchanged, {PROGRAMMED} programmed, "
              f"{FILLED} programmed without an erase (was blank), {ERASED} erased"
              + ("; the rest of the chip was mass-erased" if result.chip_erase else "") + "):")
    lines = [legend]
    address = pages[0]
    end = pages[-1] + size
    while address < end:
        row = "".join(states.get(address + i * size, " ") for i in range(width)
                      if address + i * size < end)
        lines.append(f"  0x{address:08X}  {row}")
        address += width * size
    return "\n".join(lines)
