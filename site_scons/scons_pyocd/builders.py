"""SCons glue: the Flash, Erase and Verify builders, the conversion builders, the aliases.

No pyOCD here, and nothing imported at SConscript time that imports it: the
actions import :mod:`.operations` when they run, so a build that flashes
nothing (a no-op ``scons flash`` included) never loads pyOCD.

When a flash happens. ``env.Flash(image)`` is a builder whose target, the file
``<image>.<probe>.flashed`` in the build tree, stands for "this image on that
board". The node is built every time it is asked for (``AlwaysBuild``), never
cached (``NoCache``), and not part of the default targets (``scons`` or ``scons .``
flash nothing unless ``Default()`` says so). Its action decides, in this build and
after whatever ran before it on the same board (an erase, another image's flash),
from the board record (:mod:`.records`) and the image file alone: up to date, or
connect and flash. It decides again under the probe lock before writing. So an
erase, another tree's flash, a lost state directory or a cache can never make it
say "up to date" over a chip that holds something else.

Operations on one board in one build run one at a time (a ``SideEffect`` per
probe) and, for the aliases of :func:`FlashAliases`, in the order the command
line names them (``scons erase flash`` erases, then flashes).
"""

import json
import os
import shlex
import subprocess
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Node
import SCons.Node.Alias
import SCons.Script

from . import command_line
from . import interrupt
from . import options as opts
from . import records
from .errors import FlashError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


# -- where the user's SConstruct called us ------------------------------------------------

def _ours(filename: str) -> bool:
    path = os.path.abspath(filename)
    return (path.startswith(_PACKAGE_DIR + os.sep)
            or (os.path.basename(os.path.dirname(path)) == "site_tools"
                and os.path.basename(path) in ("pyocd_tool.py", "pyocd.py")))


