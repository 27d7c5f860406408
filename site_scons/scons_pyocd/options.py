"""Every construction variable of the tool, declared once.

:data:`OPTIONS` is the single table. From it come the defaults that
``generate(env)`` installs, the command-line options (``AddOption``), the
``scons -h`` text, the varlist that makes a changed option reflash, the checks
that reject a bad value, and the reference section of ``docs/user-guide.md``
(``python -m scons_pyocd.options`` prints it; a test keeps the two equal).

This module imports neither SCons nor pyOCD.
"""

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


_FREQ = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)(?:[hH][zZ])?\s*$")


def parse_frequency(name: str, value: Any) -> Optional[int]:
    """SWD clock in Hz; accepts 4000000, '4M', '4MHz', '400k'. Empty means the probe's default."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FlashError(f"{name}={value!r} is not a frequency; write it like 4000000 or '4MHz'.")
    if isinstance(value, (int, float)):
        hz = int(value)
    else:
        match = _FREQ.match(str(value))
        if not match:
            raise FlashError(f"{name}={value!r} is not a frequency; write it like 4000000, '4MHz' or '400kHz'.")
        number, unit = match.groups()
        hz = int(float(number) * {"": 1, "k": 1_000, "m": 1_000_000}[unit.lower()])
    if not 1_000 <= hz <= 100_000_000:
        raise FlashError(f"{name}={value!r} is out of range; SWD clocks run from 1 kHz to 100 MHz "
                         "(ST-Link/V2: up to 4 MHz).")
    return hz


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

    @property
    def dest(self) -> str:
        """The optparse destination of :attr:`flag`."""
        return "pyocd_" + self.name[len("PYOCD_"):].lower() if self.name.startswith("PYOCD_") \
            else "pyocd_" + self.name.lower()

    def convert(self, value: Any) -> Any:
        """Check ``value`` and return it in canonical form; :class:`FlashError` says what is wrong."""
        if self.choices:
            if isinstance(value, bool):
                value = "yes" if value else "no"
            text = parse_str(self.name, value).lower()
            text = dict(self.aliases).get(text, text)
            if text not in self.choices:
                raise FlashError(f"{self.name}={value!r} is not one of {', '.join(self.choices)}.")
            return text
        return self.parse(self.name, value)


def _choice(name: str, value: Any) -> str:   # choices are checked by Option.convert
    return parse_str(name, value)


OPTIONS: Tuple[Option, ...] = (
    Option("PYOCD_TARGET", "", "pyOCD target name of the chip, e.g. stm32f100rb. Empty: the target the "
           "probe's board reports.", parse_str, flag="--target", metavar="NAME", in_varlist=True),
    Option("PYOCD_PROBE", "", "Unique id (or a unique part of it) of the debug probe. Empty: the only "
           "probe attached; with several attached, the error lists them. remote:HOST:PORT: the probe a "
           "pyocd server serves there; labgrid:PLACE: the one of a labgrid place (docs/farm.md).", parse_str,
           flag="--probe", metavar="ID", in_varlist=True),
    Option("PYOCD_FREQUENCY", "", "SWD clock, e.g. 4000000 or '4MHz'. Empty: pyOCD's default (1 MHz).",
           parse_frequency, flag="--frequency", metavar="HZ", in_varlist=True),
    Option("PYOCD_BASE_ADDRESS", "", "Where a raw binary (.bin) is written, e.g. 0x08000000. Empty: the "
           "start of the target's flash. Hex and ELF images carry their own addresses.",
           parse_address, flag="--base-address", metavar="ADDR", in_varlist=True),
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
           "just programmed, by on-chip CRC32 of 4 KiB blocks and reading back the rest), read (read "
           "every byte of the image back), none. "
           "True/False mean crc/none. "
           "A mismatch is an error naming the address, and leaves no record.", _choice,
           flag="--verify", choices=("crc", "read", "none"), in_varlist=True,
           aliases=(("yes", "crc"), ("true", "crc"), ("on", "crc"), ("1", "crc"),
                    ("no", "none"), ("false", "none"), ("off", "none"), ("0", "none"))),
    Option("PYOCD_OPTIONS", {}, "Extra pyOCD session options, e.g. {'flash.timeout.program': 2.0}. "
           "These win over the tool's own, including the safety ones (see 'Security').",
           parse_dict, in_varlist=True),
    Option("PYOCD_FLASH_CHECK", False, "Before deciding a flash is up to date, connect and compare "
           "the chip (identity, CRC of the image's pages); reflash only if it differs. For boards "
           "written by other tools.", parse_bool, flag="--flash-check", switch=True),
    Option("PYOCD_FORCE", False, "Flash even if the image, options and board record say the "
           "board is up to date.", parse_bool, flag="--force-flash", switch=True),
    Option("PYOCD_DEBUG", False, "Show pyOCD's own log (debug level) on stderr.", parse_bool,
           flag="--pyocd-debug", switch=True),
    Option("PYOCD_ERASE_RANGES", "", "What env.Erase() erases: the pages overlapping these ranges, "
           "e.g. '0x08000000+0x800' or [(0x08000000, 0x08000800)] (end exclusive). Empty: the whole "
           "chip (mass erase), or with an image as source, the pages the image occupies.",
           parse_ranges),
    Option("PYOCD_FILL", 0xFF, "Byte that fills gaps when an image is converted to a raw binary.",
           parse_byte, in_varlist=False),
    Option("FLASHCOMSTR", "", "Line shown when a flash starts. Empty: one line with the result "
           "when it ends.", parse_str),
    Option("ERASECOMSTR", "", "Line shown when an erase starts. Empty: one line with the result.",
           parse_str),
    Option("VERIFYCOMSTR", "", "Line shown when a verify starts. Empty: one line with the result.",
           parse_str),
    Option("CONVERTCOMSTR", "", "Line shown when an image is converted (HexFromBin and the like). "
           "Empty: 'convert SOURCE -> TARGET'.", parse_str),
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
        if value is None:
            value = get(option.name)
        if value is None:
            value = option.default
        values[option.name] = option.convert(value)
    return values


def _default_text(option: Option) -> str:
    default = option.default
    if option.name == "PYOCD_FILL":
        return "0xFF"
    if default == "" or default == {}:
        return "(empty)"
    return repr(default) if not isinstance(default, str) else default


def help_text() -> str:
    """The ``scons -h`` section: one paragraph per variable."""
    lines = ["", "Flashing (scons-pyocd): construction variables and command-line options", ""]
    for option in OPTIONS:
        head = f"  {option.name}"
        if option.flag:
            head += f"  ({option.flag}" + ("" if option.switch else f"={option.metavar or 'VALUE'}") + ")"
        lines.append(head)
        lines.append(f"      {option.help}")
        extra = f"default: {_default_text(option)}"
        if option.choices:
            extra += f"; one of: {', '.join(option.choices)}"
        lines.append(f"      {extra}")
    lines.append("")
    return "\n".join(lines)


DOCS_BEGIN = "<!-- BEGIN generated: python -m scons_pyocd.options -->"
DOCS_END = "<!-- END generated -->"


def markdown() -> str:
    """The reference table of ``docs/user-guide.md``, between :data:`DOCS_BEGIN` and :data:`DOCS_END`."""
    rows = ["| variable | command line | default | allowed values | reflash on change | what it does |",
            "|---|---|---|---|---|---|"]
    for option in OPTIONS:
        flag = f"`{option.flag}`" if option.switch else (
            f"`{option.flag}={option.metavar or 'VALUE'}`" if option.flag else "")
        allowed = ", ".join(f"`{c}`" for c in option.choices)
        text = option.help.replace("|", "\\|")
        rows.append(f"| `{option.name}` | {flag} | `{_default_text(option)}` | {allowed} | "
                    f"{'yes' if option.in_varlist else ''} | {text} |")
    return "\n".join([DOCS_BEGIN] + rows + [DOCS_END])


if __name__ == "__main__":
    print(markdown())
