"""Every construction variable of the tool, declared once.

:data:`OPTIONS` is the single table. From it come the defaults that
``generate(env)`` installs, the command-line options (``AddOption``), the
``scons -h`` text, the varlist that makes a changed option reflash, the checks
that reject a bad value, and the reference section of ``docs/user-guide.md``
(``python -m scons_pyocd.options`` prints it; a test keeps the two equal).

This module imports neither SCons nor pyOCD.
"""

import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from .errors import FlashError

_TRUE = ("1", "yes", "true", "on", "y")
_FALSE = ("0", "no", "false", "off", "n", "")


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise FlashError(f"{name}={value!r} is not a yes/no value; use True or False "
                     "(on the command line: yes or no).")


_FREQ = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kKmM])(?:[hH][zZ])?|([hH][zZ]))?\s*$")
#: A bare number below this is refused: no one means an SWD clock of a few kHz, but OpenOCD's
#: ``adapter speed 4000`` means 4000 kHz, so ``--frequency=4000`` is almost surely that.
BARE_FREQUENCY_MIN = 100_000


def _unit_hint(number: float) -> str:
    mhz = number / 1000
    return f"'{number:g}kHz'" + (f" or '{mhz:g}MHz'" if mhz >= 1 else "")


def parse_frequency(name: str, value: Any) -> Optional[int]:
    """SWD clock in Hz, or None (empty: the probe's default).

    Accepts 4000000, '4000000', '4MHz', '4M', '4000kHz', '4000k', '50000Hz'. A bare number
    (no unit) below :data:`BARE_FREQUENCY_MIN` is refused with a message suggesting the unit
    (OpenOCD's ``adapter speed`` takes kHz). Range: 1 kHz to 100 MHz. Raises FlashError.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FlashError(f"{name}={value!r} is not a frequency; write it like 4000000 or '4MHz'.")
    if isinstance(value, (int, float)):
        number, unit, hz_unit = float(value), "", None
    else:
        match = _FREQ.match(str(value))
        if not match:
            raise FlashError(f"{name}={value!r} is not a frequency; write it like 4000000, '4MHz' or '400kHz'.")
        number, unit, hz_unit = float(match.group(1)), (match.group(2) or "").lower(), match.group(3)
    hz = int(number * {"": 1, "k": 1_000, "m": 1_000_000}[unit])
    if not unit and not hz_unit and hz < BARE_FREQUENCY_MIN:
        raise FlashError(f"{name}={value!r} has no unit and would be {hz} Hz, far below any SWD clock one "
                         f"means (OpenOCD's 'adapter speed {number:g}' is in kHz): write {_unit_hint(number)}, "
                         f"or '{number:g}Hz' if you really mean Hz.")
    if not 1_000 <= hz <= 100_000_000:
        raise FlashError(f"{name}={value!r} is out of range; SWD clocks run from 1 kHz to 100 MHz "
                         "(ST-Link/V2: up to 4 MHz).")
    return hz


def frequency_text(hz: Optional[int]) -> str:
    """A clock for people: '4 MHz', '1.8 MHz', '480 kHz', '1500 Hz'."""
    if hz is None:
        return ""
    if hz >= 1_000_000 and hz % 1_000 == 0:
        return f"{hz / 1_000_000:g} MHz"
    if hz >= 1_000 and hz % 1_000 == 0:
        return f"{hz // 1_000} kHz"
    return f"{hz} Hz"


def parse_address(name: str, value: Any) -> Optional[int]:
    """A 32-bit address (int or '0x08000000'); empty means 'the target's flash start'."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise FlashError(f"{name}={value!r} is not a number; write it like 0x08000000.") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise FlashError(f"{name}={value!r} is not a 32-bit address; write it like 0x08000000.")
    return value


