"""SCons glue: the Flash, Erase and Verify methods, the conversion builders, the aliases.

No pyOCD here, and nothing imported at SConscript time that imports it: the
actions import :mod:`.operations` when they run, so a build that flashes
nothing (a no-op ``scons flash`` included) never loads pyOCD.

How a flash is kept up to date. ``env.Flash(image)`` returns a small file in
the build tree, ``<image>.<probe>.flashed``, built from two sources and a
varlist:

- the image file (its content signature);
- a ``Value`` holding the board record's token for this file (see
  :mod:`.records`): unchanged after this file's own flash, changed by any other
  write to the board this tool knows of (another project, ``scons erase``, a
  failed flash or verify) — reading it costs one small JSON file;
- every flashing option (``options.FLASH_VARLIST``).

So SCons itself decides, and ``--debug=explain`` says why a reflash happens.
"""

import json
import optparse
import os
import re
import shlex
import signal
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Node
import SCons.Script

from . import options as opts
from . import records
from .errors import FlashError

_cli_ready = False


# -- options ----------------------------------------------------------------------------

def add_command_line_options() -> None:
    """Declare the table's command-line options and its ``scons -h`` text, once a process."""
    global _cli_ready
    if _cli_ready:
        return
    _cli_ready = True
    for option in opts.OPTIONS:
        if not option.flag:
            continue
        kwargs: Dict[str, Any] = dict(dest=option.dest, default=None, help=option.help)
        if option.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(action="store", type="string", nargs=1, metavar=option.metavar or "VALUE")
            if option.choices:
                kwargs["help"] += f" One of: {', '.join(option.choices)}."
        try:
            SCons.Script.AddOption(option.flag, **kwargs)
        except optparse.OptionConflictError:
            pass     # the SConstruct declared this flag itself: it keeps it
    SCons.Script.Help(opts.help_text(), append=True, local_only=True)


def _cli(dest: str) -> Any:
    try:
        return SCons.Script.GetOption(dest)
    except AttributeError:    # the option was never added (a flag conflict)
        return None


def resolve(env, overrides: Optional[Dict[str, Any]] = None, cli: bool = True) -> Dict[str, Any]:
    """Effective option values: command line, then per-call overrides, then ``env``.

    A bad value is a UserError naming the variable, at SConscript-reading time.
    """
    overrides = overrides or {}

    def get(name):
        return overrides[name] if name in overrides else env.get(name)

    try:
        values = opts.resolve(get, _cli if cli else (lambda dest: None))
    except FlashError as exc:
        raise SCons.Errors.UserError(str(exc)) from None
    values["PYOCD_OPTIONS"] = dict(sorted(values["PYOCD_OPTIONS"].items()))
    return values


def _settings(values: Dict[str, Any]):
    from .session import Settings
    return Settings(target=values["PYOCD_TARGET"], frequency=values["PYOCD_FREQUENCY"],
                    connect=values["PYOCD_CONNECT"], reset=values["PYOCD_RESET"],
                    erase=values["PYOCD_ERASE"], verify=values["PYOCD_VERIFY"],
                    options=values["PYOCD_OPTIONS"], debug=values["PYOCD_DEBUG"],
                    should_stop=_interrupted)


def _interrupted() -> bool:
    """Whether SCons got Ctrl-C (or SIGTERM) during this build.

    SCons's signal handler only stops the build once the running actions finish; a flash
    should stop between two pages instead. The handler keeps SCons's job runner as a
    default argument, which is how its ``interrupted`` flag is read here, from any thread.
    """
    handler = signal.getsignal(signal.SIGINT)
    runner = (getattr(handler, "__defaults__", None) or (None,))[0]
    flag = getattr(getattr(runner, "job", None), "interrupted", None)
    try:
        return bool(flag()) if callable(flag) else False
    except Exception:
        return False


def _say(line: str) -> None:
    print(line, flush=True)


def _result(env, comstr: str, line: str) -> None:
    """The action's one line, unless the user's *COMSTR replaced it or scons -s silenced it."""
    if SCons.Action.print_actions and not env.get(comstr):
        _say(line)


def _failed(exc: FlashError, node) -> SCons.Errors.BuildError:
    return SCons.Errors.BuildError(node=node, errstr=str(exc), exitstatus=2)


def _dry_run() -> bool:
    return not SCons.Action.execute_actions


def _board(values: Dict[str, Any]) -> Tuple[str, str]:
    """(configured probe, the board id its record is kept under, without asking USB)."""
    probe = values["PYOCD_PROBE"]
    return probe, records.resolved_probe(probe)


