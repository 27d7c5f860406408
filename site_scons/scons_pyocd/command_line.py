"""The tool's command-line options inside SCons's option parser, beside a project's own.

Every option of the table (:mod:`.options`) with a flag is declared once per process
with two spellings: the short one (``--target``) and one that is always the tool's
(``--pyocd-target``). A project that declares the short spelling itself keeps it, in
either order:

- declared **before** the tool is loaded: ``AddOption`` raises ``OptionConflictError``
  for the short spelling, so the tool declares only ``--pyocd-target``;
- declared **after**: the tool's option gives the spelling up when the project's is
  added (instead of the ``OptionConflictError`` traceback the project would get), and
  a value the tool's option had already read from the command line is handed back to
  SCons's list of not-yet-known options, so the project's option reads it.

``scons -h`` says which spellings reach the tool (:func:`spellings`, :func:`taken`).

This is the one place the tool reaches below SCons's public API for options, and it
does so through :mod:`optparse` only (SCons's parser is an ``optparse.OptionParser``):
the option objects ``AddOption`` returns (their ``container`` is SCons's "Local
Options" group), the group's conflict check, and its map of long flags. optparse is a
frozen standard module; ``tests/test_options.py`` drives both orders through the
real ``scons`` and fails if SCons stops behaving so.
"""

import optparse
from typing import Any, Dict, List, Optional

import SCons.Script

from . import options as opts

#: Table variable name -> the optparse Option the tool declared for it.
_DECLARED: Dict[str, optparse.Option] = {}
#: Table variable name -> the short spelling a project declared itself.
_TAKEN: Dict[str, str] = {}
#: optparse dest -> {spelling: value} as read from the command line.
_GIVEN: Dict[str, Dict[str, Any]] = {}
_declared = False


def _by_dest(dest: str) -> Optional[opts.Option]:
    return next((o for o in opts.OPTIONS if o.flag and o.dest == dest), None)


def _effective(option: opts.Option) -> Any:
    """The value given for ``option`` by a spelling that still reaches the tool
    (the ``--pyocd-`` one wins over the short one); None when none was given."""
    given = _GIVEN.get(option.dest, {})
    for flag in (option.prefixed_flag, option.flag):
        if flag in given and flag in spellings(option.name):
            return given[flag]
    return None


def _seen(opt: optparse.Option, opt_str: str, value: Any, parser: optparse.OptionParser) -> None:
    """optparse callback: note the value under the spelling used. While SCons still reads
    SConscripts (unknown options are kept for later), the argument is put back among them,
    so that a project option declared later with the same spelling can read it too."""
    option = _by_dest(opt.dest)
    _GIVEN.setdefault(opt.dest, {})[opt_str] = True if option is not None and option.switch else value
    if option is not None:
        setattr(parser.values, opt.dest, _effective(option))
    if getattr(parser, "preserve_unknown_options", False) and option is not None \
            and opt_str != option.prefixed_flag:
        parser.largs.append(opt_str if option.switch else f"{opt_str}={value}")


def _yield_to_the_project(group) -> None:
    """Make the "Local Options" group give a short spelling of the tool's up when a project
    declares it (optparse's 'resolve' handling, limited to the tool's own options; any
    other conflict is still an error)."""
    if getattr(group, "_scons_pyocd_yields", False):
        return
    check = group._check_conflict

    def check_conflict(new: optparse.Option):
        for name, ours in _DECLARED.items():
            option = opts.BY_NAME[name]
            for flag in list(new._long_opts):
                if flag == option.flag and flag in ours._long_opts and group._long_opt.get(flag) is ours:
                    ours._long_opts.remove(flag)
                    del group._long_opt[flag]
                    _TAKEN[name] = flag
                    if group.parser is not None and group.parser.values is not None:
                        setattr(group.parser.values, ours.dest, _effective(option))
        return check(new)

    group._check_conflict = check_conflict
    group._scons_pyocd_yields = True


