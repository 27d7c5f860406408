"""The STM32F1 flash program/erase controller (FPEC), per RM0041 and PM0063.

Registers at 0x40022000: ACR, KEYR, OPTKEYR, SR, CR, AR, OBR, WRPR. What is modeled:

- KEYR unlock sequence (0x45670123 then 0xCDEF89AB clears CR.LOCK); any other
  write to KEYR locks the FPEC out (bus error) until the next reset. While LOCK
  is set, writes to CR are ignored (except that LOCK itself stays set).
- Programming (CR.PG): a half-word write to main flash programs it. A half-word
  that is not erased (not 0xFFFF) is not programmed and sets PGERR, unless the
  value written is 0x0000. A write to a write-protected page sets WRPRTERR and
  changes nothing. Writes of another size fault (bus error), as do writes to
  flash without PG set.
- Page erase (PER, AR, STRT) and mass erase (MER, STRT); mass erase clears main
  flash, not the option bytes, and is refused (WRPRTERR) while any page is
  write-protected.
- Option bytes: OPTKEYR sets CR.OPTWRE; OPTER+STRT erases the block, OPTPG
  programs half-words at 0x1FFFF800-0x1FFFF80F (the complement byte is written
  by hardware). They take effect at the next reset (OBR/WRPR are loaded then).
  Removing read protection (programming RDP back to 0xA5) mass-erases main flash.
- BSY is set for the operation's device time (see :mod:`.timing`); EOP is set at
  the end. The times are the datasheet's whatever SYSCLK is: the FPEC times
  program and erase from the HSI.
- The HSI must be on for programming and erasing (PM0063 and RM0041, flash
  program/erase operations: "the HSI must be ON"). What a real chip does
  otherwise is not documented; users report that the operation silently does
  not take effect. The simulator does that: with HSIRDY clear, a half-word
  write under PG programs nothing and a STRT erases nothing, no flag is set
  (no BSY, no EOP, no error), and ``flash_ops_without_hsi`` counts it, so a
  verify finds the damage and a test can assert it never happened. A read of SR while busy advances the device clock to the end of the
  operation: the host would only have polled until then.

Not modeled: ACR wait states, interrupts (ERRIE/EOPIE), the half-cycle access.
"""

KEY1 = 0x45670123
KEY2 = 0xCDEF89AB
RDP_KEY = 0xA5

# Register offsets.
ACR, KEYR, OPTKEYR, SR, CR, AR, OBR, WRPR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20

# SR bits.
SR_BSY, SR_PGERR, SR_WRPRTERR, SR_EOP = 1 << 0, 1 << 2, 1 << 4, 1 << 5
# CR bits.
CR_PG, CR_PER, CR_MER, CR_OPTPG, CR_OPTER, CR_STRT, CR_LOCK = 1, 2, 4, 1 << 4, 1 << 5, 1 << 6, 1 << 7
CR_OPTWRE, CR_ERRIE, CR_EOPIE = 1 << 9, 1 << 10, 1 << 12
CR_WRITABLE = CR_PG | CR_PER | CR_MER | CR_OPTPG | CR_OPTER | CR_STRT | CR_ERRIE | CR_EOPIE

OPTION_BYTES_BASE = 0x1FFFF800


class BusFault(Exception):
    """An AHB error response: the core takes a fault, the debug port answers FAULT."""


class PowerLost(Exception):
    """Injected fault: the chip lost power in the middle of an operation."""