def _where(values: Dict[str, Any]) -> str:
    return (f"{values['PYOCD_TARGET'] or 'the probe target'} via "
            f"{values['PYOCD_PROBE'] or 'the only probe attached'}")


def _probe_node(env, board: str):
    """The per-probe side effect that keeps ``scons -j`` from running two operations on one probe."""
    return env.Alias(f"pyocd-probe:{board or '(default)'}")


def _guard(env, nodes, board: str, always: bool) -> None:
    env.SideEffect(_probe_node(env, board), nodes)
    if always:
        env.AlwaysBuild(nodes)


# -- Flash ------------------------------------------------------------------------------

def _flash_action(target, source, env):
    from . import operations
    values = resolve(env, cli=False)
    job = operations.Job(owner=target[0].get_abspath(), token=source[1].read(),
                         project=env.Dir("#").get_abspath(),
                         options={name: values[name] for name in opts.FLASH_VARLIST})
    try:
        line = operations.flash(source[0].get_abspath(), _settings(values), probe=values["PYOCD_PROBE"],
                                base_address=values["PYOCD_BASE_ADDRESS"], job=job,
                                check=values["PYOCD_FLASH_CHECK"], say=_say)
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    with open(target[0].get_abspath(), "w") as f:
        json.dump({"image": str(source[0]), "board": records.resolved_probe(values["PYOCD_PROBE"]),
                   "result": line, "token": job.token}, f, indent=2)
        f.write("\n")
    _result(env, "FLASHCOMSTR", line)


def _flash_str(target, source, env):
    if _dry_run():
        return f"would flash {source[0]} onto {_where(resolve(env, cli=False))}"
    return None


_flash_action.strfunction = _flash_str
FLASH_ACTION = SCons.Action.Action(_flash_action, "$FLASHCOMSTR", varlist=opts.FLASH_VARLIST)
_FLASH_BUILDER = SCons.Builder.Builder(action=FLASH_ACTION, single_source=False)


def _one_image(env, source, method: str):
    nodes = env.arg2nodes(env.Flatten([source]), env.File)
    if len(nodes) != 1:
        raise SCons.Errors.UserError(
            f"env.{method}() takes exactly one image (an ELF, .bin or .hex file), got {len(nodes)}: "
            f"{', '.join(map(str, nodes)) or 'none'}. Call it once per image.")
    return nodes[0]


def _record_file(env, image, probe: str):
    """``<image>.<probe>.flashed`` beside the image when it is in this tree, else in the
    calling SConscript's directory (an image from a read-only folder outside the tree)."""
    name = f"{image.name}.{records.board_key(probe) if probe else 'default'}.flashed"
    folder = image.dir if image.is_under(env.Dir("#")) else env.Dir(".")
    return folder.File(name)


def Flash(env, source, target=None, **overrides):
    """Flash one image; return the record node, rebuilt (reflashed) only when needed.

    ``source``: the image (ELF, .bin, .hex, or a node that builds one). ``target``: the
    record file (default ``<image>.<probe>.flashed``). Keyword arguments override
    construction variables for this call, e.g. ``PYOCD_PROBE='sim-a'``.
    """
    values = resolve(env, overrides)
    image = _one_image(env, source, "Flash")
    probe, board = _board(values)
    record = env.File(target) if target is not None else _record_file(env, image, probe)
    token = (records.token(board, record.get_abspath()) if board
             else "board not known yet: PYOCD_PROBE is empty and no probe was used before")
    nodes = _FLASH_BUILDER(env, record, [image, env.Value(token)], _PYOCD_BOARD=board, **values)
    _guard(env, nodes, board, values["PYOCD_FORCE"] or values["PYOCD_FLASH_CHECK"])
    return nodes


# -- Verify and Erase -------------------------------------------------------------------

def _verify_action(target, source, env):
    from . import operations
    values = resolve(env, cli=False)
    try:
        line = operations.verify(source[0].get_abspath(), _settings(values), probe=values["PYOCD_PROBE"],
                                 base_address=values["PYOCD_BASE_ADDRESS"],
                                 job=operations.Job(project=env.Dir("#").get_abspath()), say=_say)
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    _result(env, "VERIFYCOMSTR", line)


def _verify_str(target, source, env):
    return f"would verify {source[0]} on {_where(resolve(env, cli=False))}" if _dry_run() else None


_verify_action.strfunction = _verify_str
VERIFY_ACTION = SCons.Action.Action(_verify_action, "$VERIFYCOMSTR")


