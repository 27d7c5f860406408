"""The flash plan: which pages to erase (or one mass erase), which to program with what, what
to verify, and the estimated device time of each step, decided without a probe.

Pure code: no pyOCD, no I/O. :mod:`.session` asks the chip what :func:`survey_query` lists,
turns the answers into :class:`PageState` facts (:func:`page_states`), calls
:func:`make_plan` and carries the :class:`Plan` out; tests call the same functions with
facts of their own.

Terms: a *page* is the chip's erase unit (pyOCD's "sector"); a *program unit* the smallest
piece the flash controller programs (a half-word on the STM32F1); the *erased value* the
byte an erased page reads as (0xFF). Addresses are absolute, ranges ``(start, end)`` end
exclusive. Datasheet timings come in each :class:`Region`; their source is the target's
definition (STM32F100xB datasheet DS6517 for the STM32VLDiscovery, see
:mod:`.target_stm32f100rb`).

The erase policy (``Options.erase``):

- ``auto``: pages whose image bytes already match are left alone; the others are rewritten,
  each erased first unless it is already blank. One mass erase replaces the page erases
  when the estimate says it is cheaper *and* nothing would be lost: every page of the
  mass-erased regions outside the image is known blank, and the bytes beside the image in
  the pages it touches are known (they are written back when ``keep_unwritten``).
- ``sector``: every page the image touches is erased and programmed, same or not.
- ``chip``: a mass erase of every region group the image touches, then every page the image
  touches is programmed; pages it does not touch end erased.

With ``keep_unwritten`` (pyOCD's option of that name, on by default) the bytes of a rewritten
page that lie outside the image keep their value; without it they end erased.
Program units that hold the erased value are skipped on erased pages when the executor says
so (``Costs.skips_erased_units``): programming them would change nothing.
"""

import zlib
from dataclasses import dataclass, field
from typing import Dict, Hashable, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from .ranges import intersect, merge, subtract  # noqa: F401 (part of this module's API)
from .report import span

Range = Tuple[int, int]

ERASE_MODES = ("auto", "sector", "chip")
VERIFY_MODES = ("crc", "read", "none")


class PlanError(ValueError):
    """The facts given are not enough to plan (a programming error of the caller: see
    :func:`needs_reading`), or the image does not fit the geometry."""


