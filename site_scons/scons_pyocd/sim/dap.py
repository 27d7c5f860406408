"""The simulated chip's debug access port: an ADIv5 SW-DP and the Cortex-M3's AHB-AP.

This is the level at which pyOCD talks to CMSIS-DAP probes, so everything above
it (DP power-up, AP discovery, ROM table walk, MEM-AP transfers, core debug,
flash algorithms) is pyOCD's own code running unmodified.

SW-DP (DPv1): DPIDR (read 0x0), ABORT (write 0x0), CTRL/STAT (0x4, DPBANKSEL 0),
DLCR (0x4, DPBANKSEL 1), SELECT (write 0x8), RDBUFF (read 0xC). Power-up
requests are acknowledged at once. A faulting memory access sets STICKYERR;
until ABORT clears it, every AP access answers FAULT, as ADIv5 specifies.

AHB-AP (APSEL 0; IDR 0x24770011): CSW (8/16/32-bit sizes, single
auto-increment; packed increment is not implemented, as on the Cortex-M3),
TAR, DRW with byte lanes, BD0-BD3, CFG, BASE (the ROM table at 0xE00FF000).
TAR auto-increments within a 4 KiB block, as on the Cortex-M3. Other APSEL values have no AP (IDR 0).
"""

from .fpec import BusFault

# DP registers.
DP_IDR_ABORT, DP_CTRL_STAT, DP_SELECT, DP_RDBUFF = 0x0, 0x4, 0x8, 0xC
CSYSPWRUPACK, CSYSPWRUPREQ, CDBGPWRUPACK, CDBGPWRUPREQ = 1 << 31, 1 << 30, 1 << 29, 1 << 28
STICKYORUN, STICKYCMP, STICKYERR, WDATAERR = 1 << 1, 1 << 4, 1 << 5, 1 << 7
ABORT_STKCMPCLR, ABORT_STKERRCLR, ABORT_WDERRCLR, ABORT_ORUNERRCLR = 1 << 1, 1 << 2, 1 << 3, 1 << 4

# MEM-AP registers.
CSW, TAR, DRW, BD0, CFG, BASE, IDR = 0x00, 0x04, 0x0C, 0x10, 0xF4, 0xF8, 0xFC
AHB_AP_IDR = 0x24770011
CSW_SIZE_MASK, CSW_ADDRINC_MASK = 0x7, 0x30
CSW_DEVICEEN = 1 << 6
CSW_WRITABLE = 0xFF000000 | CSW_ADDRINC_MASK | CSW_SIZE_MASK
CSW_RESET = 0x23000040 | 0x2  # HPROT data+privileged, DeviceEn, 32-bit
AUTO_INCREMENT_BLOCK = 0x1000  # the Cortex-M3 AHB-AP wraps TAR within 4 KiB


class DapFault(Exception):
    """The DP answered FAULT (sticky error set)."""


class DebugPort:
    """The SW-DP and AHB-AP of one chip."""

    def __init__(self, chip):
        self.chip = chip
        self.ctrl_stat = 0
        self.select = 0
        self.csw = CSW_RESET
        self.tar = 0

    # -- DP ---------------------------------------------------------------------------
    def read_dp(self, addr: int) -> int:
        if addr == DP_IDR_ABORT:
            return self.chip.identity["dpidr"]
        if addr == DP_CTRL_STAT:
            if self.select & 0xF:
                return 0  # DLCR
            return self.ctrl_stat
        if addr == DP_RDBUFF:
            return 0
        return 0  # SELECT is write-only; reads as zero here

    def write_dp(self, addr: int, value: int) -> None:
        if addr == DP_IDR_ABORT:
            clear = 0
            if value & ABORT_STKERRCLR:
                clear |= STICKYERR
            if value & ABORT_STKCMPCLR:
                clear |= STICKYCMP
            if value & ABORT_WDERRCLR:
                clear |= WDATAERR
            if value & ABORT_ORUNERRCLR:
                clear |= STICKYORUN
            self.ctrl_stat &= ~clear
        elif addr == DP_CTRL_STAT:
            if self.select & 0xF:
                return
            sticky = self.ctrl_stat & (STICKYERR | STICKYCMP | STICKYORUN | WDATAERR)
            value &= ~(STICKYERR | STICKYCMP | STICKYORUN | WDATAERR | CSYSPWRUPACK | CDBGPWRUPACK)
            if value & CSYSPWRUPREQ:
                value |= CSYSPWRUPACK
            if value & CDBGPWRUPREQ:
                value |= CDBGPWRUPACK
            self.ctrl_stat = value | sticky
        elif addr == DP_SELECT:
            self.select = value & 0xFFFFFFFF

    # -- AP ---------------------------------------------------------------------------
    def _ap_register(self, addr: int):
        apsel = self.select >> 24
        return apsel, (self.select & 0xF0) | (addr & 0x0C)

    def read_ap(self, addr: int) -> int:
        apsel, reg = self._ap_register(addr)
        if self.ctrl_stat & STICKYERR:
            raise DapFault("sticky error set")
        if apsel != 0:
            return 0
        if reg == CSW:
            return self.csw | CSW_DEVICEEN
        if reg == TAR:
            return self.tar
        if reg == DRW:
            return self._memory(self.tar, write=False)
        if BD0 <= reg < BD0 + 16:
            return self._memory((self.tar & ~0xF) + (reg - BD0), write=False, banked=True)
        if reg == CFG:
            return 0
        if reg == BASE:
            return 0xE00FF003
        if reg == IDR:
            return AHB_AP_IDR
        return 0

    def write_ap(self, addr: int, value: int) -> None:
        apsel, reg = self._ap_register(addr)
        if self.ctrl_stat & STICKYERR:
            raise DapFault("sticky error set")
        if apsel != 0:
            return
        if reg == CSW:
            size = value & CSW_SIZE_MASK
            if size > 2:
                size = self.csw & CSW_SIZE_MASK  # unsupported sizes read back as the old size
            inc = value & CSW_ADDRINC_MASK
            if inc == 0x20:
                inc = 0x10  # packed increment unsupported
            self.csw = (value & 0xFF000000) | inc | size
        elif reg == TAR:
            self.tar = value & 0xFFFFFFFF
        elif reg == DRW:
            self._memory(self.tar, write=True, value=value)
        elif BD0 <= reg < BD0 + 16:
            self._memory((self.tar & ~0xF) + (reg - BD0), write=True, value=value, banked=True)

    def _memory(self, address: int, write: bool, value: int = 0, banked: bool = False) -> int:
        size = 4 if banked else 1 << (self.csw & CSW_SIZE_MASK)
        lane = (address & 3) * 8 if size < 4 else 0
        try:
            if write:
                self.chip.bus_write(address, size, value >> lane, debug=True)
                result = 0
            else:
                result = (self.chip.bus_read(address, size, debug=True) << lane) & 0xFFFFFFFF
        except BusFault as err:
            self.ctrl_stat |= STICKYERR
            raise DapFault(str(err)) from None
        finally:
            if not banked and self.csw & CSW_ADDRINC_MASK:
                self.tar = (self.tar & ~(AUTO_INCREMENT_BLOCK - 1)) | ((self.tar + size) & (AUTO_INCREMENT_BLOCK - 1))
        return result