def Verify(env, source, target=None, **overrides):
    """Compare the chip with an image (always runs when asked); fails at the first difference.

    Returns an alias node (default name ``pyocd-verify:<image>:<probe>``).
    """
    values = resolve(env, overrides)
    image = _one_image(env, source, "Verify")
    probe, board = _board(values)
    name = target or f"pyocd-verify:{image.path}:{probe or '(default)'}"
    nodes = env.Override(values).Alias(name, [image], VERIFY_ACTION)
    _guard(env, nodes, board, True)
    return nodes


_RANGE = re.compile(r"^\s*(\w+)\s*([-+])\s*(\w+)\s*$")


def parse_ranges(spec) -> Optional[List[Tuple[int, int]]]:
    """Erase ranges as given to ``env.Erase``: None (mass erase), ``(start, end)``, a list of
    them, or strings ``"0x08000000-0x08000800"`` (end exclusive) / ``"0x08000000+0x800"``."""
    if spec is None:
        return None
    items = [spec] if isinstance(spec, (str, tuple)) else list(spec)
    out = []
    for item in items:
        if isinstance(item, str):
            match = _RANGE.match(item)
            try:
                lo, op, hi = int(match.group(1), 0), match.group(2), int(match.group(3), 0)
            except (AttributeError, ValueError):
                raise SCons.Errors.UserError(
                    f"erase range {item!r} is not START-END or START+LENGTH (e.g. '0x08000000+0x800')") from None
            out.append((lo, lo + hi if op == "+" else hi))
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, int) for x in item):
            out.append(item)
        else:
            raise SCons.Errors.UserError(f"erase range {item!r} is not (start, end) or 'START+LENGTH'")
    for lo, hi in out:
        if not 0 <= lo < hi <= 1 << 32:
            raise SCons.Errors.UserError(f"erase range 0x{lo:X}-0x{hi:X} is empty or not 32-bit; "
                                         "the end is exclusive.")
    return out


def _erase_action(target, source, env):
    from . import operations
    values = resolve(env, cli=False)
    try:
        line = operations.erase(_settings(values), probe=values["PYOCD_PROBE"],
                                ranges=env["_PYOCD_ERASE_RANGES"],
                                job=operations.Job(project=env.Dir("#").get_abspath()), say=_say)
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    _result(env, "ERASECOMSTR", line)


def _erase_str(target, source, env):
    if not _dry_run():
        return None
    ranges = env["_PYOCD_ERASE_RANGES"]
    what = "the whole chip" if ranges is None else ", ".join(f"0x{lo:08X}-0x{hi - 1:08X}" for lo, hi in ranges)
    return f"would erase {what} on {_where(resolve(env, cli=False))}"


_erase_action.strfunction = _erase_str
ERASE_ACTION = SCons.Action.Action(_erase_action, "$ERASECOMSTR")


def Erase(env, ranges=None, target=None, **overrides):
    """Erase the chip (mass erase), or the sectors overlapping ``ranges`` (see
    :func:`parse_ranges`). Always runs when asked; returns an alias node."""
    values = resolve(env, overrides)
    parsed = parse_ranges(ranges)
    probe, board = _board(values)
    name = target or (f"pyocd-erase:{probe or '(default)'}" +
                      ("" if parsed is None else ":" + ",".join(f"{lo:x}-{hi:x}" for lo, hi in parsed)))
    nodes = env.Override(dict(values, _PYOCD_ERASE_RANGES=parsed)).Alias(name, [], ERASE_ACTION)
    _guard(env, nodes, board, True)
    return nodes


# -- "flash is up to date" and the aliases ---------------------------------------------

def _report_str(target, source, env):
    record = source[0]
    if record.get_state() == SCons.Node.executed:
        return None    # it flashed (or, under -n, would): that line was printed already
    image = record.sources[0] if record.sources else None
    if _dry_run() and image is not None and image.always_build:
        return f"flash is up to date unless a real run changes {image} (see the line above)"
    board = record.get_build_env().get("_PYOCD_BOARD", "")
    if not board:
        return "flash is up to date"
    return f"flash is up to date ({records.BoardRecord(board).describe(record.get_abspath())})"


def _report_action(target, source, env):
    return None


REPORT_ACTION = SCons.Action.Action(_report_action, strfunction=_report_str)


def FlashAliases(env, image, flash="flash", erase="erase", verify="verify", **overrides):
    """``scons flash`` (build the image if needed, then flash it if it changed), ``scons
    erase`` (mass erase) and ``scons verify``. Returns the three alias nodes."""
    record = Flash(env, image, **overrides)
    report = env.Alias(f"pyocd-report:{record[0].path}", record, REPORT_ACTION)
    env.AlwaysBuild(report)
    return (env.Alias(flash, report), env.Alias(erase, Erase(env, **overrides)),
            env.Alias(verify, Verify(env, image, **overrides)))


