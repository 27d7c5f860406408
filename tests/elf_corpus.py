"""A corpus of Cortex-M linker layouts, built with the real Arm GNU toolchain, and what
``arm-none-eabi-objcopy`` makes of each: the reference for :mod:`scons_pyocd.images`' ELF reader.

Each :class:`Case` is one small program (C, or C++ with a constructor and unwind tables)
linked with one linker script and one set of flags. :func:`build` writes, per case, the
ELF and objcopy's ``-O ihex`` and ``-O binary`` (gaps as 0x00, objcopy's default, and
with ``--gap-fill 0xff``). A case ``stripped`` of its section table is made by zeroing
``e_shoff``/``e_shnum``/``e_shstrndx`` of the linked ELF (no binutils tool writes such a
file, and objcopy refuses to read one: its references are those of the unstripped ELF).
"""

import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

FLASH, SRAM = 0x08000000, 0x20000000

APP_C = r"""
#include <stdint.h>
extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);
void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    main();
    for (;;) {}
}
void Default_Handler(void) { for (;;) {} }
typedef void (*handler)(void);
__attribute__((section(".isr_vector"), used))
const handler vectors[16] = {(handler)&_estack, Reset_Handler, Default_Handler, Default_Handler,
                             Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0,
                             Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};
const char banner[] = "scons-pyocd layout corpus";
volatile uint32_t counter = 0x12345678;
uint32_t table[8] = {0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x17, 0x28};
uint32_t zeroed[4];
#ifdef AFTER
__attribute__((section(".after"), used)) const uint32_t after[8] = {1, 2, 3, 4, 5, 6, 7, 8};
#endif
#ifdef RAMFUNC
__attribute__((section(".ramfunc"), noinline)) void ramfunc(void) { counter += 3; }
#endif
int main(void) {
    for (;;) {
        counter++;
        zeroed[counter & 3] += table[counter & 7] + (uint8_t)banner[counter % sizeof banner];
#ifdef RAMFUNC
        ramfunc();
#endif
    }
}
"""

APP_CXX = r"""
#include <stdint.h>
extern "C" {
extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
typedef void (*handler)(void);
extern handler __init_array_start[], __init_array_end[];
void Reset_Handler(void);
void Default_Handler(void) { for (;;) {} }
}
int main();
void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    for (handler *init = __init_array_start; init < __init_array_end; ++init) (*init)();
    main();
    for (;;) {}
}
__attribute__((section(".isr_vector"), used))
const handler vectors[16] = {(handler)&_estack, Reset_Handler, Default_Handler, Default_Handler,
                             Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0,
                             Default_Handler, Default_Handler, 0, Default_Handler, Default_Handler};
struct Counter {
    volatile uint32_t value;
    explicit Counter(uint32_t seed) : value(seed * 3u + 1u) {}
    void tick() { value = value + 1u; }
};
// CPUID is read at run time, so this needs a constructor: an .init_array entry.
static Counter counter(*reinterpret_cast<volatile uint32_t *>(0xE000ED00u));
uint32_t table[8] = {0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x17, 0x28};
int main() {
    for (;;) { counter.tick(); table[counter.value & 7] ^= counter.value; }
}
"""

#: The parts of a linker script; a case swaps some of them.
MEMORY = """MEMORY
{{
    FLASH (rx)  : ORIGIN = 0x{origin:08X}, LENGTH = 0x{length:X}
    RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 8K{extra_memory}
}}
"""
HEAD = """ENTRY(Reset_Handler)
_estack = ORIGIN(RAM) + LENGTH(RAM);
"""
VECTORS = "    .isr_vector : { KEEP(*(.isr_vector)) } > FLASH\n"
TEXT = """    .text : { *(.text .text.*) *(.rodata .rodata.*) KEEP(*(.init)) KEEP(*(.fini)) . = ALIGN(4); } > FLASH
    .ARM.exidx : { __exidx_start = .; *(.ARM.exidx* .gnu.linkonce.armexidx.*) __exidx_end = .; } > FLASH
    .init_array : {
        __init_array_start = .;
        KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array))
        __init_array_end = .;
    } > FLASH
"""
DATA = """    .data : { _sdata = .; *(.data .data.*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
    _sidata = LOADADDR(.data);
"""
BSS = """    .bss (NOLOAD) : { _sbss = .; *(.bss .bss.* COMMON) . = ALIGN(4); _ebss = .; } > RAM
    __bss_start__ = _sbss; __bss_end__ = _ebss; end = _ebss;
"""

