"""``scons-pyocd``: the debug probes pyOCD sees, and the tool's board records.

Examples::

    scons-pyocd probes                      # every probe: unique id, vendor/product, board/target, record
    scons-pyocd probes remote:localhost:5555   # also a probe pyOCD only finds when named
    scons-pyocd boards                      # every board record (real and simulated boards)
    scons-pyocd boards show 066DFF485550755187121336
    scons-pyocd boards forget 066DFF485550755187121336          # the whole record
    scons-pyocd boards forget sim-a --owner /home/me/fw/fw.hex.sim-a.flashed

``scons probes`` (an alias the tool adds) prints the same as ``scons-pyocd probes``.
Forgetting a record makes the next ``scons flash`` connect and compare the chip; it
never touches the board. Errors are one line on stderr and exit status 2.
"""

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import paths, records, remote
from .errors import FlashError


# -- board records ------------------------------------------------------------------------

def record_ids() -> List[str]:
    """Probe ids of every board record in the state directory."""
    folder = paths.state_dir("records")
    ids = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "resolved-probes.json":
            continue
        try:
            data = json.loads(records.read_private(path) or b"{}")
        except (FlashError, ValueError):
            data = {}
        probe = data.get("probe") if isinstance(data, dict) else None
        ids.append(probe if isinstance(probe, str) and probe else path.stem)
    return ids


def _record_summary(record: records.BoardRecord) -> str:
    entries = record.entries
    if not entries and record.chip is None:
        return "no"
    valid = sum(1 for e in entries if e.get("valid"))
    return f"yes: {len(entries)} image{'s' if len(entries) != 1 else ''} ({valid} valid)"


def _record_of(probe_id: str) -> Optional[records.BoardRecord]:
    """The board record of ``probe_id``, None when there is none (not parsed then)."""
    return records.BoardRecord(probe_id) if records.record_path(probe_id).exists() else None


def _existing_record(probe_id: str) -> records.BoardRecord:
    """The board record of ``probe_id``; FlashError when there is none."""
    record = _record_of(probe_id)
    if record is None:
        raise _no_record(probe_id)
    return record


def _no_record(probe_id: str) -> FlashError:
    return FlashError(f"no board record for probe {probe_id} (in {paths.state_dir('records')}). "
                      "scons-pyocd boards lists the records there.")


def boards_text() -> str:
    """One line per board record: probe id, chip, images recorded, when last seen."""
    ids = record_ids()
    if not ids:
        return (f"no board records (in {paths.state_dir('records')}); scons flash writes one per "
                "probe it flashes through.")
    rows = [("probe", "target", "chip unique id", "images", "chip last seen")]
    for probe in ids:
        record = records.BoardRecord(probe)
        chip = record.chip or {}
        entries = record.entries
        valid = sum(1 for e in entries if e.get("valid"))
        rows.append((probe, str(chip.get("target") or "?"), str(chip.get("unique_id") or "?"),
                     f"{len(entries)} ({valid} valid)", str(chip.get("seen") or "?")))
    return _table(rows)


def show_text(probe_id: str) -> str:
    """Everything a board record says, for people."""
    record = _existing_record(probe_id)
    chip = record.chip or {}
    lines = [f"board record {record.path}",
             f"  probe {probe_id}; chip {chip.get('target', '?')} unique id {chip.get('unique_id') or '?'}, "
             f"last seen {chip.get('seen', '?')}"]
    if not record.entries:
        lines.append("  no images recorded")
    for entry in record.entries:
        pages = sorted(int(k, 16) for k in entry.get("pages", {}))
        span = (f"{len(pages)} page{'s' if len(pages) != 1 else ''} from 0x{pages[0]:08X}" if pages else "no pages")
        if entry.get("valid"):
            state = f"valid, flashed {entry.get('time', '?')}"
        else:
            why = entry.get("invalidated", {})
            state = f"INVALID: {why.get('reason', '?')} ({why.get('time', '?')})"
        lines.append(f"  {entry.get('image') or '?'}: {state}")
        lines.append(f"      owner {entry['owner']}")
        lines.append(f"      {span}; image {str(entry.get('image_sha256', '?'))[:12]}; "
                     f"project {entry.get('project', '?')}; by {entry.get('user', '?')}@{entry.get('host', '?')}")
        options = entry.get("options") or {}
        if options:
            lines.append("      " + ", ".join(f"{k}={v}" for k, v in sorted(options.items()) if v not in (None, "", {})))
    return "\n".join(lines)


def forget(probe_id: str, owner: Optional[str] = None, say=print) -> str:
    """Drop a board record (or one owner's entry) under the probe lock; return the line to print."""
    if not records.record_path(probe_id).exists():
        raise _no_record(probe_id)
    with records.probe_lock(probe_id, on_wait=say):
        record = records.BoardRecord(probe_id)
        if owner is not None and record.entry(owner) is None:
            raise FlashError(f"the board record of probe {probe_id} has no entry for {owner}; "
                             f"scons-pyocd boards show {probe_id} lists its owners.")
        count = record.forget(owner)
        if owner is None:
            record.path.unlink()
    what = f"the entry of {owner}" if owner else f"the board record ({count} image{'s' if count != 1 else ''})"
    return f"forgot {what} of probe {probe_id}: the next scons flash there connects and compares the chip."


# -- probes -------------------------------------------------------------------------------