# -- conversions ------------------------------------------------------------------------

def _convert_action(target, source, env):
    from . import images
    values = resolve(env)
    src = source[0].get_abspath()
    base = values["PYOCD_BASE_ADDRESS"]
    try:
        from .operations import default_base_address, is_raw_binary, memory_ranges
        default_base = base is None and is_raw_binary(src)
        if default_base:
            base = default_base_address(values["PYOCD_TARGET"])
            if base is None:
                raise FlashError(f"{source[0]}: a raw binary has no addresses; set PYOCD_BASE_ADDRESS "
                                 "(e.g. 0x08000000) or PYOCD_TARGET (its flash start is used).")
        flash, ram = (memory_ranges(values["PYOCD_TARGET"]) if default_base or is_raw_binary(str(target[0]))
                      else ([], []))
        images.convert(src, target[0].get_abspath(), base, values["PYOCD_FILL"], flash, ram, default_base)
    except FlashError as exc:
        raise _failed(exc, target[0]) from None


def _convert_str(target, source, env):
    return f"convert {source[0]} -> {target[0]}"


_convert_action.strfunction = _convert_str
CONVERT_ACTION = SCons.Action.Action(_convert_action, "$CONVERTCOMSTR",
                                     varlist=["PYOCD_BASE_ADDRESS", "PYOCD_FILL", "PYOCD_TARGET"])

#: name -> Builder. ELF sources may have no suffix (NuttX's ``nuttx``), so no src_suffix there.
CONVERTERS = {
    "HexFromBin": SCons.Builder.Builder(action=CONVERT_ACTION, suffix=".hex", src_suffix=".bin",
                                        single_source=True),
    "BinFromHex": SCons.Builder.Builder(action=CONVERT_ACTION, suffix=".bin", src_suffix=".hex",
                                        single_source=True),
    "HexFromElf": SCons.Builder.Builder(action=CONVERT_ACTION, suffix=".hex", single_source=True),
    "BinFromElf": SCons.Builder.Builder(action=CONVERT_ACTION, suffix=".bin", single_source=True),
}


_CONVERT_VARS = ("PYOCD_BASE_ADDRESS", "PYOCD_FILL", "PYOCD_TARGET")


def _converter(name: str, builder):
    """``env.<name>(target, source, **overrides)``: the builder, called with the effective
    base address, fill and target (command line included) so that changing any of them,
    ``--base-address`` too, rebuilds the converted file."""
    def method(env, target=None, source=None, **overrides):
        if source is None:       # env.HexFromBin('fw.bin'): the one argument is the source
            target, source = None, target
        values = resolve(env, overrides)
        merged = dict(overrides, **{var: "" if values[var] is None else values[var]
                                     for var in _CONVERT_VARS})
        return builder(env, target, env.Flatten([source]), **merged)
    method.__name__ = name
    method.__doc__ = f"Convert an image ({name}); see docs/images.md."
    return method


# -- external builds --------------------------------------------------------------------