def parse_byte(name: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise FlashError(f"{name}={value!r} is not a byte value; write it like 0xFF.") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise FlashError(f"{name}={value!r} is not a byte value (0-255); 0xFF is erased flash.")
    return value


def parse_dict(name: str, value: Any) -> Dict[str, Any]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FlashError(f"{name} must be a dict of pyOCD session options, e.g. "
                         "{'flash.timeout.program': 2.0}; got " f"{value!r}.")
    return dict(value)


def parse_str(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FlashError(f"{name}={value!r} must be a string.")
    return value.strip()


_RANGE = re.compile(r"^\s*(\w+)\s*([-+])\s*(\w+)\s*$")


def parse_ranges(name: str, value: Any) -> Optional[List[Tuple[int, int]]]:
    """Address ranges: None/empty (none given), ``(start, end)``, a list of them, or strings
    ``"0x08000000-0x08000800"`` (end exclusive) / ``"0x08000000+0x800"``."""
    if value is None or value == "" or value == []:
        return None
    items = [value] if isinstance(value, (str, tuple)) else list(value) if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            match = _RANGE.match(item)
            try:
                lo, op, hi = int(match.group(1), 0), match.group(2), int(match.group(3), 0)
            except (AttributeError, ValueError):
                raise FlashError(f"{name}: {item!r} is not START-END or START+LENGTH "
                                 "(e.g. '0x08000000+0x800').") from None
            out.append((lo, lo + hi if op == "+" else hi))
        elif (isinstance(item, tuple) and len(item) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) for x in item)):
            out.append(item)
        else:
            raise FlashError(f"{name}: {item!r} is not (start, end) or 'START+LENGTH'.")
    for lo, hi in out:
        if not 0 <= lo < hi <= 1 << 32:
            raise FlashError(f"{name}: 0x{lo:X}-0x{hi:X} is empty or not 32-bit; the end is exclusive.")
    return out


class Option(NamedTuple):
    """One construction variable.

    ``flag`` is its command-line option (None: none); a command-line value
    overrides the SConstruct's. ``choices`` lists the allowed values of a
    choice option. ``in_varlist``: a change of this variable reflashes.
    """
    name: str
    default: Any
    help: str
    parse: Callable[[str, Any], Any]
    flag: Optional[str] = None
    choices: Tuple[str, ...] = ()
    metavar: Optional[str] = None
    in_varlist: bool = False
    switch: bool = False          # a flag without a value (--force-flash)
    aliases: Tuple[Tuple[str, str], ...] = ()   # other spellings of a choice, e.g. ("yes", "crc")
    unset: str = ""               # what an empty value means, for `scons -h` and the docs

    @property
    def prefixed_flag(self) -> Optional[str]:
        """The spelling that is always the tool's (``--pyocd-target``), even when the project
        declares :attr:`flag` itself; None when there is no flag."""
        if not self.flag:
            return None
        return self.flag if self.flag.startswith("--pyocd-") else "--pyocd-" + self.flag[2:]

    @property
    def dest(self) -> str:
        """The optparse destination of :attr:`flag`."""
        return "pyocd_" + self.name[len("PYOCD_"):].lower() if self.name.startswith("PYOCD_") \
            else "pyocd_" + self.name.lower()

    def convert(self, value: Any, label: Optional[str] = None) -> Any:
        """Check ``value`` and return it in canonical form; :class:`FlashError` says what is
        wrong, naming ``label`` (default: the variable; ``--frequency`` for a command-line value)."""
        label = label or self.name
        if self.choices:
            if isinstance(value, bool):
                value = "yes" if value else "no"
            text = parse_str(label, value).lower()
            text = dict(self.aliases).get(text, text)
            if text not in self.choices:
                raise FlashError(f"{label}={value!r} is not one of {', '.join(self.choices)}.")
            return text
        return self.parse(label, value)


def _choice(name: str, value: Any) -> str:   # choices are checked by Option.convert
    return parse_str(name, value)