def declare() -> None:
    """Declare the table's options (once per process). ``scons -h`` text is not given here
    (``help=SUPPRESS_HELP``): the tool's own block lists each option once."""
    global _declared
    if _declared:
        return
    _declared = True
    for option in opts.OPTIONS:
        if not option.flag:
            continue
        kwargs: Dict[str, Any] = dict(dest=option.dest, default=None, action="callback", callback=_seen,
                                      help=optparse.SUPPRESS_HELP)
        if not option.switch:
            kwargs.update(type="string", nargs=1, metavar=option.metavar or "VALUE")
        flags = [option.flag] + ([option.prefixed_flag] if option.prefixed_flag != option.flag else [])
        try:
            declared = SCons.Script.AddOption(*flags, **kwargs)
        except optparse.OptionConflictError:
            _TAKEN[option.name] = option.flag      # the project declared it first: it keeps it
            declared = SCons.Script.AddOption(option.prefixed_flag, **kwargs)
        _DECLARED[option.name] = declared
        _yield_to_the_project(declared.container)


def value(dest: str) -> Any:
    """The command-line value of the table option with this optparse ``dest``, None when not
    given (or given only under a spelling the project took)."""
    option = _by_dest(dest)
    return _effective(option) if option is not None else None


def spellings(name: str) -> List[str]:
    """The command-line spellings that reach the tool's option for variable ``name`` now."""
    option = opts.BY_NAME[name]
    declared = _DECLARED.get(name)
    if declared is None:
        return [f for f in (option.flag, option.prefixed_flag) if f] if option.flag else []
    order = [option.flag, option.prefixed_flag]
    return [f for f in dict.fromkeys(order) if f in declared._long_opts]


def taken() -> Dict[str, str]:
    """Variable name -> the short spelling the project declared as its own option."""
    return dict(_TAKEN)


# -- scons -h ---------------------------------------------------------------------------------

class _HelpText(str):
    """The tool's ``scons -h`` block, written when SCons prints the help, after every
    SConscript was read: the targets, defaults and spellings as the project left them.

    SCons keeps the help as one string, adds each ``Help()`` text to it with ``+``, and
    prints it with ``print()`` (which calls ``str()``). This ``str`` keeps the pieces
    around it and renders the tool's block in ``__str__``; its own value is the block as it
    was when the tool was loaded, what anything that bypasses ``str()`` would see.
    """

    def __new__(cls, facts, parts=None):
        text = super().__new__(cls, opts.help_text())
        text._facts = facts
        text._parts = list(parts) if parts is not None else [text]
        return text

    def __radd__(self, other):
        return _HelpText(self._facts, [other] + self._parts)

    def __add__(self, other):
        return _HelpText(self._facts, self._parts + [other])

    def _render(self, part) -> str:
        if part is _LOCAL_OPTIONS:
            return _local_options()
        if isinstance(part, _HelpText):
            try:
                return opts.help_text(self._facts())
            except Exception as exc:     # never lose `scons -h` to the tool
                return str.__str__(part) + f"\n(scons-pyocd: {type(exc).__name__}: {exc})\n"
        return str(part)

    def __str__(self) -> str:
        return "".join(self._render(part) for part in self._parts)


_LOCAL_OPTIONS = object()
_help_added = False


def _local_options() -> str:
    """SCons's "Local Options" block as of now: the project's own options (the tool's are
    hidden from it); nothing when the project declared none."""
    group = next((o.container for o in _DECLARED.values()), None)
    if group is None or all(o.help == optparse.SUPPRESS_HELP for o in group.option_list):
        return ""
    try:
        return group.parser.format_local_option_help()
    except AttributeError:      # SCons before 4.6: the group as optparse formats it
        return group.format_help(group.parser.formatter)


def add_help(facts) -> None:
    """Add the tool's block to ``scons -h`` (once per process); ``facts()`` gives the
    :class:`~scons_pyocd.options.HelpFacts` when the help is printed.

    When the tool is the first to call ``Help()``, SCons would put its "Local Options"
    block first, rendered now; the tool renders it when printed instead, so that options
    the project declares later are listed, and an empty heading is not.
    """
    global _help_added
    if _help_added:
        return
    _help_added = True
    first = SCons.Script.help_text is None
    text = _HelpText(facts)
    if first:
        SCons.Script.Help("", append=False)
        text = _HelpText(facts, [_LOCAL_OPTIONS, text])
    SCons.Script.Help(text)