def _shown(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


def _external_action(target, source, env):
    cwd = env["_EXTERNAL_CHDIR"]
    if not os.path.isdir(cwd):
        raise _failed(FlashError(
            f"{cwd}: no such directory, so `{_shown(env['_EXTERNAL_COMMANDS'][0])}` cannot run there. "
            "Check the path given to env.ExternalBuild (chdir, or the targets' folder)."), target[0])
    for argv in env["_EXTERNAL_COMMANDS"]:
        shown = _shown(argv)
        sys.stdout.flush()        # the command line before the command's own output
        try:
            status = subprocess.call(argv, cwd=cwd, env=env["_EXTERNAL_ENV"])
        except OSError as exc:     # not found, not executable
            raise _failed(FlashError(
                f"cannot run `{shown}` in {cwd}: {exc.strerror or exc}. Install {argv[0]} "
                "(or put it on PATH), or give its full path in the command."), target[0]) from None
        if status != 0:
            how = (f"was killed by signal {-status}" if status < 0 else f"failed with exit status {status}")
            raise _failed(FlashError(
                f"`{shown}` {how} in {cwd}. Its output is above; run it there by hand to "
                "see the whole error. Nothing that depends on it was built or flashed."), target[0])
    missing = [str(t) for t in target if not os.path.exists(t.get_abspath())]
    if missing:
        raise _failed(FlashError(
            f"`{' && '.join(map(_shown, env['_EXTERNAL_COMMANDS']))}` in {cwd} succeeded but "
            f"did not write {', '.join(missing)}. Check that it builds the files given to "
            "env.ExternalBuild as targets (its configuration, or the names given)."), target[0])
    return None


def _external_str(target, source, env):
    commands = " && ".join(map(_shown, env["_EXTERNAL_COMMANDS"]))
    if _dry_run():
        return (f"would run {commands} in {env['_EXTERNAL_CHDIR']} (not run under -n: whether it "
                f"changes {', '.join(map(str, target))}, and so whether what depends on "
                f"{'them' if len(target) > 1 else 'it'} is rebuilt or flashed, shows in a real run)")
    return f"{commands}  (in {env['_EXTERNAL_CHDIR']})"


_external_action.strfunction = _external_str
EXTERNAL_ACTION = SCons.Action.Action(_external_action)


def _commands(command) -> List[List[str]]:
    """One argument list, or several (run in order); a string is split like a shell would,
    but no shell runs it."""
    def argv(one) -> List[str]:
        if isinstance(one, str):
            return shlex.split(one)
        out = []
        for arg in one:
            if isinstance(arg, (list, tuple)):
                raise TypeError
            out.append(arg.get_abspath() if hasattr(arg, "get_abspath") else str(arg))
        return out

    try:
        if isinstance(command, (list, tuple)) and command and isinstance(command[0], (list, tuple)):
            if not all(isinstance(one, (list, tuple)) for one in command):
                raise TypeError
            commands = [argv(one) for one in command]
        else:
            commands = [argv(command)]
    except TypeError:
        commands = []
    if not commands or not all(commands):
        raise SCons.Errors.UserError(
            f"env.ExternalBuild(): the command {command!r} is not an argument list such as "
            "['make', '-j4'], or a list of them (e.g. [['cmake', '-B', 'out'], ['cmake', '--build', 'out']]).")
    return commands


def ExternalBuild(env, target, command, chdir=None, source=None, ENV=None):
    """Run an external build (``make``, ``cmake --build``, ...) every time one of ``target``
    is needed, and let the files' content decide whether what depends on them rebuilds.

    SCons cannot see into another build system, so the command always runs and that
    build stays in charge of its own dependencies; SCons then compares the content of
    ``target`` with the last build: a run that rebuilt nothing, or rebuilt identical
    bytes, leaves dependents (``env.Flash``) up to date.

    ``target``: the file(s) the command writes, named like any SCons target (relative to
    the SConscript, or absolute). ``command``: an argument list (``['make', '-j4']``) or a
    list of them, run in order without a shell; a string is split into words, not given to
    a shell. ``chdir``: where it runs (default: the first target's folder). ``source``:
    nodes SCons must build first. ``ENV``: the command's environment (default: the one
    scons was started in, so that the toolchain on PATH is found as when typing the
    command). Not run under ``scons -n``; its outputs are never removed by ``scons -c``.
    Returns the target nodes.
    """
    targets = env.arg2nodes(env.Flatten([target]), env.File)
    if not targets:
        raise SCons.Errors.UserError("env.ExternalBuild() needs the file(s) the command writes as target.")
    commands = _commands(command)
    cwd = env.Dir(chdir).get_abspath() if chdir is not None else targets[0].dir.get_abspath()
    process_env = dict(os.environ if ENV is None else ENV)
    nodes = env.Command(targets, env.Flatten([source]) if source is not None else [], EXTERNAL_ACTION,
                        _EXTERNAL_COMMANDS=commands, _EXTERNAL_CHDIR=cwd, _EXTERNAL_ENV=process_env)
    env.AlwaysBuild(nodes)
    env.Precious(nodes)      # SCons would delete them before the command runs: make needs them
    env.NoClean(nodes)       # the other build system owns them (its own 'make clean')
    env.NoCache(nodes)
    # Two commands in one folder at once (scons -j) would trip over each other.
    env.SideEffect(env.Alias(f"external-build:{cwd}"), nodes)
    return nodes


# -- the tool ---------------------------------------------------------------------------

def generate(env) -> None:
    """Install the builders, methods and default construction variables."""
    add_command_line_options()
    for option in opts.OPTIONS:
        default = option.default
        env.SetDefault(**{option.name: dict(default) if isinstance(default, dict) else default})
    for name, builder in CONVERTERS.items():
        env.AddMethod(_converter(name, builder), name)
    for method in (Flash, Erase, Verify, FlashAliases, ExternalBuild):
        env.AddMethod(method)


def exists(env) -> bool:
    return True
