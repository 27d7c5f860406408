"""The flash plan (scons_pyocd.plan): pure, no probe. The erase policy as a table, then
properties over random chips and images.

Each case runs the plan's whole pipeline against a model chip held in Python: the survey
(:func:`survey_query` answered from the model's bytes), the blank check the plan asks for,
the pages it must read, :func:`make_plan`, and then the plan carried out on the model with the
STM32F1's rules (programming a unit that is not erased fails, a page erase clears one page,
a mass erase its region group). What the chip ends up holding is checked, not just the plan.
"""

import random
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from scons_pyocd.images import Image
from scons_pyocd.plan import (Answers, Costs, Geometry, Options, PageState, PlanError, Region,
                              blank_check_ranges, crc32, make_plan, merge, needs_reading, page_states,
                              partial_pages, states_from_data, survey_query)

F100 = dict(page_erase_s=0.020, program_unit_s=52.5e-6, mass_erase_s=0.020)
FLASH = 0x08000000
PAGE = 1024
#: The STM32F100RB: 128 pages of 1 KiB; the CRC unit's costs.
GEOMETRY = Geometry((Region(FLASH, 128 * PAGE, PAGE, **F100),))
COSTS = Costs(crc_per_byte=0.35e-6, skips_erased_units=True)
#: Two regions erased by different algorithms, with other page sizes.
TWO = Geometry((Region(FLASH, 16 * PAGE, PAGE, name="a", **F100),
                Region(0x08100000, 8 * 2048, 2048, name="b", mass_group="b", **F100)))


def rand(n, seed):
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


