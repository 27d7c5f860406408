"""``scons-pyocd-sim`` (or ``python -m scons_pyocd.sim``): look at and alter simulated boards.

A simulated board exists only once created; every other command needs an existing
board and fails (exit status 2, the boards that exist listed) on an unknown id.

Examples::

    scons-pyocd-sim create sim-mine                              # erased, with its own random unique id
    scons-pyocd-sim create sim-mine --unique-id 0123456789abcdef01234567
    scons-pyocd-sim list
    scons-pyocd-sim show sim-vldiscovery
    scons-pyocd-sim counters sim-vldiscovery --reset
    scons-pyocd-sim fault sim-vldiscovery power_loss_after_halfwords 3000
    scons-pyocd-sim fault sim-vldiscovery --clear
    scons-pyocd-sim protect sim-vldiscovery --write 0-7      # or --read, or --none
    scons-pyocd-sim identity sim-vldiscovery stm32f103re       # a wrong chip
    scons-pyocd-sim dump sim-vldiscovery flash.bin
    scons-pyocd-sim poke sim-vldiscovery 0x08000100 de ad       # alter flash behind the tool's back
    scons-pyocd-sim factory sim-vldiscovery                     # erased, unprotected, no faults (same unique id)
    scons-pyocd-sim factory sim-vldiscovery --new-unique-id     # ... and another chip's unique id
    scons-pyocd-sim run sim-vldiscovery --instructions 5000000  # boot the firmware, show the LEDs
    scons-pyocd-sim serve sim-a sim-b        # one `pyocd server` per board on 127.0.0.1 (a farm, docs/farm.md)
"""

import argparse
import json
import sys

from ..errors import FlashError
from .board import BoardState, FAULTS, FLASH_BASE, FLASH_SIZE, KNOWN_IDENTITIES, PAGE_SIZE, list_boards


def _pages(spec: str):
    pages = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        pages.extend(range(int(lo, 0), int(hi or lo, 0) + 1))
    return pages