OPTIONS: Tuple[Option, ...] = (
    Option("PYOCD_TARGET", "", "pyOCD target name of the chip, e.g. stm32f100rb. Empty: the target the "
           "probe's board reports.", parse_str, flag="--target", metavar="NAME", in_varlist=True,
           unset="the target the probe's board reports"),
    Option("PYOCD_PROBE", "", "Unique id (or a unique part of it) of the debug probe. Empty: the only "
           "probe attached; with several attached, the error lists them. remote:HOST:PORT: the probe a "
           "pyocd server serves there; labgrid:PLACE: the one of a labgrid place (docs/farm.md).", parse_str,
           flag="--probe", metavar="ID", in_varlist=True, unset="the only probe attached"),
    Option("PYOCD_FREQUENCY", "", "SWD clock: 4MHz, 4000kHz or 4000000 (Hz). A bare number below "
           "100000 is refused: OpenOCD's 'adapter speed 4000' means kHz, so write the unit. Empty: "
           "pyOCD's default (1 MHz).", parse_frequency, flag="--frequency", metavar="HZ", in_varlist=True,
           unset="pyOCD's default, 1 MHz"),
    Option("PYOCD_BASE_ADDRESS", "", "Where a raw binary (.bin) is written, e.g. 0x08000000. Empty: the "
           "start of the target's flash. Hex and ELF images carry their own addresses.",
           parse_address, flag="--base-address", metavar="ADDR", in_varlist=True,
           unset="the start of the target's flash"),
    Option("PYOCD_ERASE", "auto", "auto: erase only the sectors whose content changes, or a mass "
           "erase when that is cheaper and every sector outside the image's is already blank; never "
           "loses data outside the image. "
           "sector: erase and program every sector of the image. chip: mass erase, then program "
           "(erases every page the image does not touch; bytes beside the image in the pages it "
           "touches are read first and written back).", _choice,
           flag="--erase-mode", choices=("auto", "sector", "chip"), in_varlist=True),
    Option("PYOCD_CONNECT", "halt", "How to connect: halt the running core, hold it under reset "
           "(for firmware that disables SWD or sleeps), or attach without halting.", _choice,
           flag="--connect", choices=("halt", "under-reset", "attach"), in_varlist=True),
    Option("PYOCD_RESET", "run", "After flashing: reset and run, reset and halt, or none (no reset; "
           "the core stays halted).", _choice, flag="--reset", choices=("run", "halt", "none"),
           in_varlist=True),
    Option("PYOCD_VERIFY", "crc", "After programming, compare the chip with the image: crc (the pages "
           "just programmed, by an on-chip CRC-32: on the STM32F100RB the CRC unit, a page at a "
           "time; on other targets pyOCD's CRC analyzer in 4 KiB blocks, reading back what it cannot "
           "cover), read (read every byte of the image back), none. "
           "True/False mean crc/none. "
           "A mismatch is an error naming the address, and leaves no record.", _choice,
           flag="--verify", choices=("crc", "read", "none"), in_varlist=True,
           aliases=(("yes", "crc"), ("true", "crc"), ("on", "crc"), ("1", "crc"),
                    ("no", "none"), ("false", "none"), ("off", "none"), ("0", "none"))),
    Option("PYOCD_OPTIONS", {}, "Extra pyOCD session options, e.g. {'flash.timeout.program': 2.0}. "
           "These win over the tool's own, including the safety ones (see 'Security').",
           parse_dict, in_varlist=True, unset="none"),
    Option("PYOCD_FLASH_CHECK", False, "Before deciding a flash is up to date, connect and compare "
           "the chip (identity, CRC of the image's pages); reflash only if it differs. For boards "
           "written by other tools.", parse_bool, flag="--flash-check", switch=True),
    Option("PYOCD_FORCE", False, "Flash even if the image, options and board record say the "
           "board is up to date.", parse_bool, flag="--force-flash", switch=True),
    Option("PYOCD_DEBUG", False, "Show pyOCD's own log (debug level), the flash plan before anything "
           "is written, and after a flash the page map.", parse_bool, flag="--pyocd-debug", switch=True),
    Option("PYOCD_PROGRESS", "auto", "Progress of connecting, comparing, blank checks, erasing, "
           "programming and verifying, on stderr. auto: a bar on a terminal, lines (each phase's "
           "start, then every 10 % or 5 s) otherwise, e.g. in a CI log. bar, lines: that one. none: "
           "no progress.", _choice, flag="--progress", choices=("auto", "bar", "lines", "none")),
    Option("PYOCD_PAGE_MAP", False, "After a flash, print which pages were unchanged, erased or "
           "programmed (one character a page).", parse_bool, flag="--page-map", switch=True),
    Option("PYOCD_ERASE_RANGES", "", "What env.Erase() erases: the pages overlapping these ranges, "
           "e.g. '0x08000000+0x800' or [(0x08000000, 0x08000800)] (end exclusive). Empty: the whole "
           "chip (mass erase), or with an image as source, the pages the image occupies.",
           parse_ranges, unset="the whole chip, or the image's pages"),
    Option("PYOCD_FILL", 0xFF, "Byte that fills gaps when an image is converted to a raw binary.",
           parse_byte, in_varlist=False),
    Option("FLASHCOMSTR", "", "Line shown when a flash starts. Empty: one line with the result "
           "when it ends.", parse_str, unset="the result line"),
    Option("ERASECOMSTR", "", "Line shown when an erase starts. Empty: one line with the result.",
           parse_str, unset="the result line"),
    Option("VERIFYCOMSTR", "", "Line shown when a verify starts. Empty: one line with the result.",
           parse_str, unset="the result line"),
    Option("CONVERTCOMSTR", "", "Line shown when an image is converted (HexFromBin and the like). "
           "Empty: 'convert SOURCE -> TARGET'.", parse_str, unset="convert SOURCE -> TARGET"),
)