class FlashController:
    """The FPEC of one chip. ``chip`` supplies the flash storage, option bytes, clock and counters."""

    def __init__(self, chip):
        self.chip = chip
        self.reset()

    def reset(self):
        """System reset: lock the FPEC, clear flags, reload OBR/WRPR from the option bytes."""
        self.acr = 0x30
        self.sr = 0
        self.cr = CR_LOCK
        self.ar = 0
        self._key_stage = 0
        self._opt_key_stage = 0
        self.locked_out = False
        self.busy_until = 0.0
        ob = self.chip.option_bytes
        self.rdp_active = ob[0] != RDP_KEY
        user, data0, data1 = ob[2], ob[4], ob[6]
        self.obr = (int(self.rdp_active) << 1) | (user << 2) | (data0 << 10) | (data1 << 18)
        self.wrpr = ob[8] | (ob[10] << 8) | (ob[12] << 16) | (ob[14] << 24)

    # -- protection ----------------------------------------------------------------
    def page_protected(self, page: int) -> bool:
        if not (self.wrpr >> (page // 4)) & 1:
            return True
        # Under read protection, pages 0-3 are write-protected as well (PM0063).
        return self.rdp_active and page < 4

    # -- busy / clock --------------------------------------------------------------
    def _hsi_off(self) -> bool:
        if self.chip.rcc.hsi_ready():
            return False
        self.chip.count("flash_ops_without_hsi")
        return True

    def _start(self, duration: float) -> None:
        start = max(self.chip.now, self.busy_until)
        self.chip.now = start  # a new access stalls while the previous operation runs
        self.busy_until = start + duration
        self.sr |= SR_BSY

    def _settle(self) -> None:
        if self.sr & SR_BSY and self.chip.now >= self.busy_until:
            self.sr &= ~SR_BSY
            self.sr |= SR_EOP
            self.cr &= ~CR_STRT

    # -- register interface ------------------------------------------------------
    def read(self, offset: int) -> int:
        if offset == SR:
            if self.sr & SR_BSY and self.chip.now < self.busy_until:
                self.chip.now = self.busy_until  # skip ahead instead of spinning
            self._settle()
            return self.sr
        self._settle()
        if offset == ACR:
            return self.acr
        if offset == CR:
            return self.cr
        if offset == AR:
            return self.ar
        if offset == OBR:
            return self.obr
        if offset == WRPR:
            return self.wrpr
        return 0  # KEYR, OPTKEYR and the reserved word read as zero

    def write(self, offset: int, value: int) -> None:
        self._settle()
        if offset == ACR:
            self.acr = value & 0x3F
        elif offset == KEYR:
            self._write_key(value)
        elif offset == OPTKEYR:
            self._write_opt_key(value)
        elif offset == SR:
            self.sr &= ~(value & (SR_PGERR | SR_WRPRTERR | SR_EOP))
        elif offset == CR:
            self._write_cr(value)
        elif offset == AR:
            if not self.cr & CR_LOCK:
                self.ar = value & 0xFFFFFFFF

    def _write_key(self, value: int) -> None:
        if self.locked_out:
            raise BusFault("FPEC locked out until reset")
        if self._key_stage == 0 and value == KEY1:
            self._key_stage = 1
        elif self._key_stage == 1 and value == KEY2:
            self._key_stage = 0
            self.cr &= ~CR_LOCK
        else:
            self.locked_out = True
            self.cr |= CR_LOCK
            raise BusFault("wrong FPEC key sequence")

    def _write_opt_key(self, value: int) -> None:
        if self.cr & CR_LOCK:
            return
        if self._opt_key_stage == 0 and value == KEY1:
            self._opt_key_stage = 1
        elif self._opt_key_stage == 1 and value == KEY2:
            self._opt_key_stage = 0
            self.cr |= CR_OPTWRE
        else:
            self._opt_key_stage = 0

    def _write_cr(self, value: int) -> None:
        if self.cr & CR_LOCK:
            return
        if value & CR_LOCK:
            self.cr = (self.cr & ~CR_WRITABLE & ~CR_OPTWRE) | CR_LOCK
            return
        optwre = self.cr & CR_OPTWRE
        if not value & CR_OPTWRE:
            optwre = 0  # OPTWRE is cleared by writing 0
        self.cr = (value & CR_WRITABLE) | optwre
        if value & CR_STRT:
            if self.sr & SR_BSY:
                self.chip.now = max(self.chip.now, self.busy_until)
                self._settle()
            if self.cr & CR_PER:
                self._page_erase(self.ar)
            elif self.cr & CR_MER:
                self._mass_erase()
            elif self.cr & CR_OPTER and self.cr & CR_OPTWRE:
                self._option_erase()
            else:
                self.cr &= ~CR_STRT

    # -- operations ----------------------------------------------------------------
    def _page_erase(self, address: int) -> None:
        offset = self.chip.flash_offset(address)
        if offset is None:
            self.cr &= ~CR_STRT
            return
        page = offset // self.chip.page_size
        if self.page_protected(page):
            self.sr |= SR_WRPRTERR
            self.cr &= ~CR_STRT
            return
        if self._hsi_off():
            self.cr &= ~CR_STRT
            return
        self._start(self.chip.timing.page_erase_s)
        start = page * self.chip.page_size
        self.chip.flash[start:start + self.chip.page_size] = b"\xff" * self.chip.page_size
        self.chip.count("pages_erased")

    def _mass_erase(self) -> None:
        if self.wrpr != 0xFFFFFFFF:
            self.sr |= SR_WRPRTERR
            self.cr &= ~CR_STRT
            return
        if self._hsi_off():
            self.cr &= ~CR_STRT
            return
        self._start(self.chip.timing.mass_erase_s)
        self.chip.flash[:] = b"\xff" * len(self.chip.flash)
        self.chip.count("mass_erases")

    def _option_erase(self) -> None:
        if self._hsi_off():
            self.cr &= ~CR_STRT
            return
        self._start(self.chip.timing.page_erase_s)
        self.chip.write_option_bytes(b"\xff" * 16)

    def flash_write(self, address: int, size: int, value: int) -> None:
        """A bus write to main flash (or its alias), from the core or the debug port."""
        offset = self.chip.flash_offset(address)
        if not self.cr & CR_PG or size != 2 or offset & 1:
            raise BusFault(f"flash write at 0x{address:08x} ({size} bytes) without a half-word program")
        page = offset // self.chip.page_size
        if self.page_protected(page):
            self.sr |= SR_WRPRTERR
            return
        current = self.chip.flash[offset] | (self.chip.flash[offset + 1] << 8)
        value &= 0xFFFF
        if current != 0xFFFF and value != 0:
            self.sr |= SR_PGERR
            return
        if self._hsi_off():
            return
        self.chip.before_halfword_program()
        self._start(self.chip.timing.halfword_program_s)
        self.chip.flash[offset] = value & 0xFF
        self.chip.flash[offset + 1] = value >> 8
        self.chip.count("halfwords_programmed")

    def option_write(self, address: int, size: int, value: int) -> None:
        """A bus write into the option-byte block: programs one option byte when OPTPG is set."""
        if not (self.cr & CR_OPTPG and self.cr & CR_OPTWRE) or size != 2 or address & 1:
            raise BusFault(f"option-byte write at 0x{address:08x} without OPTPG")
        index = address - OPTION_BYTES_BASE
        ob = bytearray(self.chip.option_bytes)
        if ob[index] != 0xFF:
            self.sr |= SR_PGERR
            return
        if self._hsi_off():
            return
        self._start(self.chip.timing.halfword_program_s)
        byte = value & 0xFF
        ob[index], ob[index + 1] = byte, byte ^ 0xFF
        if index == 0 and byte == RDP_KEY and self.rdp_active:
            # Removing read protection mass-erases main flash first (PM0063).
            self.chip.flash[:] = b"\xff" * len(self.chip.flash)
            self.chip.count("mass_erases")
        self.chip.write_option_bytes(bytes(ob))