def _show(board: BoardState) -> dict:
    flash = board.read_flash()
    used = [i for i in range(FLASH_SIZE // PAGE_SIZE) if flash[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] != b"\xff" * PAGE_SIZE]
    ob = board.read_option_bytes()
    ident = board.identity()
    return {
        "board": board.board_id,
        "directory": str(board.path),
        "identity": {k: (hex(v) if isinstance(v, int) and k != "flash_kb" else v) for k, v in ident.items()},
        "flash_pages_programmed": len(used),
        "read_protected": ob[0] != 0xA5,
        "write_protected_groups": [g for g in range(32) if not (ob[8 + 2 * (g // 8)] >> (g % 8)) & 1],
        "faults": board.faults(),
        "counters": board.counters(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scons-pyocd-sim", description="Inspect and alter simulated STM32VLDiscovery boards.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="boards that exist")
    p = sub.add_parser("create", help="create a board: erased, unprotected, its own random 96-bit unique id")
    p.add_argument("board")
    p.add_argument("--unique-id", metavar="HEX", help="the chip's unique id instead (24 hex digits)")
    p.add_argument("--exist-ok", action="store_true", help="an existing board is not an error (left as it is)")
    for name, help_text in (("show", "identity, flash use, protection, faults, counters"),
                            ("erase", "erase main flash (behind the debugger's back)")):
        sub.add_parser(name, help=help_text).add_argument("board")
    p = sub.add_parser("factory", help="erased flash, default identity (keeping its unique id), no protection, "
                                       "faults or counters")
    p.add_argument("board")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--new-unique-id", action="store_true", help="give it a new random unique id (another chip)")
    g.add_argument("--unique-id", metavar="HEX", help="give it this unique id (24 hex digits)")
    p = sub.add_parser("counters", help="print (and optionally reset) the board's counters")
    p.add_argument("board")
    p.add_argument("--reset", action="store_true")
    p = sub.add_parser("fault", help="inject a fault: " + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()))
    p.add_argument("board")
    p.add_argument("name", nargs="?", choices=sorted(FAULTS))
    p.add_argument("value", nargs="?", type=int)
    p.add_argument("--clear", action="store_true", help="remove all injected faults")
    p = sub.add_parser("protect", help="set write or read protection in the option bytes")
    p.add_argument("board")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="PAGES", help="pages to write-protect, e.g. 0-7,64")
    g.add_argument("--read", action="store_true", help="read-protect the chip (RDP != 0xA5)")
    g.add_argument("--none", action="store_true", help="remove read and write protection")
    p = sub.add_parser("identity", help="make the chip report another identity")
    p.add_argument("board")
    p.add_argument("name", choices=sorted(KNOWN_IDENTITIES))
    p = sub.add_parser("dump", help="write main flash (128 KiB) to a file")
    p.add_argument("board")
    p.add_argument("file")
    p = sub.add_parser("poke", help="write bytes into flash behind the debugger's back")
    p.add_argument("board")
    p.add_argument("address", type=lambda s: int(s, 0))
    p.add_argument("bytes", nargs="+", help="hex bytes")
    p = sub.add_parser("run", help="boot the firmware in flash for a bounded time and print LED changes")
    p.add_argument("board")
    p.add_argument("--instructions", type=int, default=5_000_000, help="instruction budget (default 5,000,000)")
    p.add_argument("--leds", type=int, default=None, help="stop after this many LED changes")
    p = sub.add_parser("serve", help="serve boards as a farm: one `pyocd server` per board on 127.0.0.1, "
                                     "any free port; prints 'NAME remote:127.0.0.1:PORT pid PID' per board")
    p.add_argument("boards", nargs="+", metavar="board")
    p.add_argument("--detach", action="store_true",
                   help="return once they listen; stop each server with 'kill PID' (default: until Ctrl-C)")
    args = parser.parse_args(argv)

    if args.cmd == "serve":
        from .serve import serve_forever
        return serve_forever(args.boards, args.detach)
    if args.cmd == "list":
        for board_id in list_boards():
            print(board_id)
        return 0
    try:
        if args.cmd == "create":
            board = BoardState.create(args.board, unique_id=args.unique_id, exist_ok=args.exist_ok)
            print(f"{board.board_id}: {board.path} (unique id {board.identity()['unique_id']})")
            return 0
        board = BoardState(args.board)
    except (FlashError, ValueError) as err:
        print(f"scons-pyocd-sim: error: {err}", file=sys.stderr)
        return 2
    if args.cmd == "show":
        print(json.dumps(_show(board), indent=2))
    elif args.cmd == "factory":
        try:
            board.restore_factory("new" if args.new_unique_id else args.unique_id)
        except ValueError as err:
            parser.error(str(err))
    elif args.cmd == "erase":
        board.erase_flash()
    elif args.cmd == "counters":
        print(json.dumps(board.counters(), indent=2, sort_keys=True))
        if args.reset:
            board.reset_counters()
    elif args.cmd == "fault":
        if args.clear:
            board.clear_faults()
        elif args.name is None or args.value is None:
            print(json.dumps(board.faults(), indent=2))
        else:
            board.set_fault(args.name, args.value)
    elif args.cmd == "protect":
        if args.none:
            board.set_read_protection(False)
            board.set_write_protection(())
        elif args.read:
            board.set_read_protection(True)
        else:
            board.set_write_protection(_pages(args.write))
    elif args.cmd == "identity":
        board.set_identity(args.name)
    elif args.cmd == "dump":
        with open(args.file, "wb") as f:
            f.write(board.read_flash())
    elif args.cmd == "run":
        from .firmware import run_firmware
        print(run_firmware(args.board, args.instructions, args.leds).describe())
    elif args.cmd == "poke":
        data = bytes.fromhex("".join(args.bytes))
        if not FLASH_BASE <= args.address <= args.address + len(data) <= FLASH_BASE + FLASH_SIZE:
            parser.error("address range is outside main flash (0x08000000-0x0801FFFF)")
        board.write_flash(args.address, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