BY_NAME: Dict[str, Option] = {option.name: option for option in OPTIONS}

#: Variables whose change makes the next ``scons flash`` reflash.
FLASH_VARLIST: List[str] = [option.name for option in OPTIONS if option.in_varlist]


def resolve(get: Callable[[str], Any], cli: Callable[[str], Any] = lambda dest: None) -> Dict[str, Any]:
    """The effective value of every option, checked and canonical.

    ``get(name)`` reads the construction variable (None when unset); ``cli(dest)``
    reads the command-line option (None when not given), which wins.
    """
    values = {}
    for option in OPTIONS:
        value = cli(option.dest) if option.flag else None
        label = option.flag if value is not None else None
        if value is None:
            value = get(option.name)
        if value is None:
            value = option.default
        values[option.name] = option.convert(value, label)
    return values


def shown(option: Option, value: Any) -> str:
    """A canonical value (see :meth:`Option.convert`) as ``scons -h`` and the docs show it;
    an empty one as what it means (:attr:`Option.unset`)."""
    if value is None or value == "" or value == {} or value == []:
        return option.unset or "(empty)"
    if option.name == "PYOCD_FREQUENCY":
        return frequency_text(value)
    if option.name == "PYOCD_BASE_ADDRESS":
        return f"0x{value:08X}"
    if option.name == "PYOCD_FILL":
        return f"0x{value:02X}"
    if option.name == "PYOCD_ERASE_RANGES":
        return ", ".join(f"0x{lo:08X}-0x{hi:08X}" for lo, hi in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _default_text(option: Option) -> str:
    return shown(option, option.convert(option.default))


def suggest(name: str) -> Optional[str]:
    """The known variable closest to an unknown ``PYOCD_*`` name (``PYOCD_PRBOE`` ->
    ``PYOCD_PROBE``), or None when none is close: difflib's ratio of the parts after
    ``PYOCD_`` below 0.6 (the shared prefix would make everything look close). A known name
    that the unknown one abbreviates or extends (``PYOCD_FREQ``, ``PYOCD_FORCE_FLASH``) wins."""
    import difflib
    known = {o.name[len("PYOCD_"):]: o.name for o in OPTIONS if o.name.startswith("PYOCD_")}
    given = name.upper()[len("PYOCD_"):]
    prefixed = [k for k in known if given and (k.startswith(given) or given.startswith(k))]
    if prefixed:
        return known[max(prefixed, key=lambda k: len(os.path.commonprefix([k, given])))]
    close = difflib.get_close_matches(given, list(known), n=1, cutoff=0.6)
    return known[close[0]] if close else None


def unknown_variables(names) -> List[Tuple[str, Optional[str]]]:
    """``(name, closest known name or None)`` for each ``PYOCD_*`` name the tool does not know."""
    return [(name, suggest(name)) for name in sorted(set(names))
            if name.startswith("PYOCD_") and name not in BY_NAME]


class HelpFacts(NamedTuple):
    """What ``scons -h`` says beyond the table, gathered from the SConstruct as read.

    ``defaults``: variable -> the effective values where the tool is used (the SConstruct's,
    else the table's default), already :func:`shown`. ``flags``: variable -> the command-line
    spellings that reach the tool's option; ``taken``: variable -> the spelling the project
    declared itself. ``targets``: ``(name, what it does)`` of the targets the tool added.
    """
    defaults: Dict[str, List[str]] = {}
    flags: Dict[str, List[str]] = {}
    taken: Dict[str, str] = {}
    targets: List[Tuple[str, str]] = []


def _wrap(text: str, indent: str, hanging: str = "") -> List[str]:
    import textwrap
    return textwrap.wrap(text, width=79, initial_indent=indent, subsequent_indent=indent + hanging,
                         break_on_hyphens=False, break_long_words=False)


def help_text(facts: HelpFacts = HelpFacts()) -> str:
    """The ``scons -h`` section: the targets the tool added, then every option and variable once,
    with the spellings that reach it and its effective default."""
    lines = ["", "Flashing with scons-pyocd (docs/user-guide.md):", ""]
    if facts.targets:
        lines.append("Targets:")
        width = max(len(name) for name, _ in facts.targets) + 2
        for name, what in facts.targets:
            lines += _wrap(f"{name:{width}}{what}", "  ", " " * width)
        lines.append("")
    lines.append("Options (a command-line value wins over the SConstruct's construction variable):")
    for option in OPTIONS:
        if not option.flag:
            continue
        value = "" if option.switch else f"={option.metavar or 'VALUE'}"
        spellings = facts.flags.get(option.name) or [option.flag]
        lines.append(f"  {', '.join(s + value for s in spellings)}  ({option.name})")
        lines += _wrap(option.help, "      ")
        extra = f"default: {'; '.join(facts.defaults.get(option.name) or [_default_text(option)])}"
        if option.choices:
            extra += f"; one of: {', '.join(option.choices)}"
        if option.name in facts.taken:
            extra += (f". {facts.taken[option.name]} is this project's own option; the tool's is "
                      f"{option.prefixed_flag}")
        lines += _wrap(extra, "      ")
    lines += ["", "Construction variables without a command-line option:"]
    for option in OPTIONS:
        if option.flag:
            continue
        lines.append(f"  {option.name}")
        lines += _wrap(option.help, "      ")
        lines += _wrap(f"default: {'; '.join(facts.defaults.get(option.name) or [_default_text(option)])}",
                       "      ")
    lines.append("")
    return "\n".join(lines)


DOCS_BEGIN = "<!-- BEGIN generated: python -m scons_pyocd.options -->"
DOCS_END = "<!-- END generated -->"


def markdown() -> str:
    """The reference table of ``docs/user-guide.md``, between :data:`DOCS_BEGIN` and :data:`DOCS_END`."""
    rows = ["| variable | command line (a project's own option of the same name wins; the `--pyocd-` "
            "spelling is always the tool's) | default | allowed values | reflash on change | what it does |",
            "|---|---|---|---|---|---|"]
    for option in OPTIONS:
        value = "" if option.switch else f"={option.metavar or 'VALUE'}"
        flag = " ".join(f"`{f}{value}`" for f in dict.fromkeys([option.flag, option.prefixed_flag])) \
            if option.flag else ""
        allowed = ", ".join(f"`{c}`" for c in option.choices)
        text = option.help.replace("|", "\\|")
        empty = option.default in ("", {})
        default = f"empty: {_default_text(option)}" if empty else f"`{_default_text(option)}`"
        rows.append(f"| `{option.name}` | {flag} | {default} | {allowed} | "
                    f"{'yes' if option.in_varlist else ''} | {text} |")
    return "\n".join([DOCS_BEGIN] + rows + [DOCS_END])


if __name__ == "__main__":
    print(markdown())
