"""Conversion benchmark (issue 6, scenario 5 and the conversion half of 7).

bin -> hex, hex -> bin and ELF -> hex of a 128 KiB and a 2 MiB image (random bytes
at 0x08000000), each by ``scons_pyocd.images.convert`` and by plain intelhex doing
the same job, file to file:

- bin -> hex: ``IntelHex.loadbin(offset=0x08000000)`` + ``write_hex_file``;
- hex -> bin: ``IntelHex.loadhex`` + ``tobinfile``;
- ELF -> hex: pyelftools' PT_LOAD segments at their load address + ``IntelHex.frombytes``
  (what ``loadbin`` uses) + ``write_hex_file``.

The ELF is written here with ``struct`` (no toolchain needed): ARM, executable, a
``.text`` segment and a ``.data`` segment stored after it in flash but run from RAM,
plus a ``.bss`` segment with no file data, and section headers for the three as a
linker writes them: ours reads the sections at their load addresses (objcopy's rule),
the peer the segments' ``p_paddr``; both must skip ``.bss``. Its bytes at their load
addresses are the raw binary's, so all ELF -> hex outputs must equal the bin -> hex ones.

Outputs of ours and intelhex are compared byte for byte before anything is timed.
Times are medians of N runs, ours and intelhex alternating. Peak memory (2 MiB
image): each conversion runs once in a fresh Python process, which reports its peak
resident set (``VmHWM`` in /proc/self/status) after the imports and again after the
conversion. Not ``ru_maxrss``: on Linux a process inherits its parent's peak across
fork/spawn and exec (measured here: a child of a 300 MiB parent reports 300 MiB in
RUSAGE_SELF before doing anything), and RUSAGE_CHILDREN is the largest peak of all
children so far, so either would show this benchmark's own size, not the
conversion's. Not tracemalloc: it sees only Python's allocator, and tracking
intelhex's one-dict-entry-per-byte store slows it several times and costs memory
itself. Without /proc (macOS), ``ru_maxrss`` is reported instead and says so.

Goal (issue 6): conversions at least as fast as intelhex's, in every case.
"""

import json
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import ROOT, synthetic_image, verdict, write_results

BASE = 0x08000000
RAM = 0x20000000
DATA_SIZE = 4096          # the .data segment's share of the image
SIZES = (128 * 1024, 2 * 1024 * 1024)
MEMORY_SIZE = 2 * 1024 * 1024
CASES = ("bin->hex", "hex->bin", "elf->hex")
SOURCE = {"bin->hex": "bin", "hex->bin": "hex", "elf->hex": "elf"}
TARGET = {"bin->hex": "hex", "hex->bin": "bin", "elf->hex": "hex"}