# -- geometry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """One flash region: ``length`` bytes from ``start`` in pages of ``page_size`` bytes.

    ``page_erase_s``, ``mass_erase_s`` and ``program_unit_s`` are the datasheet's times
    (seconds) of one page erase, one mass erase and programming one ``program_unit``-byte
    unit. ``mass_erase_s`` None: the region cannot be mass-erased. Regions with the same
    ``mass_group`` are cleared together by one mass erase (one flash algorithm's
    EraseChip); None stands for the region alone.
    """
    start: int
    length: int
    page_size: int
    page_erase_s: float
    program_unit_s: float
    mass_erase_s: Optional[float] = None
    erased: int = 0xFF
    program_unit: int = 2
    mass_group: Optional[Hashable] = None
    name: str = "flash"

    def __post_init__(self):
        if self.page_size <= 0 or self.length % self.page_size or self.start % self.page_size:
            raise PlanError(f"region {self.name} at 0x{self.start:08X}: {self.length} bytes are not whole "
                            f"{self.page_size}-byte pages")
        if self.program_unit <= 0 or self.page_size % self.program_unit:
            raise PlanError(f"region {self.name}: {self.page_size}-byte pages are not whole "
                            f"{self.program_unit}-byte program units")

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def group(self) -> Hashable:
        return self.mass_group if self.mass_group is not None else ("region", self.start)

    def page_of(self, address: int) -> int:
        return address - (address - self.start) % self.page_size

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end

    def blank_page(self) -> bytes:
        return bytes([self.erased]) * self.page_size

    def program_units(self, data: bytes, skip_erased: bool = True) -> int:
        """Units of ``data`` (a page) to program: those not holding the erased value when
        ``skip_erased``, all of them otherwise."""
        n = len(data) // self.program_unit
        if not skip_erased:
            return n
        blank = bytes([self.erased]) * self.program_unit
        unit = self.program_unit
        return sum(data[i:i + unit] != blank for i in range(0, len(data), unit))


@dataclass(frozen=True)
class Geometry:
    """The flash regions of a target, sorted by address."""
    regions: Tuple[Region, ...]

    def __post_init__(self):
        ordered = tuple(sorted(self.regions, key=lambda r: r.start))
        for a, b in zip(ordered, ordered[1:]):
            if b.start < a.end:
                raise PlanError(f"flash regions {a.name} and {b.name} overlap")
        object.__setattr__(self, "regions", ordered)

    def region_at(self, address: int) -> Optional[Region]:
        return next((r for r in self.regions if r.contains(address)), None)

    def pages_of(self, lo: int, hi: int) -> Iterator[Tuple[Region, int]]:
        """``(region, page)`` of every page holding a byte of ``[lo, hi)``, in address order.
        PlanError when a byte lies outside every region."""
        address = lo
        while address < hi:
            region = self.region_at(address)
            if region is None:
                raise PlanError(f"0x{address:08X} is outside the flash")
            page = region.page_of(address)
            yield region, page
            address = page + region.page_size

    def touched(self, ranges: Sequence[Range]) -> List[Tuple[Region, int]]:
        """``(region, page)`` of every page holding a byte of ``ranges``, in address order, each
        once. PlanError when a byte lies outside every region."""
        out = {page: region for lo, hi in ranges for region, page in self.pages_of(lo, hi)}
        return [(out[p], p) for p in sorted(out)]

    def groups(self) -> Dict[Hashable, List[Region]]:
        found: Dict[Hashable, List[Region]] = {}
        for region in self.regions:
            found.setdefault(region.group, []).append(region)
        return found


# -- what is known of the chip ------------------------------------------------------------

@dataclass(frozen=True)
class PageState:
    """What is known of one page as the chip holds it now; None = unknown.

    ``crc``: zlib.crc32 of the whole page. ``blank``: every byte holds the erased value
    (exactly, not by CRC). ``matches``: the image's bytes in this page equal the chip's.
    ``beside_blank``: every byte of the page outside the image is erased. ``data``: the
    whole page as read; it implies all the others.
    """
    crc: Optional[int] = None
    blank: Optional[bool] = None
    matches: Optional[bool] = None
    beside_blank: Optional[bool] = None
    data: Optional[bytes] = None


UNKNOWN = PageState()


@dataclass(frozen=True)
class Options:
    """``erase``: auto / sector / chip; ``verify``: crc / read / none; ``keep_unwritten``:
    bytes beside the image in a rewritten page keep their value (else they end erased)."""
    erase: str = "auto"
    verify: str = "crc"
    keep_unwritten: bool = True

    def __post_init__(self):
        if self.erase not in ERASE_MODES:
            raise PlanError(f"erase mode {self.erase!r}: choose from {', '.join(ERASE_MODES)}")
        if self.verify not in VERIFY_MODES:
            raise PlanError(f"verify mode {self.verify!r}: choose from {', '.join(VERIFY_MODES)}")


@dataclass(frozen=True)
class Costs:
    """Estimated device time (seconds) of the executor's own work, beside the datasheet's
    erase and program times in each :class:`Region`.

    ``crc_per_byte``: an on-chip CRC (compare, blank check, verify). ``read_per_byte``:
    reading flash over the debug port. ``call``: one call of the flash algorithm (core
    registers, resume, wait). ``skips_erased_units``: the executor does not program units
    holding the erased value on erased pages. Defaults: pyOCD's table-driven CRC on an 8 MHz
    Cortex-M3 (about 1.95 us a byte as the simulated board charges it) and 46-bit SWD
    transfers of 4 bytes at 4 MHz.
    """
    crc_per_byte: float = 1.95e-6
    read_per_byte: float = 46 / 4e6 / 4
    call: float = 0.3e-3
    skips_erased_units: bool = False


# -- small range helpers ----------------------------------------------------------------

def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# -- the image within a page --------------------------------------------------------------

class _Pages:
    """The image's bytes per page, and what follows from the facts about each page."""

    def __init__(self, image, geometry: Geometry):
        self.image = image
        self.geometry = geometry
        self.ranges = merge(image.ranges())
        self.touched = geometry.touched(self.ranges)
        self._inside: Dict[int, List[Range]] = {}

    def inside(self, region: Region, page: int) -> List[Range]:
        """The image's ranges within the page."""
        if page not in self._inside:
            self._inside[page] = intersect(self.ranges, [(page, page + region.page_size)])
        return self._inside[page]

    def whole(self, region: Region, page: int) -> bool:
        return self.inside(region, page) == [(page, page + region.page_size)]

    def image_bytes_match(self, region: Region, page: int, data: bytes) -> bool:
        return all(data[lo - page:hi - page] == self.image.data_at(lo, hi - lo)
                   for lo, hi in self.inside(region, page))

    def matches(self, region: Region, page: int, state: PageState) -> Optional[bool]:
        if state.data is not None:
            return self.image_bytes_match(region, page, state.data)
        if state.matches is not None:
            return state.matches
        if state.crc is not None and self.whole(region, page):
            return state.crc == crc32(self.image.data_at(page, region.page_size))
        if state.blank:
            return self.image_bytes_match(region, page, region.blank_page())
        return None

    @staticmethod
    def blank(region: Region, state: PageState) -> Optional[bool]:
        if state.data is not None:
            return state.data == region.blank_page()
        return state.blank

    def beside(self, region: Region, page: int, state: PageState) -> Optional[bytes]:
        """The page as the chip holds it, where it lies outside the image (bytes inside the
        image: anything), or None when unknown."""
        if self.whole(region, page):
            return region.blank_page()
        if state.data is not None:
            return state.data
        if state.blank or state.beside_blank:
            return region.blank_page()
        return None

    def target(self, region: Region, page: int, state: PageState, keep: bool) -> Optional[bytes]:
        """The whole page as it must end, or None when bytes to keep are unknown."""
        base = self.beside(region, page, state) if keep else region.blank_page()
        if base is None:
            return None
        out = bytearray(base)
        for lo, hi in self.inside(region, page):
            out[lo - page:hi - page] = self.image.data_at(lo, hi - lo)
        return bytes(out)