def _user_frame():
    """The frame of the SConstruct or SConscript line that called into the tool: SCons's own
    rule for locating an error (the innermost frame outside SCons), skipping the tool's
    frames too. None when there is none (an action running at build time)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (_ours(name) or f"{os.sep}SCons{os.sep}" in name or name.startswith("<")):
            return frame
        frame = frame.f_back
    return None


def user_error(message: str) -> SCons.Errors.UserError:
    """A UserError that SCons reports at the user's SConstruct line.

    SCons prints ``scons: *** <message>`` and the file and line of the innermost
    traceback frame outside SCons, which would be this tool's. The error carries a
    traceback that ends at the user's frame (:func:`_user_frame`), so that frame is
    the innermost: ``File "/home/me/fw/SConstruct", line 7, in <module>``.
    """
    error = SCons.Errors.UserError(message)
    frame = _user_frame()
    if frame is not None:
        error = error.with_traceback(types.TracebackType(None, frame, frame.f_lasti, frame.f_lineno))
    return error


def warn(message: str) -> None:
    """A warning as SCons prints its own (``scons: warning: ...`` and the user's file and line)."""
    frame = _user_frame()
    where = (f'File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}\n'
             if frame is not None else "")
    sys.stderr.write(f"\nscons: warning: {message}\n{where}")
    sys.stderr.flush()


_WARNED: set = set()


def _check_names(env, overrides: Dict[str, Any]) -> None:
    """Warn, once per name, about ``PYOCD_*`` variables the tool does not know (a typo is
    otherwise ignored without a word), naming the closest known one."""
    try:
        names = [k for k in env.Dictionary() if k.startswith("PYOCD_")]
    except Exception:       # not an SCons environment (a plain dict in a test)
        names = []
    names += [k for k in overrides if isinstance(k, str)]
    for name, closest in opts.unknown_variables(names):
        if name in _WARNED:
            continue
        _WARNED.add(name)
        hint = f"did you mean {closest}?" if closest else "scons -h lists the tool's variables."
        warn(f"{name} is not a variable of scons-pyocd and is ignored; {hint}")


# -- options ----------------------------------------------------------------------------

def add_command_line_options() -> None:
    """Declare the table's command-line options and the tool's ``scons -h`` text, once a process."""
    command_line.declare()
    command_line.add_help(_help_facts)


def resolve(env, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Effective option values: command line, then per-call overrides, then ``env``.

    A bad value is a UserError naming the variable, at SConscript-reading time, reported
    at the SConstruct line that led here. Unknown ``PYOCD_*`` variables are warned about.
    """
    overrides = overrides or {}
    _check_names(env, overrides)

    def get(name):
        return overrides[name] if name in overrides else env.get(name)

    try:
        values = opts.resolve(get, command_line.value)
    except FlashError as exc:
        raise user_error(str(exc)) from None
    values["PYOCD_OPTIONS"] = dict(sorted(values["PYOCD_OPTIONS"].items()))
    return values


# -- scons -h ---------------------------------------------------------------------------

#: Every environment the tool was loaded into, and every FlashAliases call
#: ``(env, overrides, image, flash, erase, verify, board_erase)``: what ``scons -h`` describes.
_ENVIRONMENTS: List[Any] = []
_ALIASES: List[Tuple[Any, Dict[str, Any], Any, str, Optional[str], Optional[str], Optional[str]]] = []


def _help_facts() -> opts.HelpFacts:
    """What ``scons -h`` says about this project, as the SConscripts left it (called when SCons
    prints the help)."""
    defaults: Dict[str, List[str]] = {}
    uses = [(env, overrides) for env, overrides, *_ in _ALIASES] or [(env, {}) for env in _ENVIRONMENTS]
    targets: Dict[str, List[str]] = {}
    for env, overrides, image, flash, erase, verify, board_erase in _ALIASES:
        try:
            values = opts.resolve(lambda name: overrides[name] if name in overrides else env.get(name))
        except FlashError:
            continue
        where = _where(values)
        nodes = env.arg2nodes(env.Flatten([image]), env.File)
        name = str(nodes[0]) if nodes else "?"
        targets.setdefault(flash, []).append(f"flash {name} onto {where} unless the board holds it")
        if verify:
            targets.setdefault(verify, []).append(f"compare {name} with the chip on {where}")
        if board_erase:
            targets.setdefault(board_erase, []).append(f"mass erase {where}")
        if erase and erase != board_erase:
            targets.setdefault(erase, []).append(f"erase the pages of {name} on {where}")
    targets.setdefault("probes", []).append("list the debug probes pyOCD sees and the tool's board records")
    for env, overrides in uses:
        for option in opts.OPTIONS:
            raw = overrides[option.name] if option.name in overrides else env.get(option.name)
            try:
                text = opts.shown(option, option.convert(option.default if raw is None else raw))
            except FlashError:
                text = repr(raw)
            if text not in defaults.setdefault(option.name, []):
                defaults[option.name].append(text)
    for name, texts in defaults.items():
        if len(texts) > 1:
            defaults[name] = [", ".join(texts) + " (per environment or call)"]
    return opts.HelpFacts(
        defaults=defaults, taken=command_line.taken(),
        flags={o.name: command_line.spellings(o.name) for o in opts.OPTIONS if o.flag},
        targets=[(name, "; ".join(dict.fromkeys(whats))) for name, whats in targets.items()])


def _settings(values: Dict[str, Any], label: str = ""):
    """The pyOCD layer's settings, with a progress reporter labelled ``label`` (``scons -s``
    or ``PYOCD_PROGRESS='none'``: none; with ``--pyocd-debug``, lines rather than a bar, so
    they do not fight pyOCD's log)."""
    from .progress import Progress, view_for
    from .session import Settings
    mode = values["PYOCD_PROGRESS"]
    if SCons.Script.GetOption("silent"):
        mode = "none"
    elif values["PYOCD_DEBUG"] and mode == "auto":
        mode = "lines"
    return Settings(target=values["PYOCD_TARGET"], frequency=values["PYOCD_FREQUENCY"],
                    connect=values["PYOCD_CONNECT"], reset=values["PYOCD_RESET"],
                    erase=values["PYOCD_ERASE"], verify=values["PYOCD_VERIFY"],
                    options=values["PYOCD_OPTIONS"], debug=values["PYOCD_DEBUG"],
                    should_stop=interrupt.requested,
                    progress=Progress(view_for(mode, label), should_stop=interrupt.requested))


def _say(line: str) -> None:
    print(line, flush=True)


def _dry_run() -> bool:
    return bool(SCons.Script.GetOption("no_exec"))


def _result(env, comstr: str, line: str) -> None:
    """The action's one line, unless the user's *COMSTR replaced it or scons -s silenced it."""
    if not SCons.Script.GetOption("silent") and not env.get(comstr):
        _say(line)


def _explainer(node):
    """Under ``--debug=explain``, a function printing why ``node``'s operation runs (or, given
    None, why it does not), as SCons prints why it rebuilds a file; None otherwise."""
    if "explain" not in (SCons.Script.GetOption("debug") or []):
        return None
    return lambda why: _say(f"scons: flashing `{node}' because {why}" if why else
                            f"scons: not flashing `{node}': the board record says the board holds "
                            "this image, flashed with these options")


def _failed(exc: FlashError, node) -> SCons.Errors.BuildError:
    return SCons.Errors.BuildError(node=node, errstr=str(exc), exitstatus=2)


def _where(values: Dict[str, Any]) -> str:
    return (f"{values['PYOCD_TARGET'] or 'the probe target'} via "
            f"{values['PYOCD_PROBE'] or 'the only probe attached'}")


def _probe_key(values: Dict[str, Any]) -> str:
    """The probe part of default target names: the configured id as a file name."""
    probe = values["PYOCD_PROBE"]
    return records.board_key(probe) if probe else "default"


def _job(env, target, values: Dict[str, Any]):
    from .operations import Job
    return Job(owner=target[0].get_abspath(), project=env.Dir("#").get_abspath(),
               options={name: values[name] for name in opts.FLASH_VARLIST})


def _one_image(source, builder: str) -> None:
    if len(source) != 1:
        raise user_error(
            f"env.{builder}() takes exactly one image (an ELF, .bin or .hex file), got {len(source)}: "
            f"{', '.join(map(str, source)) or 'none'}. Call it once per image.")


def _guard(env, nodes, values: Dict[str, Any]) -> None:
    """Every tool target: run when asked, never from a cache, one at a time per probe."""
    env.AlwaysBuild(nodes)
    env.NoCache(nodes)
    board = records.resolved_probe(values["PYOCD_PROBE"]) or "(default)"
    env.SideEffect(env.Alias(f"pyocd-probe:{board}"), nodes)


# -- Flash ------------------------------------------------------------------------------

def _flash_action(target, source, env):
    from . import operations
    values = resolve(env)
    maps: List[str] = []
    try:
        line = operations.flash(source[0].get_abspath(), _settings(values, f"flash {source[0]}"),
                                probe=values["PYOCD_PROBE"], base_address=values["PYOCD_BASE_ADDRESS"],
                                job=_job(env, target, values), check=values["PYOCD_FLASH_CHECK"],
                                force=values["PYOCD_FORCE"], say=_say, explain=_explainer(target[0]),
                                name=str(source[0]),
                                page_map=maps.append if values["PYOCD_PAGE_MAP"] or values["PYOCD_DEBUG"] else None)
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    with open(target[0].get_abspath(), "w") as f:
        json.dump({"image": str(source[0]), "probe": values["PYOCD_PROBE"], "result": line}, f, indent=2)
        f.write("\n")
    _result(env, "FLASHCOMSTR", line)
    for text in maps:
        _result(env, "FLASHCOMSTR", text)


def _flash_str(target, source, env):
    """Under ``scons -n``: what a real run would do, from the board record; with
    ``--pyocd-debug``, the flash plan as far as it is known without the chip."""
    if not _dry_run():
        return None
    values = resolve(env)
    line = _would_flash(target, source, env, values)
    if values["PYOCD_DEBUG"] and line.startswith("would flash") and source[0].exists():
        from . import operations, session
        try:
            image = operations.load_early(source[0].get_abspath(), values["PYOCD_BASE_ADDRESS"],
                                                values["PYOCD_TARGET"])
            plan = session.preview(image, _settings(values)) if image is not None else None
        except FlashError as exc:
            plan = f"(no plan: {exc})"
        if plan:
            line += "\n" + plan
    return line


def _would_flash(target, source, env, values) -> str:
    from . import operations
    job = _job(env, target, values)
    if values["PYOCD_FORCE"] or values["PYOCD_FLASH_CHECK"]:
        how = "--force-flash" if values["PYOCD_FORCE"] else "--flash-check: the chip is compared first"
        return f"would flash {source[0]} onto {_where(values)} ({how})"
    image = source[0]
    rebuilt = image.get_state() == SCons.Node.executed     # "built" by this dry run
    if rebuilt and not image.always_build:
        return f"would flash {image} onto {_where(values)} (it is rebuilt first)"
    try:
        served, job, _ = operations.remote_board(values["PYOCD_PROBE"], job)     # the server asked once
        why, line = operations.decide(image.get_abspath(), values["PYOCD_PROBE"], values["PYOCD_BASE_ADDRESS"],
                                      job, str(image), served)
        if why is None:
            if rebuilt:     # an external build: whether it changes the image shows in a real run
                return f"flash is up to date unless a real run changes {image} (see the line above)"
            return line
    except FlashError as exc:      # a probe server that cannot be asked
        return f"would flash {image} onto {_where(values)} (cannot tell whether it is up to date: {exc})"
    return f"would flash {image} onto {_where(values)} (board record says: {why})"


_flash_action.strfunction = _flash_str
FLASHCOM = SCons.Action.Action(_flash_action, "$FLASHCOMSTR", varlist=opts.FLASH_VARLIST)


def _image_suffix(kind: str):
    def suffix(env, sources) -> str:
        return f"{sources[0].suffix if sources else ''}.{_probe_key(resolve(env))}.{kind}"
    return suffix


def _flash_emitter(target, source, env):
    """One image; the record file beside it (or, for an image outside the tree, in the
    calling SConscript's folder); never a default target, never cached."""
    _one_image(source, "Flash")
    values = resolve(env)
    record = target[0]
    if not record.is_under(env.Dir("#")):
        record = env.Dir(".").File(record.name)
    _guard(env, [record], values)
    folder = record.dir
    while folder is not None and folder.is_under(env.Dir("#")):
        env.Ignore(folder, record)      # `scons`, `scons .`, `scons build` do not flash
        folder = folder.up() if folder != env.Dir("#") else None
    return [record], source


FLASH_BUILDER = SCons.Builder.Builder(action=SCons.Action.Action("$FLASHCOM", "$FLASHCOMSTR"),
                                      emitter=_flash_emitter, suffix=_image_suffix("flashed"))


# -- Verify and Erase -------------------------------------------------------------------

def _alias_emitter(kind: str):
    """Verify and Erase targets are aliases that run an action: ``<image>.<probe>.verify``,
    ``<image>.<probe>.erase``, or for an erase without an image ``pyocd-erase:<probe>``
    (mass erase) / ``pyocd-erase:<probe>:<ranges>``, unless a target is given."""
    def emitter(target, source, env):
        values = resolve(env)
        if kind == "Verify" or len(source) > 1:
            _one_image(source, kind)
        if target:
            name = str(target[0])
        else:
            ranges = values["PYOCD_ERASE_RANGES"]
            name = f"pyocd-erase:{_probe_key(values)}" + (
                "" if ranges is None else ":" + ",".join(f"{lo:x}-{hi:x}" for lo, hi in ranges))
        node = SCons.Node.Alias.default_ans.Alias(name)
        node.convert()       # an alias that runs an action, as env.Alias(name, [], action) makes
        _guard(env, [node], values)
        return [node], source
    return emitter


def _verify_action(target, source, env):
    from . import operations
    values = resolve(env)
    try:
        line = operations.verify(source[0].get_abspath(), _settings(values, f"verify {source[0]}"),
                                 probe=values["PYOCD_PROBE"], base_address=values["PYOCD_BASE_ADDRESS"],
                                 job=_job(env, target, values), say=_say, name=str(source[0]))
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    _result(env, "VERIFYCOMSTR", line)


def _verify_str(target, source, env):
    return f"would verify {source[0]} on {_where(resolve(env))}" if _dry_run() else None


_verify_action.strfunction = _verify_str
VERIFYCOM = SCons.Action.Action(_verify_action, "$VERIFYCOMSTR")
VERIFY_BUILDER = SCons.Builder.Builder(action=SCons.Action.Action("$VERIFYCOM", "$VERIFYCOMSTR"),
                                       target_factory=SCons.Node.Alias.default_ans.Alias,
                                       emitter=_alias_emitter("Verify"), suffix=_image_suffix("verify"))


def _erase_action(target, source, env):
    from . import operations
    values = resolve(env)
    try:
        line = operations.erase(_settings(values, f"erase {source[0]}" if source else "erase"),
                                probe=values["PYOCD_PROBE"], ranges=values["PYOCD_ERASE_RANGES"],
                                job=_job(env, target, values), say=_say,
                                image_path=source[0].get_abspath() if source else None,
                                base_address=values["PYOCD_BASE_ADDRESS"])
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    _result(env, "ERASECOMSTR", line)


def _erase_str(target, source, env):
    if not _dry_run():
        return None
    ranges = resolve(env)["PYOCD_ERASE_RANGES"]
    if source:
        what = f"the pages of {source[0]}"
    elif ranges is None:
        what = "the whole chip (mass erase)"
    else:
        what = "the pages of " + ", ".join(f"0x{lo:08X}-0x{hi - 1:08X}" for lo, hi in ranges)
    return f"would erase {what} on {_where(resolve(env))}"


_erase_action.strfunction = _erase_str
ERASECOM = SCons.Action.Action(_erase_action, "$ERASECOMSTR")
ERASE_BUILDER = SCons.Builder.Builder(action=SCons.Action.Action("$ERASECOM", "$ERASECOMSTR"),
                                      target_factory=SCons.Node.Alias.default_ans.Alias,
                                      emitter=_alias_emitter("Erase"),
                                      suffix=_image_suffix("erase"))


# -- the aliases, in command-line order ------------------------------------------------

#: Board (resolved probe id) -> the mass-erase node of this build (one per board).
_MASS_ERASE: Dict[str, Any] = {}
#: Board -> [(position on the command line, node)] of the tool's nodes asked for there.
_ASKED: Dict[str, List[Tuple[int, Any]]] = {}


def _position(names: Sequence[str]) -> Optional[int]:
    asked = list(SCons.Script.COMMAND_LINE_TARGETS)
    found = [asked.index(name) for name in names if name in asked]
    return min(found) if found else None


def _in_command_line_order(env, board: str, node, names: Sequence[str]) -> None:
    """When the command line names this node's alias and others of the same board, run them
    in the order it names them (``Requires``: an order, not a rebuild reason)."""
    position = _position(names)
    if position is None:
        return
    for other_position, other in _ASKED.setdefault(board, []):
        if other is node:
            return
        if other_position < position:
            env.Requires(node, other)
        elif other_position > position:
            env.Requires(other, node)
    _ASKED[board].append((position, node))


def _same_flash_twice(image, values: Dict[str, Any], overrides: Dict[str, Any]) -> SCons.Errors.UserError:
    """Two FlashAliases calls make one flash node (one image, one board) with different settings,
    which SCons refuses ('Two environments with different actions ...', at the tool's line).
    The usual cause: a command-line option, typically --probe, replacing what each call gives."""
    name = image[0] if isinstance(image, (list, tuple)) and image else image
    replaced = [o for o in opts.OPTIONS if o.flag and o.name in overrides and command_line.value(o.dest) is not None]
    if replaced:
        given = ", ".join(f"{o.flag} replaces the {o.name}={overrides[o.name]!r} this call gives" for o in replaced)
        why = (f"On the command line, {given}, so two calls now flash {name} onto {values['PYOCD_PROBE']} "
               f"with different settings. Flash one board through its own alias (the flash= name of its "
               f"FlashAliases call) without {replaced[0].flag}, or leave {replaced[0].name} out of the calls.")
    else:
        why = ("Give each call its own image or board (PYOCD_PROBE), or the same settings, or one call "
               "with several alias names (env.Alias).")
    return user_error(f"{name} is flashed onto {values['PYOCD_PROBE'] or 'the default probe'} by two "
                      f"FlashAliases calls with different settings, and SCons builds one target one way. {why}")


def FlashAliases(env, image, flash="flash", erase="erase", verify="verify", board_erase="erase",
                 **overrides):
    """``scons flash`` (build the image if needed, then flash it unless the board holds it),
    ``scons verify`` (compare the chip with it) and the erase aliases. Returns the
    (flash, erase, verify) alias nodes.

    ``board_erase`` names the board's mass erase (one node per board per build, shared by
    every call; None: none). ``erase`` names this image's erase: the board's mass erase
    when it is the same name (the default), otherwise an erase of this image's bytes only
    (its pages erased, other data in them written back). The command line's order is kept: ``scons erase flash`` erases, then
    flashes; ``scons flash verify`` flashes, then verifies.
    """
    values = resolve(env, overrides)
    board = records.resolved_probe(values["PYOCD_PROBE"]) or "(default)"
    _ALIASES.append((env, dict(overrides), image, flash, erase, verify, board_erase))
    try:
        record = env.Flash(image, **overrides)
    except SCons.Errors.UserError as exc:
        if "Two environments with different actions" not in str(exc):
            raise
        raise _same_flash_twice(image, values, overrides) from None
    _in_command_line_order(env, board, record[0], [flash, str(record[0])])
    checked = env.Verify(image, **overrides)
    _in_command_line_order(env, board, checked[0], [verify, str(checked[0])])
    erase_nodes = []
    if board_erase:
        if board not in _MASS_ERASE:
            _MASS_ERASE[board] = env.Erase(**overrides)[0]
        mass = _MASS_ERASE[board]
        env.Alias(board_erase, mass)
        _in_command_line_order(env, board, mass, [board_erase, str(mass)])
        if erase == board_erase:
            erase_nodes = [mass]
    if not erase_nodes and erase:
        erase_nodes = env.Erase(source=image, **overrides)
        _in_command_line_order(env, board, erase_nodes[0], [erase, str(erase_nodes[0])])
    return (env.Alias(flash, record), env.Alias(erase, erase_nodes) if erase else None,
            env.Alias(verify, checked))


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
        raise user_error(
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
        raise user_error("env.ExternalBuild() needs the file(s) the command writes as target.")
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

BUILDERS = {"Flash": FLASH_BUILDER, "Erase": ERASE_BUILDER, "Verify": VERIFY_BUILDER}


def _probes_action(target, source, env):
    from . import cli
    try:
        text = cli.probes_text(extra=[p for p in [resolve(env)["PYOCD_PROBE"]] if ":" in p])
    except FlashError as exc:
        raise _failed(exc, target[0]) from None
    _say(text)


def _probes_str(target, source, env):
    return "would list the debug probes" if _dry_run() else None


_probes_action.strfunction = _probes_str
_probes_added = False


def _add_probes_alias(env) -> None:
    """``scons probes``: once per process, in the first environment with the tool."""
    global _probes_added
    if _probes_added:
        return
    _probes_added = True
    node = env.Alias("probes", [], SCons.Action.Action(_probes_action))
    env.AlwaysBuild(node)


def generate(env) -> None:
    """Install the builders, methods and default construction variables, the command-line
    options, the ``scons -h`` block and the ``probes`` alias."""
    add_command_line_options()
    _ENVIRONMENTS.append(env)
    _add_probes_alias(env)
    for option in opts.OPTIONS:
        default = option.default
        env.SetDefault(**{option.name: dict(default) if isinstance(default, dict) else default})
    env.SetDefault(FLASHCOM=FLASHCOM, ERASECOM=ERASECOM, VERIFYCOM=VERIFYCOM)
    for name, builder in BUILDERS.items():
        if name not in env["BUILDERS"]:     # a project's own builder of that name wins
            env["BUILDERS"][name] = builder
    for name, builder in CONVERTERS.items():
        env.AddMethod(_converter(name, builder), name)
    for method in (FlashAliases, ExternalBuild):
        env.AddMethod(method)


def exists(env) -> bool:
    return True
