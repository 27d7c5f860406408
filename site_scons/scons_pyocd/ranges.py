"""Address ranges: ``(start, end)`` pairs, end exclusive, as every module of the tool uses them.

Pure and light (the no-op path imports it): no SCons, no pyOCD, nothing else.
"""

from typing import Iterable, List, Sequence, Tuple

Range = Tuple[int, int]


def merge(ranges: Iterable[Range]) -> List[Range]:
    """Sorted ranges with touching or overlapping ones joined."""
    out: List[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def intersect(a: Sequence[Range], b: Sequence[Range]) -> List[Range]:
    """The parts common to two lists of disjoint ranges, sorted."""
    return sorted((max(lo, blo), min(hi, bhi)) for lo, hi in a for blo, bhi in b if max(lo, blo) < min(hi, bhi))


def overlaps(a: Sequence[Range], b: Sequence[Range]) -> bool:
    """Whether any range of ``a`` shares an address with any range of ``b``."""
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def subtract(ranges: Sequence[Range], holes: Sequence[Range]) -> List[Range]:
    """``ranges`` minus ``holes`` (both sorted and disjoint)."""
    out: List[Range] = []
    for lo, hi in ranges:
        address = lo
        for hlo, hhi in holes:
            if hhi <= address or hlo >= hi:
                continue
            if hlo > address:
                out.append((address, hlo))
            address = max(address, hhi)
        if address < hi:
            out.append((address, hi))
    return out