#: Flags every case gets: a Cortex-M3 (the STM32F100RB's core), debug info (as real builds have).
CFLAGS = ("-mcpu=cortex-m3", "-mthumb", "-O1", "-g")
#: "Default" linking: the toolchain's start files and newlib-nano with stubs for system calls.
LIBS = ("--specs=nano.specs", "--specs=nosys.specs")


def script(origin: int = FLASH, length: int = 0x20000, extra_memory: str = "", before: str = "",
           text: str = TEXT, after_text: str = "", data: str = DATA, bss: str = BSS, phdrs: str = "") -> str:
    """A linker script in the usual shape (vectors, code, .data in SRAM loaded after the code,
    .bss), with ``before`` placed ahead of the vector table and ``after_text`` after the code."""
    length -= origin - FLASH
    return (MEMORY.format(origin=origin, length=length, extra_memory=extra_memory) + HEAD + phdrs
            + "SECTIONS\n{\n" + before + VECTORS + text + after_text + data + bss + "}\n")


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    linker_script: str
    flags: Tuple[str, ...] = LIBS
    cxx: bool = False
    defines: Tuple[str, ...] = ()
    strip_sections: bool = False
    #: objcopy -O binary would write this many bytes or more: not made, not compared.
    huge_binary: bool = False


def _origin(origin: int, flags: Tuple[str, ...] = LIBS, what: str = "") -> Case:
    return Case(f"origin-0x{origin:08X}", what or f"default flags, FLASH at 0x{origin:08X}",
                script(origin), flags)


NO_SEGMENT_PHDRS = "PHDRS { text PT_LOAD; data PT_LOAD; }\n"

CASES = [
    _origin(0x08000000),
    _origin(0x08000400),
    _origin(0x08000800, what="the founding case: default flags after a 2 KiB bootloader"),
    _origin(0x08000A00),
    _origin(0x08001000),
    Case("max-page-64k-0x08001000", "-z max-page-size=0x10000 at a 4 KiB-aligned origin",
         script(0x08001000), LIBS + ("-Wl,-z,max-page-size=0x10000",)),
    Case("max-page-64k-0x08010000", "-z max-page-size=0x10000 at a 64 KiB-aligned origin",
         script(0x08010000), LIBS + ("-Wl,-z,max-page-size=0x10000",)),
    Case("nmagic-0x08000800", "-n (no page alignment of segments)", script(0x08000800),
         LIBS + ("-Wl,-n",)),
    Case("data-at-fixed-lma", ".data loaded at a fixed address 16 KiB into flash (LMA != VMA, with a gap)",
         script(0x08000800, data=DATA.replace(".data :", ".data : AT(0x08004000)").replace(" AT > FLASH", ""))),
    Case("noload-between", "a 1 KiB NOLOAD section in flash between the code and a loaded section",
         script(0x08000800, after_text="    .reserved (NOLOAD) : { . += 0x400; } > FLASH\n"
                                       "    .after : { KEEP(*(.after)) } > FLASH\n"),
         defines=("AFTER",)),
    Case("noload-first", "a 2 KiB NOLOAD section reserving the bootloader's flash ahead of the vectors",
         script(0x08000000, before="    .bootloader (NOLOAD) : { . += 0x800; } > FLASH\n")),
    Case("two-regions", "two flash MEMORY regions with a 32 KiB gap; a section in the second",
         script(0x08000000, length=0x8000, extra_memory="\n    FLASH2 (rx) : ORIGIN = 0x08010000, LENGTH = 32K",
                after_text="    .after : { KEEP(*(.after)) } > FLASH2\n"),
         defines=("AFTER",)),
    Case("nostartfiles", "-nostartfiles (no crt0, crti, crtbegin)", script(0x08000800),
         ("-nostartfiles",) + LIBS),
    Case("nostdlib", "-nostdlib (no start files, no libc, no libgcc)", script(0x08000800), ("-nostdlib",)),
    Case("cxx", "C++: a global constructor (.init_array) and unwind tables (.ARM.exidx)",
         script(0x08000800), LIBS, cxx=True),
    Case("section-in-no-segment", "an allocated section put in no segment (PHDRS, :NONE)",
         script(0x08000000, phdrs=NO_SEGMENT_PHDRS,
                text=TEXT.replace(" > FLASH\n", " > FLASH :text\n"),
                after_text="    .after : { KEEP(*(.after)) } > FLASH :NONE\n",
                data=DATA.replace("AT > FLASH", "AT > FLASH :data"), bss=BSS.replace("> RAM", "> RAM :data")),
         ("-nostdlib",), defines=("AFTER",), huge_binary=True),
    Case("stripped-0x08000000", "origin-0x08000000 without its section table", script(0x08000000),
         strip_sections=True),
    Case("stripped-0x08000800", "origin-0x08000800 without its section table", script(0x08000800),
         strip_sections=True),
    Case("ramfunc-in-sram", "a function section placed in SRAM without AT> FLASH (load address in SRAM)",
         script(0x08000000, after_text="    .ramfunc : { *(.ramfunc) } > RAM\n"),
         defines=("RAMFUNC",), huge_binary=True),
]