def partial_pages(image, geometry: Geometry) -> List[int]:
    """The pages the image touches but does not fill, in address order."""
    p = _Pages(image, geometry)
    return [page for region, page in p.touched if not p.whole(region, page)]


# -- asking the chip ---------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """What to ask the chip about some of the pages an image touches (:func:`survey_query`).

    ``compares``: word-aligned ranges ``(address, length)`` to compare with the image's bytes
    there (answer: equal or not; the executor may compare CRCs). ``crcs``: the pages the image
    covers only in part, whose zlib.crc32 is wanted whole. ``blanks``: word-aligned ranges
    beside the image: are they erased, exactly? ``words``: addresses of 32-bit words to read,
    where the image begins or ends inside a word. Answer with an :class:`Answers`.
    """
    pages: Tuple[int, ...]
    compares: Tuple[Range, ...]
    crcs: Tuple[Range, ...]
    blanks: Tuple[Range, ...]
    words: Tuple[int, ...]

    @property
    def bytes_compared(self) -> int:
        return sum(n for _, n in self.compares)


@dataclass
class Answers:
    """The chip's answers to a :class:`Query`, keyed by ``(address, length)`` (``words`` by
    address: the little-endian 32-bit value). ``blank`` may also hold whole pages the executor
    found blank, and ``crcs`` pages it computed anyway."""
    equal: Dict[Range, bool] = field(default_factory=dict)
    crcs: Dict[Range, int] = field(default_factory=dict)
    blank: Dict[Range, bool] = field(default_factory=dict)
    words: Dict[int, int] = field(default_factory=dict)


def _align_pieces(pieces: Sequence[Range]) -> Tuple[List[Range], List[int]]:
    """Word-aligned interiors ``(address, length)`` of ``pieces`` and the words holding their
    unaligned ends."""
    interiors, words = [], set()
    for lo, hi in pieces:
        a, b = -(-lo // 4) * 4, hi // 4 * 4
        if a < b:
            interiors.append((a, b - a))
            if lo % 4:
                words.add(lo // 4 * 4)
            if hi % 4:
                words.add(b)
        else:
            words.update(range(lo // 4 * 4, hi, 4))
    return interiors, sorted(words)


def survey_query(image, geometry: Geometry, pages: Optional[Iterable[int]] = None) -> Query:
    """What to ask the chip to know, of every page the image touches (or of ``pages`` among
    them), whether it holds the image's bytes, its CRC, and whether its bytes beside the image
    are erased. A page the image fills is one comparison; a page it covers in part is a
    comparison of each piece inside the image, a CRC of the whole page, a blank check of the
    pieces beside it and the reads of the words where they meet."""
    p = _Pages(image, geometry)
    wanted = set(pages) if pages is not None else None
    chosen, compares, crcs, blanks, words = [], [], [], [], set()
    for region, page in p.touched:
        if wanted is not None and page not in wanted:
            continue
        chosen.append(page)
        if p.whole(region, page):
            compares.append((page, region.page_size))
            continue
        crcs.append((page, region.page_size))
        inside = p.inside(region, page)
        interiors, edge = _align_pieces(inside)
        compares += interiors
        words.update(edge)
        interiors, edge = _align_pieces(subtract([(page, page + region.page_size)], inside))
        blanks += interiors
        words.update(edge)
    return Query(tuple(chosen), tuple(compares), tuple(crcs), tuple(blanks), tuple(sorted(words)))


def page_states(image, geometry: Geometry, query: Query, answers: Answers) -> Dict[int, PageState]:
    """The facts about ``query.pages`` from the chip's ``answers``. PlanError if one is missing."""
    p = _Pages(image, geometry)
    regions = {page: region for region, page in p.touched}

    def get(table, key, what):
        try:
            return table[key]
        except KeyError:
            raise PlanError(f"no answer for the {what} of 0x{key[0] if isinstance(key, tuple) else key:08X}") from None

    def edge_bytes(pieces):
        found = {}
        for lo, hi in pieces:
            for address in range(lo, hi):
                if -(-lo // 4) * 4 <= address < hi // 4 * 4 and -(-lo // 4) * 4 < hi // 4 * 4:
                    continue           # inside the aligned interior
                word = address // 4 * 4
                found[address] = (get(answers.words, word, "word") >> (8 * (address - word))) & 0xFF
        return found

    out = {}
    for page in query.pages:
        region = regions[page]
        key = (page, region.page_size)
        blank = answers.blank.get(key)
        if p.whole(region, page):
            matches = get(answers.equal, key, "comparison")
            content = image.data_at(page, region.page_size)
            crc = crc32(content) if matches else answers.crcs.get(key)
            if matches:
                blank = content == region.blank_page()
            out[page] = PageState(crc=crc, blank=blank, matches=matches, beside_blank=True)
            continue
        inside = p.inside(region, page)
        outside = subtract([(page, page + region.page_size)], inside)
        interiors, _ = _align_pieces(inside)
        matches = all(get(answers.equal, piece, "comparison") for piece in interiors) and all(
            value == image.data_at(address, 1)[0] for address, value in edge_bytes(inside).items())
        interiors, _ = _align_pieces(outside)
        beside_blank = all(get(answers.blank, piece, "blank check") for piece in interiors) and all(
            value == region.erased for value in edge_bytes(outside).values())
        crc = get(answers.crcs, key, "CRC")
        if blank is None and crc != crc32(region.blank_page()):
            blank = False
        out[page] = PageState(crc=crc, blank=blank, matches=matches, beside_blank=beside_blank)
    return out


def states_from_data(image, geometry: Geometry, pages: Mapping[int, bytes]) -> Dict[int, PageState]:
    """Facts from whole pages read from the chip (every field filled in)."""
    p = _Pages(image, geometry)
    out = {}
    for page, data in pages.items():
        data = bytes(data)
        region = geometry.region_at(page)
        inside = p.inside(region, page)
        outside = subtract([(page, page + region.page_size)], inside)
        out[page] = PageState(crc=crc32(data), blank=data == region.blank_page(),
                              matches=p.image_bytes_match(region, page, data),
                              beside_blank=all(data[lo - page:hi - page] == bytes([region.erased]) * (hi - lo)
                                               for lo, hi in outside),
                              data=data)
    return out


# -- the plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PageWrite:
    """One page to program: ``data`` is the whole page as it must end; ``erase``: erased by a
    page erase first (False when blank already or mass-erased); ``units``: program units the
    executor programs."""
    address: int
    data: bytes
    erase: bool
    units: int

    @property
    def crc(self) -> int:
        return crc32(self.data)


@dataclass(frozen=True)
class Step:
    """One step of the plan with its estimated device time (seconds)."""
    name: str
    what: str
    seconds: float


@dataclass(frozen=True)
class Plan:
    """What a flash does, decided before anything is written.

    ``mass_erase``: the regions whose flash algorithm's mass erase runs (one per region group);
    ``program``: the pages programmed, in address order (:attr:`erase`: those erased one by one
    first); ``unchanged``: pages the image touches that stay as they are;
    ``verify``: the verify mode; ``verify_pages``: the pages it checks (crc: the programmed
    ones, whose CRC is known; read: every page the image touches, reading back the image's
    bytes and every byte of the programmed ones). ``steps``: estimated device time of each step,
    including those already done (``done`` of :func:`make_plan`); ``alternative``: the other
    erase strategy considered, and why it lost.
    """
    source: str
    options: Options
    page_sizes: Dict[int, int]
    mass_erase: Tuple[Region, ...] = ()
    program: Tuple[PageWrite, ...] = ()
    unchanged: Tuple[int, ...] = ()
    verify_pages: Tuple[int, ...] = ()
    steps: Tuple[Step, ...] = ()
    alternative: str = ""
    page_crcs_before: Dict[int, int] = field(default_factory=dict)

    @property
    def verify(self) -> str:
        return self.options.verify

    @property
    def erase(self) -> Tuple[int, ...]:
        """The pages erased one by one (not in a mass-erased region): the programmed pages whose
        write erases first. Every page erased is programmed after."""
        return tuple(w.address for w in self.program if w.erase)

    @property
    def pages_total(self) -> int:
        return len(self.page_sizes)

    @property
    def writes(self) -> bool:
        return bool(self.mass_erase or self.program)

    @property
    def units(self) -> int:
        return sum(w.units for w in self.program)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def ranges(self) -> Optional[List[Range]]:
        """The merged page ranges about to be erased or programmed; None for a mass erase."""
        if self.mass_erase:
            return None
        return merge((w.address, w.address + self.page_sizes[w.address]) for w in self.program)

    def page_crcs(self) -> Dict[int, int]:
        """zlib.crc32 of every page the image touches as it will be after the plan ran
        (a programmed page: its new content; the others: as found)."""
        out = {p: c for p, c in self.page_crcs_before.items() if p in self.page_sizes}
        out.update((w.address, w.crc) for w in self.program)
        return out

    def describe(self) -> str:
        """The plan as lines of text (printed before anything is written)."""
        lines = [f"flash plan for {self.source}: {self.pages_total} page(s) touched, "
                 f"erase {self.options.erase}, verify {self.options.verify}"
                 f"{'' if self.options.keep_unwritten else ', bytes beside the image erased'}"]
        for step in self.steps:
            lines.append(f"  {step.name:11} {step.what:58} est. {step.seconds * 1000:8.1f} ms")
        lines.append(f"  {'total':11} {'':58} est. {self.seconds * 1000:8.1f} ms")
        if self.alternative:
            lines.append(f"  (not chosen: {self.alternative})")
        return "\n".join(lines)


def needs_reading(image, geometry: Geometry, chip: Mapping[int, PageState], options: Options) -> List[int]:
    """Pages the executor must read whole before :func:`make_plan`: pages the plan may rewrite
    whose bytes beside the image must be kept but are not known."""
    if not options.keep_unwritten:
        return []
    p = _Pages(image, geometry)
    out = []
    for region, page in p.touched:
        state = chip.get(page, UNKNOWN)
        if p.beside(region, page, state) is not None:
            continue
        if options.erase != "auto" or not p.matches(region, page, state):
            out.append(page)
    return out


def _write(p: _Pages, region: Region, page: int, state: PageState, options: Options, costs: Costs,
           erase: bool) -> PageWrite:
    data = p.target(region, page, state, options.keep_unwritten)
    if data is None:
        raise PlanError(f"the bytes beside the image in page 0x{page:08X} are not known: read the page "
                        "first (needs_reading)")
    return PageWrite(page, data, erase, region.program_units(data, costs.skips_erased_units))


def _program_s(writes: Sequence[PageWrite], regions: Mapping[int, Region]) -> float:
    return sum(w.units * regions[w.address].program_unit_s for w in writes)


def _untouched(p: _Pages, regions: Sequence[Region]) -> List[Range]:
    touched = merge((page, page + region.page_size) for region, page in p.touched)
    return subtract(merge((r.start, r.end) for r in regions), touched)


def blank_check_ranges(image, geometry: Geometry, chip: Mapping[int, PageState], options: Options,
                       costs: Costs = Costs()) -> List[Range]:
    """The ranges outside the image worth checking for blankness before :func:`make_plan`:
    those of each region group where a mass erase, if everything outside the image were
    blank, would beat page erases by more than the check costs (``auto`` only). Pages
    already known blank are left out."""
    if options.erase != "auto":
        return []
    p = _Pages(image, geometry)
    out: List[Range] = []
    for regions in geometry.groups().values():
        if any(r.mass_erase_s is None for r in regions):
            continue
        starts = {r.start for r in regions}
        mine = [(r, page) for r, page in p.touched if r.start in starts]
        if not mine:
            continue
        unknown = [(lo, hi) for lo, hi in _untouched(p, regions)
                   if not all(chip.get(page, UNKNOWN).blank for _, page in p.geometry.pages_of(lo, hi))]
        if not unknown:
            continue
        page_s = _page_route_s(p, mine, chip, options, costs)
        mass_s = _mass_route_s(p, regions, mine, chip, options, costs)
        if page_s is None or mass_s is None:
            continue
        check_s = sum(hi - lo for lo, hi in unknown) * costs.crc_per_byte
        if mass_s + check_s < page_s:
            out += unknown
    return out


def _page_route_s(p, mine, chip, options, costs) -> Optional[float]:
    total = 0.0
    for region, page in mine:
        state = chip.get(page, UNKNOWN)
        if p.matches(region, page, state):
            continue
        data = p.target(region, page, state, options.keep_unwritten)
        if data is None:
            return None
        if not p.blank(region, state):
            total += region.page_erase_s
        total += region.program_units(data, costs.skips_erased_units) * region.program_unit_s
    return total


def _mass_route_s(p, regions, mine, chip, options, costs) -> Optional[float]:
    total = max(r.mass_erase_s for r in regions)
    for region, page in mine:
        data = p.target(region, page, chip.get(page, UNKNOWN), options.keep_unwritten)
        if data is None:
            return None
        total += region.program_units(data, costs.skips_erased_units) * region.program_unit_s
    return total


def make_plan(image, geometry: Geometry, chip: Mapping[int, PageState], options: Options = Options(),
              costs: Costs = Costs(), done: Sequence[Step] = ()) -> Plan:
    """Decide what to erase, program and verify (see the module's docstring for the policy).

    ``chip`` maps page addresses to what is known of them (missing: unknown). ``done``: steps
    already carried out to learn it (a survey, a blank check), listed first in the plan.
    Raises PlanError when an image byte lies outside the flash, or a page must be rewritten
    while the bytes beside the image that it must keep are unknown (:func:`needs_reading`).
    """
    p = _Pages(image, geometry)
    regions = {page: region for region, page in p.touched}
    sizes = {page: region.page_size for region, page in p.touched}
    before = {}
    for page in sizes:
        state = chip.get(page, UNKNOWN)
        if state.data is not None:
            before[page] = crc32(state.data)
        elif state.crc is not None:
            before[page] = state.crc
    base = dict(source=image.source, options=options, page_sizes=sizes, page_crcs_before=before)
    steps = list(done)
    alternative = ""
    mass: List[Region] = []
    writes: List[PageWrite] = []
    unchanged: List[int] = []

    if options.erase == "chip":
        touched_groups = {regions[page].group for page in sizes}
        mass = [rs[0] for g, rs in geometry.groups().items() if g in touched_groups]
        for region in mass:
            if region.mass_erase_s is None:
                raise PlanError(f"region {region.name} at 0x{region.start:08X} has no mass erase")
        writes = [_write(p, regions[pg], pg, chip.get(pg, UNKNOWN), options, costs, erase=False) for pg in sizes]
    elif options.erase == "sector":
        for page in sizes:
            writes.append(_write(p, regions[page], page, chip.get(page, UNKNOWN), options, costs, erase=True))
    else:
        by_group: Dict[Hashable, List[Tuple[Region, int]]] = {}
        for region, page in p.touched:
            by_group.setdefault(region.group, []).append((region, page))
        groups = geometry.groups()
        for key, mine in by_group.items():
            group_regions = groups[key]
            page_writes, page_unchanged = [], []
            for region, page in mine:
                state = chip.get(page, UNKNOWN)
                if p.matches(region, page, state):
                    page_unchanged.append(page)
                else:
                    page_writes.append(_write(p, region, page, state, options, costs,
                                              erase=not p.blank(region, state)))
            page_s = (sum(regions[w.address].page_erase_s for w in page_writes if w.erase)
                      + _program_s(page_writes, regions))
            mass_possible, why_not = _mass_allowed(p, group_regions, mine, chip, options)
            mass_s = _mass_route_s(p, group_regions, mine, chip, options, costs) if mass_possible else None
            if page_writes and mass_s is not None and mass_s < page_s:
                mass.append(group_regions[0])
                writes += [_write(p, region, page, chip.get(page, UNKNOWN), options, costs, erase=False)
                           for region, page in mine]
                alternative = (f"{sum(w.erase for w in page_writes)} page erase(s) and "
                               f"{len(page_writes)} page(s) programmed, est. {page_s * 1000:.1f} ms")
            else:
                writes += page_writes
                unchanged += page_unchanged
                if page_writes and any(r.mass_erase_s is not None for r in group_regions):
                    if mass_s is not None:
                        alternative = f"mass erase and {len(mine)} page(s) programmed, est. {mass_s * 1000:.1f} ms"
                    else:
                        alternative = f"mass erase: {why_not}"

    writes.sort(key=lambda w: w.address)
    erase = tuple(w.address for w in writes if w.erase)
    if mass:
        steps.append(Step("erase", "mass erase" + (f" of {', '.join(r.name for r in mass)}" if len(mass) > 1 else ""),
                          sum(r.mass_erase_s for r in mass)))
    elif erase:
        steps.append(Step("erase", f"{len(erase)} page(s): "
                                   f"{span([(pg, pg + sizes[pg]) for pg in erase], most=4)}",
                          sum(regions[pg].page_erase_s for pg in erase)))
    if writes:
        units = sum(w.units for w in writes)
        unit = regions[writes[0].address].program_unit
        steps.append(Step("program", f"{len(writes)} page(s), {units} {unit}-byte units: "
                          f"{span([(w.address, w.address + sizes[w.address]) for w in writes], most=4)}",
                          _program_s(writes, regions)))
    else:
        steps.append(Step("program", "nothing: the chip holds the image", 0.0))
    if options.verify == "crc":
        verify_pages = tuple(w.address for w in writes)
        nbytes = sum(sizes[pg] for pg in verify_pages)
        if verify_pages:
            steps.append(Step("verify", f"{len(verify_pages)} programmed page(s) by on-chip CRC",
                              nbytes * costs.crc_per_byte))
    elif options.verify == "read":
        verify_pages = tuple(sizes)
        steps.append(Step("verify", f"{len(verify_pages)} page(s) read back",
                          sum(sizes.values()) * costs.read_per_byte))
    else:
        verify_pages = ()
    return Plan(mass_erase=tuple(mass), program=tuple(writes), unchanged=tuple(sorted(unchanged)),
                verify_pages=verify_pages, steps=tuple(steps), alternative=alternative, **base)


def _mass_allowed(p: _Pages, regions: Sequence[Region], mine, chip, options) -> Tuple[bool, str]:
    """Whether a mass erase of ``regions`` loses nothing: every page outside the image is known
    blank, and the bytes beside the image to keep are known."""
    if any(r.mass_erase_s is None for r in regions):
        return False, "not supported"
    for lo, hi in _untouched(p, regions):
        for _, page in p.geometry.pages_of(lo, hi):
            if not chip.get(page, UNKNOWN).blank:
                return False, f"page 0x{page:08X} outside the image is not known to be blank"
    if options.keep_unwritten:
        for region, page in mine:
            if p.beside(region, page, chip.get(page, UNKNOWN)) is None:
                return False, f"the bytes beside the image in page 0x{page:08X} are not known"
    return True, ""


def untouched_states(geometry: Geometry, image, blank_ranges: Sequence[Range]) -> Dict[int, PageState]:
    """Facts for the pages of ``blank_ranges`` (outside the image), found blank."""
    return {page: PageState(blank=True, crc=crc32(region.blank_page()), data=None)
            for lo, hi in blank_ranges for region, page in geometry.pages_of(lo, hi)
            if page >= lo and page + region.page_size <= hi}


def preview(image, geometry: Geometry, options: Options = Options(), costs: Costs = Costs()) -> str:
    """What a flash of ``image`` would do, before anything is known of the chip (for ``scons -n``):
    the pages it touches, what would be asked of the chip, and the range of the device time
    from "the chip already holds it" to "every page differs"."""
    p = _Pages(image, geometry)
    pages = [page for _, page in p.touched]
    sizes = {page: region.page_size for region, page in p.touched}
    regions = {page: region for region, page in p.touched}
    blank = {page: PageState(blank=True) for page in pages}
    units = sum(regions[pg].program_units(p.target(regions[pg], pg, blank[pg], False), costs.skips_erased_units)
                for pg in pages)
    program_s = sum(regions[pg].program_units(p.target(regions[pg], pg, blank[pg], False),
                                              costs.skips_erased_units) * regions[pg].program_unit_s for pg in pages)
    erase_s = sum(regions[pg].page_erase_s for pg in pages)
    lines = [f"flash plan for {image.source}: {len(pages)} page(s) touched "
             f"({span([(pg, pg + sizes[pg]) for pg in pages], most=4)}), "
             f"erase {options.erase}, verify {options.verify}"]
    if options.erase == "auto":
        compare_s = sum(sizes.values()) * costs.crc_per_byte
        lines.append(f"  {'compare':11} {len(pages)} page(s) with the chip (on-chip CRC){'':19} est. {compare_s * 1000:8.1f} ms")
        lines.append(f"  {'then':11} erase (unless blank) and program the pages that differ: from nothing (the chip "
                     f"holds the image) to {len(pages)} page erase(s) + {units} program units, est. "
                     f"{(erase_s + program_s) * 1000:.1f} ms")
        masses = [r.mass_erase_s for r in geometry.regions if r.mass_erase_s is not None]
        if masses:
            lines.append(f"  {'or':11} one mass erase + every page, est. {(max(masses) + program_s) * 1000:.1f} ms, "
                         "when cheaper and every page outside the image is blank")
    elif options.erase == "sector":
        lines.append(f"  {'erase':11} {len(pages)} page(s), est. {erase_s * 1000:.1f} ms; program {units} units, "
                     f"est. {program_s * 1000:.1f} ms")
    else:
        masses = [r.mass_erase_s for r in geometry.regions if r.mass_erase_s is not None]
        lines.append(f"  {'erase':11} mass erase, est. {max(masses or [0.0]) * 1000:.1f} ms; program {units} units, "
                     f"est. {program_s * 1000:.1f} ms")
    return "\n".join(lines)


def estimate_survey(query: Query, costs: Costs) -> float:
    """Estimated device time of answering ``query`` (one CRC or blank check per byte, three
    transfers per word read)."""
    checked = query.bytes_compared + sum(n for _, n in query.crcs) + sum(n for _, n in query.blanks)
    return checked * costs.crc_per_byte + len(query.words) * 12 * costs.read_per_byte


__all__ = ["Answers", "Costs", "Geometry", "Options", "PageState", "PageWrite", "Plan", "PlanError", "Query", "Region",
           "Step", "blank_check_ranges", "crc32", "estimate_survey", "intersect", "make_plan", "merge",
           "needs_reading", "page_states", "partial_pages", "preview", "states_from_data", "subtract", "survey_query",
           "untouched_states"]