class Chip:
    """A model flash: the bytes of each region, erased, programmed and read with the STM32F1's
    rules. Counts what was done."""

    def __init__(self, geometry, content=()):
        self.geometry = geometry
        self.mem = {r.start: bytearray(r.blank_page() * (r.length // r.page_size)) for r in geometry.regions}
        for address, data in content:
            self.put(address, data)
        self.page_erases = []
        self.mass_erases = []
        self.units = 0

    def _loc(self, address):
        region = self.geometry.region_at(address)
        return region, self.mem[region.start], address - region.start

    def put(self, address, data):
        for i, b in enumerate(data):
            _, mem, off = self._loc(address + i)
            mem[off] = b

    def read(self, address, n):
        out = bytearray()
        for a in range(address, address + n):
            _, mem, off = self._loc(a)
            out.append(mem[off])
        return bytes(out)

    def snapshot(self):
        return {k: bytes(v) for k, v in self.mem.items()}

    # -- the ideal executor --------------------------------------------------------------
    def answer(self, query, image):
        """What an executor answers: comparisons with the image, CRCs, blank checks (and the
        blankness of whole pages it compared), words."""
        a = Answers()
        for address, n in query.compares:
            a.equal[(address, n)] = self.read(address, n) == image.data_at(address, n)
            erased = bytes([self._loc(address)[0].erased]) * n
            if self.read(address, n) == erased:
                a.blank[(address, n)] = True
        for address, n in query.crcs:
            a.crcs[(address, n)] = crc32(self.read(address, n))
            if self.read(address, n) == bytes([self._loc(address)[0].erased]) * n:
                a.blank[(address, n)] = True     # a blank CRC, confirmed
        for address, n in query.blanks:
            a.blank[(address, n)] = self.read(address, n) == bytes([self._loc(address)[0].erased]) * n
        a.words = {w: int.from_bytes(self.read(w, 4), "little") for w in query.words}
        return a

    def facts(self, image, options, costs=COSTS):
        chip = {}
        if options.erase == "auto":
            query = survey_query(image, self.geometry)
            chip.update(page_states(image, self.geometry, query, self.answer(query, image)))
        else:   # sector / chip: only what keeping the bytes beside the image needs
            partial = [pg for r, pg in self.geometry.touched(image.ranges())
                       if merge(image.ranges()) and not _whole(image, r, pg)]
            query = survey_query(image, self.geometry, partial)
            chip.update(page_states(image, self.geometry, query, self.answer(query, image)))
        for lo, hi in blank_check_ranges(image, self.geometry, chip, options, costs):
            address = lo
            while address < hi:
                region = self.geometry.region_at(address)
                page = region.page_of(address)
                blank = self.read(page, region.page_size) == region.blank_page()
                chip[page] = PageState(blank=blank)
                address = page + region.page_size
        read = needs_reading(image, self.geometry, chip, options)
        chip.update(states_from_data(image, self.geometry,
                                     {pg: self.read(pg, self.geometry.region_at(pg).page_size) for pg in read}))
        return chip

    def run(self, plan):
        for region in plan.mass_erase:
            for r in self.geometry.regions:
                if r.group == region.group:
                    self.mem[r.start][:] = r.blank_page() * (r.length // r.page_size)
            self.mass_erases.append(region.start)
        for page in plan.erase:
            region, mem, off = self._loc(page)
            mem[off:off + region.page_size] = region.blank_page()
            self.page_erases.append(page)
        for write in plan.program:
            region, mem, off = self._loc(write.address)
            unit, blank = region.program_unit, bytes([region.erased]) * region.program_unit
            for i in range(0, len(write.data), unit):
                new = write.data[i:i + unit]
                if new == blank:
                    continue   # the executor skips erased units (the chip must hold them erased)
                assert mem[off + i:off + i + unit] == blank, f"programming over data at 0x{write.address + i:08X}"
                mem[off + i:off + i + unit] = new
                self.units += 1

    def flash(self, image, options=Options(), costs=COSTS):
        plan = make_plan(image, self.geometry, self.facts(image, options, costs), options, costs)
        self.run(plan)
        return plan


def _whole(image, region, page):
    from scons_pyocd.plan import intersect
    return intersect(merge(image.ranges()), [(page, page + region.page_size)]) == [(page, page + region.page_size)]


def units(data):
    return sum(data[i:i + 2] != b"\xff\xff" for i in range(0, len(data), 2))


IMAGE_78K = rand(78_128, 1)
OTHER_78K = rand(78_128, 2)


# -- the erase policy, as a table ---------------------------------------------------------

def one_byte_changed(data, at):
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


CASES = [
    # (label, chip content, image segments, options, expected: (mass, erased pages, programmed pages))
    ("erased chip: nothing to erase, every page programmed",
     [], [(FLASH, IMAGE_78K)], Options(), (False, [], list(range(77)))),
    ("another image, rest blank: one mass erase",
     [(FLASH, OTHER_78K)], [(FLASH, IMAGE_78K)], Options(), (True, [], list(range(77)))),
    ("another image, data outside it: page erases, no mass erase",
     [(FLASH, OTHER_78K), (FLASH + 100 * PAGE, b"keep me")], [(FLASH, IMAGE_78K)], Options(),
     (False, list(range(77)), list(range(77)))),
    ("whole-flash 128 KiB image over another: one mass erase",
     [(FLASH, rand(128 * PAGE, 3))], [(FLASH, rand(128 * PAGE, 4))], Options(), (True, [], list(range(128)))),
    ("already-blank pages are not erased",
     [(FLASH, OTHER_78K[:10 * PAGE]), (FLASH + 100 * PAGE, b"keep me")], [(FLASH, IMAGE_78K[:20 * PAGE])],
     Options(), (False, list(range(10)), list(range(20)))),
    ("one byte changed: one page",
     [(FLASH, IMAGE_78K)], [(FLASH, one_byte_changed(IMAGE_78K, 39_000))], Options(), (False, [38], [38])),
    ("unchanged: nothing",
     [(FLASH, IMAGE_78K), (FLASH + 100 * PAGE, b"x")], [(FLASH, IMAGE_78K)], Options(), (False, [], [])),
    ("two pages changed far apart",
     [(FLASH, IMAGE_78K)], [(FLASH, one_byte_changed(one_byte_changed(IMAGE_78K, 5 * PAGE + 7), 70 * PAGE))],
     Options(), (False, [5, 70], [5, 70])),
    ("sector: every page erased and programmed, same or not",
     [(FLASH, IMAGE_78K[:4 * PAGE])], [(FLASH, IMAGE_78K[:4 * PAGE])], Options(erase="sector"),
     (False, [0, 1, 2, 3], [0, 1, 2, 3])),
    ("chip: mass erase even with data outside the image",
     [(FLASH, IMAGE_78K[:4 * PAGE]), (FLASH + 100 * PAGE, b"lost")], [(FLASH, IMAGE_78K[:4 * PAGE])],
     Options(erase="chip"), (True, [], [0, 1, 2, 3])),
    ("keep_unwritten: a partly written page keeps the bytes beside the image",
     [(FLASH, rand(PAGE, 5)), (FLASH + 100 * PAGE, b"x")], [(FLASH + 0x200, rand(0x400, 6))], Options(),
     (False, [0], [0, 1])),
    ("keep_unwritten off: the bytes beside the image end erased",
     [(FLASH, rand(PAGE, 5)), (FLASH + 100 * PAGE, b"x")], [(FLASH + 0x200, rand(0x400, 6))],
     Options(keep_unwritten=False), (False, [0], [0, 1])),
    ("image ends mid-page on an erased chip: nothing erased, half-words beside it skipped",
     [], [(FLASH + 0x10, rand(3 * PAGE + 7, 7))], Options(), (False, [], [0, 1, 2, 3])),
]


@pytest.mark.parametrize("label,content,segments,options,expected", CASES, ids=[c[0] for c in CASES])
def test_erase_policy(label, content, segments, options, expected):
    chip = Chip(GEOMETRY, content)
    before = chip.snapshot()[FLASH]
    image = Image(segments, "fw.bin")
    plan = chip.flash(image, options)
    mass, erased, programmed = expected
    assert bool(plan.mass_erase) == mass
    assert [(p - FLASH) // PAGE for p in plan.erase] == erased
    assert [(w.address - FLASH) // PAGE for w in plan.program] == programmed
    after = chip.snapshot()[FLASH]
    for start, data in segments:   # the chip holds the image
        assert after[start - FLASH:start - FLASH + len(data)] == data
    touched = {(p - FLASH) // PAGE for _, p in GEOMETRY.touched(image.ranges())}
    image_mask = bytearray(len(after))
    for start, data in segments:
        image_mask[start - FLASH:start - FLASH + len(data)] = b"\x01" * len(data)
    for i in range(len(after)):
        if image_mask[i]:
            continue
        page = i // PAGE
        if page not in touched:
            assert after[i] == (0xFF if options.erase == "chip" else before[i]), f"untouched byte 0x{i:X}"
        elif options.keep_unwritten or page not in programmed:
            assert after[i] == before[i], f"byte 0x{i:X} beside the image"
        else:
            assert after[i] == 0xFF
    assert plan.page_crcs() == {p: crc32(after[p - FLASH:p - FLASH + PAGE]) for p in plan.page_sizes}


def test_a_whole_flash_image_is_one_mass_erase_and_every_unit_programmed():
    chip = Chip(GEOMETRY, [(FLASH, rand(128 * PAGE, 3))])
    data = rand(128 * PAGE, 4)
    plan = chip.flash(Image([(FLASH, data)]))
    assert chip.mass_erases == [FLASH] and chip.page_erases == []
    assert chip.units == units(data)
    assert plan.ranges() is None
    erase = next(s for s in plan.steps if s.name == "erase")
    program = next(s for s in plan.steps if s.name == "program")
    assert erase.seconds == pytest.approx(0.020)
    assert program.seconds == pytest.approx(units(data) * 52.5e-6)
    assert "page erase(s)" in plan.alternative


def test_the_estimate_picks_page_erases_for_a_small_change_and_says_what_it_rejected():
    chip = Chip(GEOMETRY, [(FLASH, IMAGE_78K)])
    image = Image([(FLASH, one_byte_changed(IMAGE_78K, 100))])
    facts = chip.facts(image, Options())
    assert blank_check_ranges(image, GEOMETRY, facts, Options(), COSTS) == []   # not worth a blank check
    plan = make_plan(image, GEOMETRY, facts, Options(), COSTS)
    assert plan.ranges() == [(FLASH, FLASH + PAGE)]
    assert plan.alternative.startswith("mass erase: page 0x0801")    # rest not checked: unknown
    steps = {s.name: s.seconds for s in plan.steps}
    assert steps["erase"] == pytest.approx(0.020)
    assert steps["program"] == pytest.approx(units(image.data_at(FLASH, PAGE)) * 52.5e-6)
    assert steps["verify"] == pytest.approx(PAGE * COSTS.crc_per_byte)
    text = plan.describe()
    assert "erase       1 page(s): 0x08000000-0x080003FF" in text and "est." in text


def test_a_blank_check_is_asked_only_where_a_mass_erase_could_win():
    chip = Chip(GEOMETRY, [(FLASH, OTHER_78K)])
    image = Image([(FLASH, IMAGE_78K)])
    survey = survey_query(image, GEOMETRY)
    facts = page_states(image, GEOMETRY, survey, chip.answer(survey, image))
    assert blank_check_ranges(image, GEOMETRY, facts, Options(), COSTS) == [(FLASH + 77 * PAGE, FLASH + 128 * PAGE)]
    assert blank_check_ranges(image, GEOMETRY, facts, Options(erase="sector"), COSTS) == []
    # Without the check the rest is unknown: never a mass erase.
    plan = make_plan(image, GEOMETRY, facts, Options(), COSTS)
    assert not plan.mass_erase and len(plan.erase) == 77


def test_a_blank_check_too_costly_for_its_gain_is_not_asked():
    chip = Chip(GEOMETRY, [(FLASH, OTHER_78K[:2 * PAGE])])
    image = Image([(FLASH, IMAGE_78K[:2 * PAGE])])
    facts = chip.facts(image, Options())
    slow = Costs(crc_per_byte=1e-6)   # 126 KiB to check: 0.13 s, more than one page erase saves
    assert blank_check_ranges(image, GEOMETRY, facts, Options(), slow) == []
    assert blank_check_ranges(image, GEOMETRY, facts, Options(), Costs(crc_per_byte=1e-8)) != []


def test_several_regions_are_planned_per_mass_erase_group():
    # a: holds another image in 4 of its pages, rest blank -> mass erase of a;
    # b: holds data beyond the image -> page erases there.
    content = [(FLASH, rand(4 * PAGE, 8)), (0x08100000, rand(3 * 2048, 9))]
    segments = [(FLASH, rand(4 * PAGE, 10)), (0x08100000, rand(2 * 2048, 11))]
    chip = Chip(TWO, content)
    plan = chip.flash(Image(segments))
    assert [r.name for r in plan.mass_erase] == ["a"]
    assert plan.erase == (0x08100000, 0x08100800)
    assert plan.ranges() is None
    after = chip.snapshot()
    assert after[0x08100000][2 * 2048:3 * 2048] == rand(3 * 2048, 9)[2 * 2048:]   # kept
    for start, data in segments:
        assert chip.read(start, len(data)) == data
    sizes = plan.page_sizes
    assert sizes[0x08100000] == 2048 and sizes[FLASH] == PAGE


def test_a_region_without_mass_erase_is_never_mass_erased():
    geometry = Geometry((Region(FLASH, 8 * PAGE, PAGE, page_erase_s=0.02, program_unit_s=52.5e-6),))
    chip = Chip(geometry, [(FLASH, rand(8 * PAGE, 1))])
    plan = chip.flash(Image([(FLASH, rand(8 * PAGE, 2))]))
    assert not plan.mass_erase and len(plan.erase) == 8
    with pytest.raises(PlanError, match="has no mass erase"):
        chip.flash(Image([(FLASH, rand(8, 3))]), Options(erase="chip"))


def test_bytes_to_keep_that_are_unknown_stop_the_plan():
    image = Image([(FLASH + 0x200, rand(0x100, 1))])
    facts = {FLASH: PageState(crc=1, blank=False, matches=False)}     # beside: unknown
    assert needs_reading(image, GEOMETRY, facts, Options()) == [FLASH]
    assert needs_reading(image, GEOMETRY, facts, Options(keep_unwritten=False)) == []
    with pytest.raises(PlanError, match="beside the image in page 0x08000000 are not known"):
        make_plan(image, GEOMETRY, facts, Options())
    plan = make_plan(image, GEOMETRY, facts, Options(keep_unwritten=False))
    assert plan.program[0].data[:0x200] == b"\xff" * 0x200


def test_the_survey_of_a_partial_page_tells_image_bytes_from_bytes_beside_it():
    # The image starts and ends inside words; the bytes beside it hold data at the edge word only.
    content = [(FLASH, b"\xff" * 0x101 + b"\x42")]          # byte 0x101 beside the image? no: inside
    image = Image([(FLASH + 0x102, b"abcdefg")])             # 0x102-0x108
    chip = Chip(GEOMETRY, content + [(FLASH + 0x109, b"\x00")])   # data beside the image, same word as its end
    query = survey_query(image, GEOMETRY)
    assert query.pages == (FLASH,)
    assert all(a % 4 == 0 and n % 4 == 0 for a, n in query.compares + query.blanks + query.crcs)
    assert FLASH + 0x100 in query.words and FLASH + 0x108 in query.words
    state = page_states(image, GEOMETRY, query, chip.answer(query, image))[FLASH]
    assert state.matches is False and state.beside_blank is False and state.blank is False
    chip.put(FLASH + 0x102, b"abcdefg")
    chip.put(FLASH + 0x101, b"\xff")
    state = page_states(image, GEOMETRY, query, chip.answer(query, image))[FLASH]
    assert state.matches is True and state.beside_blank is False
    chip.put(FLASH + 0x109, b"\xff")
    state = page_states(image, GEOMETRY, query, chip.answer(query, image))[FLASH]
    assert state.matches is True and state.beside_blank is True
    assert state.crc == crc32(chip.read(FLASH, PAGE))


def test_partial_pages_are_those_the_image_touches_without_filling_them():
    image = Image([(FLASH + 10, b"x" * (2 * PAGE - 10)), (FLASH + 3 * PAGE, b"y" * PAGE),
                   (FLASH + 5 * PAGE, b"z" * 5), (FLASH + 5 * PAGE + 7, b"w" * (PAGE - 7))])
    assert partial_pages(image, GEOMETRY) == [FLASH, FLASH + 5 * PAGE]
    assert partial_pages(Image([(0x08100000 + 100, b"q" * 3000)]), TWO) == [0x08100000, 0x08100800]


def test_an_image_outside_the_flash_is_refused():
    with pytest.raises(PlanError, match="0x08020000 is outside the flash"):
        make_plan(Image([(FLASH + 128 * PAGE - 2, b"abcd")]), GEOMETRY, {})


def test_geometry_and_options_are_checked():
    with pytest.raises(PlanError, match="not whole 1024-byte pages"):
        Region(FLASH, 1000, PAGE, **F100)
    with pytest.raises(PlanError, match="overlap"):
        Geometry((Region(FLASH, 4 * PAGE, PAGE, **F100), Region(FLASH + 2 * PAGE, 4 * PAGE, PAGE, **F100)))
    with pytest.raises(PlanError, match="erase mode 'all'"):
        Options(erase="all")
    with pytest.raises(PlanError, match="verify mode 'yes'"):
        Options(verify="yes")


@pytest.mark.parametrize("mode,pages", [("crc", [5]), ("read", list(range(77))), ("none", [])])
def test_verify_checks_what_the_mode_says(mode, pages):
    chip = Chip(GEOMETRY, [(FLASH, IMAGE_78K)])
    plan = chip.flash(Image([(FLASH, one_byte_changed(IMAGE_78K, 5 * PAGE))]), Options(verify=mode))
    assert [(p - FLASH) // PAGE for p in plan.verify_pages] == pages
    assert any(s.name == "verify" for s in plan.steps) == bool(pages)


def test_units_holding_the_erased_value_are_counted_only_when_the_executor_skips_them():
    data = b"\xff" * 512 + rand(512, 3)
    image = Image([(FLASH, data)])
    skipping = make_plan(image, GEOMETRY, {FLASH: PageState(blank=True, crc=crc32(b"\xff" * PAGE))},
                         Options(), COSTS)
    assert skipping.program[0].units == units(data) <= 256
    programming_all = make_plan(image, GEOMETRY, {FLASH: PageState(blank=True)}, Options(), Costs())
    assert programming_all.program[0].units == 512


# -- properties ------------------------------------------------------------------------------

SMALL = Geometry((Region(FLASH, 16 * 64, 64, page_erase_s=0.020, program_unit_s=52.5e-6, mass_erase_s=0.020),))


@st.composite
def scenes(draw):
    size = 16 * 64
    chip = bytearray(b"\xff" * size)
    if draw(st.booleans()):   # another image everywhere (random bytes, seeded)
        chip[:] = rand(size, draw(st.integers(0, 1000)))
    for _ in range(draw(st.integers(0, 4))):
        lo = draw(st.integers(0, size - 1))
        n = draw(st.integers(1, 200))
        chip[lo:lo + n] = draw(st.binary(min_size=n, max_size=n))[:size - lo]
    segments, address = [], draw(st.integers(0, size - 1))
    for _ in range(draw(st.integers(1, 3))):
        if address >= size:
            break
        n = draw(st.integers(1, min(300, size - address)))
        if draw(st.booleans()):   # the image holds what the chip holds there, or part of it
            data = bytes(chip[address:address + n])
        else:
            data = draw(st.binary(min_size=n, max_size=n))
        segments.append((FLASH + address, data))
        address += n + draw(st.integers(0, 200))
    if segments and draw(st.booleans()):   # nothing outside the image's pages: a mass erase may pay
        touched = {p - FLASH for _, p in SMALL.touched(Image(segments).ranges())}
        for page in range(0, size, 64):
            if page not in touched:
                chip[page:page + 64] = b"\xff" * 64
    options = Options(erase=draw(st.sampled_from(["auto", "auto", "sector", "chip"])),
                      keep_unwritten=draw(st.booleans()))
    return bytes(chip), segments, options


@settings(max_examples=300, deadline=None)
@given(scenes())
def test_any_plan_leaves_the_image_on_the_chip_and_loses_nothing_it_should_keep(scene):
    content, segments, options = scene
    chip = Chip(SMALL, [(FLASH, content)])
    image = Image(segments)
    plan = chip.flash(image, options)
    after = chip.snapshot()[FLASH]
    inside = bytearray(len(content))
    for start, data in segments:
        assert after[start - FLASH:start - FLASH + len(data)] == data
        inside[start - FLASH:start - FLASH + len(data)] = b"\x01" * len(data)
    touched = {p - FLASH for _, p in SMALL.touched(image.ranges())}
    rewritten = {w.address - FLASH for w in plan.program}
    for i, b in enumerate(after):
        if inside[i]:
            continue
        page = i - i % 64
        if page not in touched:
            assert b == (0xFF if options.erase == "chip" else content[i])
        elif page in rewritten and not options.keep_unwritten:
            assert b == 0xFF
        else:
            assert b == content[i]
    if options.erase == "auto":
        # Nothing but what differs is rewritten, unless one mass erase was cheaper.
        if not plan.mass_erase:
            for page in rewritten:
                assert any(after[i] != content[i] for i in range(page, page + 64) if inside[i]) or \
                       not options.keep_unwritten
        # A page that needed no erase was not erased.
        for page in plan.erase:
            assert content[page - FLASH:page - FLASH + 64] != b"\xff" * 64
    assert plan.page_crcs() == {p: zlib.crc32(after[p - FLASH:p - FLASH + 64]) for p in plan.page_sizes}
    assert sum(s.seconds for s in plan.steps) == pytest.approx(plan.seconds)


def test_the_preview_says_what_a_flash_may_do_before_the_chip_is_asked():
    from scons_pyocd.plan import preview
    image = Image([(FLASH, IMAGE_78K)], "fw.bin")
    text = preview(image, GEOMETRY, Options(), COSTS)
    assert text.splitlines()[0] == ("flash plan for fw.bin: 77 page(s) touched (0x08000000-0x080133FF), "
                                    "erase auto, verify crc")
    assert "compare     77 page(s) with the chip" in text
    assert f"77 page erase(s) + {units(IMAGE_78K)} program units" in text
    assert "one mass erase + every page" in text
    assert "mass erase, est. 20.0 ms" in preview(image, GEOMETRY, Options(erase="chip"), COSTS)