BY_NAME = {case.name: case for case in CASES}


@dataclass
class Built:
    case: Case
    elf: Path
    #: objcopy's outputs (of the unstripped ELF for a stripped case); None when not made.
    hex: Path
    bin_zero: Optional[Path] = None
    bin_ff: Optional[Path] = None
    objcopy_stderr: Dict[str, str] = field(default_factory=dict)


def _run(argv, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")
    return result


def strip_section_table(elf: bytes) -> bytes:
    """The ELF with e_shoff, e_shnum and e_shstrndx zeroed (32-bit little-endian)."""
    out = bytearray(elf)
    struct.pack_into("<I", out, 0x20, 0)              # e_shoff
    struct.pack_into("<HHH", out, 0x2E, 0, 0, 0)       # e_shentsize, e_shnum, e_shstrndx
    return bytes(out)


def build(case: Case, directory: Path) -> Built:
    """Compile and link ``case`` in ``directory``; run objcopy on the result."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / ("app.cpp" if case.cxx else "app.c")
    source.write_text(APP_CXX if case.cxx else APP_C)
    (directory / "link.ld").write_text(case.linker_script)
    linked = directory / "linked.elf"
    # gcc (not g++) links C++ too: the program needs no libstdc++, which Debian ships apart.
    _run(["arm-none-eabi-gcc", *CFLAGS, *case.flags, *(f"-D{d}" for d in case.defines), "-T", "link.ld",
          source.name, "-o", linked.name], directory)
    built = Built(case, linked, directory / "objcopy.hex")
    built.objcopy_stderr["ihex"] = _run(["arm-none-eabi-objcopy", "-O", "ihex", linked, built.hex],
                                        directory).stderr
    if not case.huge_binary:
        built.bin_zero, built.bin_ff = directory / "objcopy.bin", directory / "objcopy-ff.bin"
        built.objcopy_stderr["binary"] = _run(["arm-none-eabi-objcopy", "-O", "binary", linked,
                                               built.bin_zero], directory).stderr
        _run(["arm-none-eabi-objcopy", "-O", "binary", "--gap-fill", "0xff", linked, built.bin_ff], directory)
    if case.strip_sections:
        built.elf = directory / "stripped.elf"
        built.elf.write_bytes(strip_section_table(linked.read_bytes()))
    else:
        built.elf = directory / "app.elf"
        shutil.copyfile(linked, built.elf)
    return built


def build_all(directory: Path) -> Dict[str, Built]:
    return {case.name: build(case, directory / case.name) for case in CASES}


if __name__ == "__main__":      # python tests/elf_corpus.py DIR: build the corpus there, to look at
    import sys
    for name, built in build_all(Path(sys.argv[1])).items():
        print(name, built.elf)