def probe_rows(extra: Sequence[str] = (), simulated: Optional[bool] = None) -> List[Dict[str, Any]]:
    """Every probe pyOCD sees (and each of ``extra``, ids such as ``remote:host:port`` that pyOCD
    only finds when named): unique id, vendor, product, associated board and target, and
    whether a board record exists. Simulated boards are listed when the simulator is
    installed (``simulated`` None) or when ``simulated``."""
    from . import session, sim_plugin
    if simulated is None:
        simulated = sim_plugin.simulator_installed()
    session._pyocd(simulated=simulated)
    from pyocd.probe.aggregator import DebugProbeAggregator
    with session.translate("(any)", "listing probes"):
        probes = list(DebugProbeAggregator.get_all_connected_probes())
        if simulated and sim_plugin.simulator_installed():     # hidden from pyOCD's own enumeration
            seen = {p.unique_id for p in probes}
            probes += [p for p in DebugProbeAggregator.get_all_connected_probes("sim:") if p.unique_id not in seen]
    if not simulated:      # SCONS_PYOCD_SIM_LIST=1 may have listed them anyway
        probes = [p for p in probes if not sim_plugin.is_simulated(str(getattr(p, "unique_id", "")))]
    served_rows = []
    for wanted in extra:
        if remote.is_remote(wanted):       # pyOCD's remote probe knows nothing until opened: ask
            served_rows.append(_served_row(wanted))
            continue
        session._pyocd(wanted)
        with session.translate(wanted, "looking for the probe"):
            found = DebugProbeAggregator.get_probe_with_id(wanted)
        if found is None:
            raise FlashError(f"no probe answers to {wanted}; check the address (pyocd-server running? "
                             "remote:HOST:PORT) or the unique id.")
        probes.append(found)
    rows = []
    for probe in probes:
        row = {"unique_id": str(getattr(probe, "unique_id", "?"))}
        for key in ("vendor_name", "product_name"):
            try:
                row[key] = str(getattr(probe, key))
            except Exception as exc:       # a probe that cannot say is listed as such
                row[key] = f"? ({exc})"
        try:
            info = probe.associated_board_info
        except Exception:
            info = None
        row["board"] = getattr(info, "name", "") or ""
        row["target"] = getattr(info, "target", "") or ""
        record = _record_of(row["unique_id"])
        row["record"] = _record_summary(record) if record is not None else "no"
        rows.append(row)
    rows += served_rows
    rows.sort(key=lambda r: r["unique_id"])
    return rows


def _served_row(wanted: str) -> Dict[str, Any]:
    """The row of a ``remote:``/``labgrid:`` probe: what its server serves (asked as a flash
    asks it, without opening the probe; FlashError when the server cannot be asked), keyed
    by the served probe's unique id, as its board record is."""
    served = remote.lookup(wanted)
    record = _record_of(served.probe_id)
    return {"unique_id": served.probe_id, "address": str(served.address), "place": served.place,
            "via": served.via, "vendor_name": "pyocd server", "product_name": served.description or "?",
            "board": served.board_name, "target": served.target,
            "record": _record_summary(record) if record is not None else "no"}


def probes_text(extra: Sequence[str] = (), simulated: Optional[bool] = None) -> str:
    from . import usb_access
    rows = probe_rows(extra, simulated)
    notes = "".join(f"\nnote: {problem}." for problem in usb_access.problems())
    if not rows:
        return ("no debug probe found. Plug the probe in (on Linux, install the udev rules: "
                "docs/real-hardware.md); pyOCD sees none." + notes)
    table = [("unique id", "vendor / product", "board / target", "board record")]
    for r in rows:
        table.append((r.get("via", r["unique_id"]), f"{r['vendor_name']} / {r['product_name']}",
                      f"{r['board'] or '-'} / {r['target'] or '-'}", r["record"]))
    return _table(table) + notes


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# -- main ---------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="scons-pyocd", description="Debug probes and board records of scons-pyocd.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probes", help="every debug probe pyOCD sees, with its board/target and board record")
    p.add_argument("extra", nargs="*", metavar="ID", help="also look for these (e.g. remote:localhost:5555)")
    p.add_argument("--json", action="store_true", help="one JSON list")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--sim", dest="simulated", action="store_true", default=None,
                       help="list simulated boards (default: when the simulator is installed)")
    group.add_argument("--no-sim", dest="simulated", action="store_false", help="no simulated boards")
    p = sub.add_parser("boards", help="the board records: list, show PROBE, forget PROBE")
    p.add_argument("action", nargs="?", default="list", choices=("list", "show", "forget"))
    p.add_argument("probe", nargs="?", help="probe unique id (show, forget)")
    p.add_argument("--owner", help="forget only this entry (a flash node's path, as 'show' lists)")
    p.add_argument("--json", action="store_true", help="the raw record (show)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "probes":
            if args.json:
                print(json.dumps(probe_rows(args.extra, args.simulated), indent=2))
            else:
                print(probes_text(args.extra, args.simulated))
            return 0
        if args.action != "list" and not args.probe:
            parser.error(f"boards {args.action} needs the probe's unique id")
        if args.action == "list":
            print(boards_text())
        elif args.action == "show":
            if args.json:
                print(json.dumps(_existing_record(args.probe).data, indent=2, sort_keys=True))
            else:
                print(show_text(args.probe))
        else:
            print(forget(args.probe, args.owner))
        return 0
    except FlashError as exc:
        print(f"scons-pyocd: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