def arm_elf(data: bytes, data_size: int = DATA_SIZE) -> bytes:
    """A minimal ARM executable whose loadable bytes are ``data`` at 0x08000000.

    Program headers: ``.text`` (all but the last ``data_size`` bytes) at 0x08000000;
    ``.data`` run at 0x20000000 but loaded right after ``.text``; ``.bss`` in RAM with
    no file data. Section headers for the three and ``.shstrtab``, as a linker writes
    them (scons_pyocd reads the sections; an ELF without them is read by its segments).
    """
    text, rw = data[:-data_size], data[-data_size:]
    align = 0x1000
    phnum = 3
    text_off = align
    data_off = -(-(text_off + len(text)) // align) * align
    names = b"\0.text\0.data\0.bss\0.shstrtab\0"
    names_off = data_off + len(rw)
    shoff = -(-(names_off + len(names)) // 4) * 4
    ehdr = struct.pack("<4sBBBBB7sHHIIIIIHHHHHH",
                       b"\x7fELF", 1, 1, 1, 0, 0, bytes(7),       # ELFCLASS32, little-endian, v1
                       2, 40, 1,                                   # ET_EXEC, EM_ARM, EV_CURRENT
                       BASE | 1, 52, shoff, 0x05000200,            # entry (Thumb), phoff, shoff, EABI5
                       52, 32, phnum, 40, 5, 4)                    # ..., 5 sections, .shstrtab is 4
    phdrs = b"".join(struct.pack("<8I", *ph) for ph in (
        # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
        (1, text_off, BASE, BASE, len(text), len(text), 5, align),                       # R X
        (1, data_off, RAM, BASE + len(text), len(rw), len(rw), 6, align),                # R W
        (1, data_off + len(rw), RAM + len(rw), RAM + len(rw), 0, 0x400, 6, align),       # .bss
    ))
    shdrs = bytes(40) + b"".join(struct.pack("<10I", *sh) for sh in (
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize
        (1, 1, 6, BASE, text_off, len(text), 0, 0, 4, 0),                  # .text: PROGBITS, AX
        (7, 1, 3, RAM, data_off, len(rw), 0, 0, 4, 0),                     # .data: PROGBITS, WA
        (13, 8, 3, RAM + len(rw), data_off + len(rw), 0x400, 0, 0, 4, 0),  # .bss: NOBITS, WA
        (18, 3, 0, 0, names_off, len(names), 0, 0, 1, 0),                  # .shstrtab: STRTAB
    ))
    head = ehdr + phdrs
    return (head + bytes(text_off - len(head)) + text + bytes(data_off - text_off - len(text)) + rw
            + names + bytes(shoff - names_off - len(names)) + shdrs)


# --- the two implementations, file to file ----------------------------------------------

def ours(case: str, src: str, dst: str) -> None:
    from scons_pyocd.images import convert
    convert(src, dst, base_address=BASE if case == "bin->hex" else None)


def intelhex(case: str, src: str, dst: str) -> None:
    from intelhex import IntelHex
    ih = IntelHex()
    if case == "bin->hex":
        ih.loadbin(src, offset=BASE)
    elif case == "hex->bin":
        ih.loadhex(src)
    else:
        from elftools.elf.elffile import ELFFile
        with open(src, "rb") as f:
            for segment in ELFFile(f).iter_segments():
                if segment["p_type"] == "PT_LOAD" and segment["p_filesz"]:
                    ih.frombytes(segment.data(), offset=segment["p_paddr"])
    if TARGET[case] == "hex":
        ih.write_hex_file(dst)
    else:
        ih.tobinfile(dst)


IMPLEMENTATIONS = {"ours": ours, "intelhex": intelhex}


# --- measuring ---------------------------------------------------------------------------

def _inputs(folder: Path, size: int) -> dict:
    """Write the image as .bin, .hex and .elf; return the paths and the expected outputs."""
    from scons_pyocd.images import Image, hex_bytes
    data = synthetic_image(size, seed=size)
    paths = {fmt: folder / f"image_{size}.{fmt}" for fmt in ("bin", "hex", "elf")}
    paths["bin"].write_bytes(data)
    hex_text = hex_bytes(Image([(BASE, data)]))
    paths["hex"].write_bytes(hex_text)
    paths["elf"].write_bytes(arm_elf(data))
    return {"paths": paths, "expected": {"hex": hex_text, "bin": data}}


def _check(case: str, size: int, inputs: dict, folder: Path) -> None:
    """Both implementations must write the expected bytes; this also warms the caches."""
    expected = inputs["expected"][TARGET[case]]
    for name, convert in IMPLEMENTATIONS.items():
        dst = folder / f"check_{name}.{TARGET[case]}"
        convert(case, str(inputs["paths"][SOURCE[case]]), str(dst))
        if dst.read_bytes() != expected:
            raise AssertionError(f"{case}, {size} bytes: {name}'s output differs from the expected "
                                 f"{TARGET[case]} file")


def _time(case: str, src: Path, folder: Path, runs: int) -> dict:
    samples = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(runs):
        for name, convert in IMPLEMENTATIONS.items():
            dst = str(folder / f"timed_{name}.{TARGET[case]}")
            start = time.perf_counter()
            convert(case, str(src), dst)
            samples[name].append(time.perf_counter() - start)
    return samples


def _peak_rss(impl: str, case: str, src: Path, dst: Path) -> dict:
    """Run one conversion in a fresh process; its peak RSS before and after, in KiB."""
    out = subprocess.run([sys.executable, "-m", "bench.conversions", "--peak-rss", impl, case,
                          str(src), str(dst)], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def _high_water_kib() -> tuple:
    """The process's peak resident set in KiB, and how it was read."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    scale = 1024 if sys.platform == "darwin" else 1   # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // scale, "ru_maxrss"


def _child(impl: str, case: str, src: str, dst: str) -> None:
    # Import everything either implementation may need first, so the baselines are alike.
    import elftools.elf.elffile  # noqa: F401
    import intelhex as _  # noqa: F401
    import scons_pyocd.images  # noqa: F401
    before, how = _high_water_kib()
    IMPLEMENTATIONS[impl](case, src, dst)
    after, _ = _high_water_kib()
    print(json.dumps({"baseline_kib": before, "peak_kib": after, "method": how}))


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def main(quick: bool = False) -> dict:
    from importlib.metadata import version
    runs = 3 if quick else 7
    rows, memory = [], []
    with tempfile.TemporaryDirectory(prefix="scons-pyocd-bench-conv-") as tmp:
        folder = Path(tmp)
        for size in SIZES:
            inputs = _inputs(folder, size)
            for case in CASES:
                _check(case, size, inputs, folder)
                samples = _time(case, inputs["paths"][SOURCE[case]], folder, runs)
                ours_s, peer_s = (statistics.median(samples[name]) for name in ("ours", "intelhex"))
                rows.append({"case": case, "bytes": size, "runs": runs,
                             "ours_s": round(ours_s, 5), "intelhex_s": round(peer_s, 5),
                             "speedup": round(peer_s / ours_s, 2),
                             "samples_s": {k: [round(v, 5) for v in vs] for k, vs in samples.items()}})
                if size == MEMORY_SIZE:
                    peaks = {impl: _peak_rss(impl, case, inputs["paths"][SOURCE[case]],
                                             folder / f"mem_{impl}.{TARGET[case]}")
                             for impl in IMPLEMENTATIONS}
                    memory.append({"case": case, "bytes": size,
                                   **{f"{impl}_{k}": v for impl, peak in peaks.items()
                                      for k, v in peak.items()}})

    print(f"Conversions, file to file, random data at 0x{BASE:08X}; median of {runs} runs; "
          f"intelhex {version('intelhex')}, pyelftools {version('pyelftools')}")
    print(f"{'case':10} {'size':>8} {'ours s':>9} {'intelhex s':>11} {'speed-up':>9}")
    for r in rows:
        print(f"{r['case']:10} {_size(r['bytes']):>8} {r['ours_s']:9.4f} {r['intelhex_s']:11.4f} "
              f"{r['speedup']:8.1f}x")
    method = memory[0]["ours_method"] if memory else "VmHWM"
    print(f"Peak memory, {_size(MEMORY_SIZE)} image: peak RSS ({method}) of a fresh process per "
          "conversion, and (+conv) its growth over the same process after its imports")
    print(f"{'case':10} {'ours MiB':>9} {'(+conv)':>8} {'intelhex MiB':>13} {'(+conv)':>8} {'ratio':>6}")
    for m in memory:
        grow = {impl: m[f"{impl}_peak_kib"] - m[f"{impl}_baseline_kib"] for impl in IMPLEMENTATIONS}
        m["ours_growth_kib"], m["intelhex_growth_kib"] = grow["ours"], grow["intelhex"]
        print(f"{m['case']:10} {m['ours_peak_kib'] / 1024:9.1f} {grow['ours'] / 1024:+8.1f} "
              f"{m['intelhex_peak_kib'] / 1024:13.1f} {grow['intelhex'] / 1024:+8.1f} "
              f"{m['intelhex_peak_kib'] / m['ours_peak_kib']:5.1f}x")
    goals = {"conversions >= intelhex's speed (every case)": all(r["speedup"] >= 1.0 for r in rows)}
    for goal, met in goals.items():
        print(f"goal: {goal}: {verdict(met)}")
    results = {"runs": runs, "quick": quick, "base_address": BASE, "rows": rows,
               "peak_memory": {"method": f"peak RSS ({method}) of a fresh process per conversion",
                               "rows": memory},
               "goals": goals}
    write_results("conversions", results)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peak-rss"]:
        _child(*sys.argv[2:6])
    else:
        main(quick="--quick" in sys.argv[1:])
