"""Functions of our compiled object files run on an emulated AVX-512 CPU: BochsCPU's Skylake-X model (AVX-512 F,
CD, BW, DQ, VL) with AVX512-BF16 added (no AMX; its 512-bit vcvtne2ps2bf16 writes the second source's 16 values into
both halves of the result), from PyPI's bochscpu-python. The object files are linked into one freestanding ELF
(symbols none of them defines left at 0, so a call out of the function under test faults instead of running; the
tests link logf and memset from freestanding_libc.cpp), loaded at its addresses into identity-mapped pages, and a
function is called by the System V ABI with a return address on a `hlt`. Lets AVX-512 code be checked on machines
without it.
"""
import ctypes
import numbers
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np

PAGE = 4096
_ARENA, _ARENA_SIZE = 0x2000_0000, 16 << 20  # the buffers the functions read and write
_STACK, _STACK_SIZE = 0x7100_0000, 64 * PAGE
_STOP = 0x7000_0000  # the return address: a hlt
_PML4 = 0x10_0000


def _import_bochscpu(shim):
    # The wheel wants glibc 2.38's __isoc23_* entry points: on an older glibc the shim maps them onto its own,
    # loaded globally first so the extension's symbols resolve to it (on 2.38 the shim would call itself).
    if not hasattr(ctypes.CDLL(None), "__isoc23_strtoull"):
        ctypes.CDLL(shim, mode=ctypes.RTLD_GLOBAL)
    import bochscpu
    import bochscpu.cpu
    import bochscpu.memory

    return bochscpu


def _session(bochscpu):
    """A Session whose CPU has AVX512-BF16 added: BX_CPU_C::initialize reads Bochs's `cpu.add_features` parameter as
    it builds the CPU. The parameter's setter copies at most its default's size (1, the empty string), so its value
    pointer is swapped for the build and put back (bochscpu-python 0.4.0's bx_param_string_c: size at 0x6c, value
    at 0x70)."""
    lib = ctypes.CDLL(bochscpu._bochscpu.__file__)
    lib.sim_get_param_string.restype = ctypes.c_void_p
    param = lib.sim_get_param_string(b"cpu.add_features")
    size, value = ctypes.c_int32.from_address(param + 0x6C), ctypes.c_void_p.from_address(param + 0x70)
    if size.value != 1 or not value.value or ctypes.string_at(value.value) != b"":
        raise RuntimeError("avx512_machine: bochscpu's cpu.add_features is not the empty string of size 1 that "
                           "bochscpu-python 0.4.0 has")
    features = ctypes.create_string_buffer(b"avx512bf16")  # Bochs's name
    default, value.value = value.value, ctypes.addressof(features)
    try:
        return bochscpu.Session()
    finally:
        value.value = default


def _run(command):  # a tool's stdout; its stderr in the error when it fails
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"avx512_machine: {' '.join(command[:2])} ... failed: {r.stderr.strip()}")
    return r.stdout


def _segments(elf):  # the ELF's PT_LOAD segments: (address, their bytes zero-filled to their size in memory, size)
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = []
    for i in range(phnum):
        kind, _, off, vaddr, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize)
        if kind == 1:
            out.append((vaddr, elf[off:off + filesz] + bytes(memsz - filesz), memsz))
    return out


class Avx512Machine:
    def __init__(self, objects, shim):
        self.bx = _import_bochscpu(shim)
        with tempfile.TemporaryDirectory(prefix="avx512_machine.") as folder:
            elf = os.path.join(folder, "linked.elf")
            _run(["ld", "-static", "-e", "0", "--no-dynamic-linker", "-z", "norelro", "--unresolved-symbols=ignore-all",
                  "--defsym=__dso_handle=0", "-o", elf, *objects])
            self.functions = []  # (source file, demangled name, address); local names repeat across files
            source = ""
            for line in _run(["readelf", "-sW", "-C", elf]).splitlines():
                m = re.match(r"\s*\d+: ([0-9a-f]+) +\S+ (FUNC|FILE) +(\w+) +\w+ +\w+ (.*)", line)
                if m and m.group(2) == "FILE":
                    source = m.group(4)
                elif m:  # a local symbol follows its file's FILE symbol; globals come after them all
                    file = source if m.group(3) == "LOCAL" else None
                    self.functions.append((file, m.group(4), int(m.group(1), 16)))
            with open(elf, "rb") as f:
                segments = _segments(f.read())
        bochscpu = self.bx
        self.sess = _session(bochscpu)
        self.sess.missing_page_handler = self._missing_page
        self.pages = {}  # guest page -> host page
        self.table = bochscpu.memory.PageMapLevel4Table()
        for vaddr, _, size in segments:
            self._map(vaddr, size)
        self._map(_ARENA, _ARENA_SIZE)
        self._map(_STACK - _STACK_SIZE, _STACK_SIZE)
        self._map(_STOP, 1)
        for hva, gpa in self.table.commit(_PML4):
            bochscpu.memory.page_insert(gpa, hva)
        for vaddr, data, _ in segments:
            self.write(vaddr, data)
        self.write(_STOP, b"\xf4")
        self.next_free = _ARENA
        self.fault = None
        self.hook = bochscpu.Hook()
        self.hook.exception = self._exception
        self.hook.hlt = lambda sess, cpu: sess.stop()

    def _missing_page(self, gpa):
        raise RuntimeError(f"avx512_machine: the function touched unmapped memory at {gpa:#x}")

    def _exception(self, sess, cpu, vector, code):
        self.fault = (vector, code)
        sess.stop()

    def _map(self, addr, size):
        bochscpu = self.bx
        for page in range(addr - addr % PAGE, addr + size, PAGE):
            if page not in self.pages:
                self.pages[page] = bochscpu.memory.allocate_host_page()
                bochscpu.memory.page_insert(page, self.pages[page])
                self.table.insert(page, page, 1)

    def _spans(self, addr, n):  # (host address, length) of the pages behind guest bytes addr .. addr + n
        done = 0
        while done < n:
            a = addr + done
            k = min(PAGE - a % PAGE, n - done)
            yield self.pages[a - a % PAGE] + a % PAGE, done, k
            done += k

    def write(self, addr, data):
        data = bytes(data)
        for host, done, k in self._spans(addr, len(data)):
            ctypes.memmove(host, data[done:done + k], k)

    def read(self, addr, n):
        return b"".join(ctypes.string_at(host, k) for host, _, k in self._spans(addr, n))

    def buffer(self, data):
        """A guest buffer holding `data` (bytes, or a size in bytes to zero), 64-byte aligned: its address."""
        data = bytes(data)
        addr = self.next_free
        self.next_free += (len(data) + 63) // 64 * 64
        if self.next_free > _ARENA + _ARENA_SIZE:
            raise RuntimeError("avx512_machine: out of buffer space")
        self.write(addr, data)
        return addr

    def _address(self, name, source, clone):  # see call
        suffix = f" [clone .{clone}]" if clone else ""
        matches = set()
        for file, symbol, address in self.functions:
            symbol = symbol.removeprefix("void ")
            if source not in (None, file) or not symbol.endswith(suffix):
                continue
            symbol = symbol[:len(symbol) - len(suffix)]
            after = symbol[len(name):len(name) + 1]
            if "[clone" not in symbol and symbol.startswith(name) and after in ("", "(", ",", ")"):
                matches.add(address)
        if len(matches) != 1:
            raise KeyError(f"avx512_machine: {len(matches)} functions {name}{suffix} in {source or 'the objects'}")
        return matches.pop()

    def call(self, name, *args, source=None, clone=None):
        """Calls the function of demangled name `name` (without a template's return type; up to its "(", or on
        to its first parameters where overloaded) from the object of `source` file, or its target_clones clone
        `clone` ("arch_x86_64_v4"), by the System V ABI: ints (pointers, integers, bools), floats (as fp32) and
        numpy float64s (as doubles). Returns rax and xmm0's low 64 bits; results are in the buffers it wrote."""
        bochscpu = self.bx
        entry = self._address(name, source, clone)
        for a in args:
            if not isinstance(a, numbers.Real):
                raise TypeError(f"avx512_machine: {name}'s argument {a!r} is not a number")
        ints = [int(a) & (2**64 - 1) for a in args if isinstance(a, numbers.Integral)]  # bools too
        floats = [a for a in args if not isinstance(a, numbers.Integral)]
        assert len(floats) <= 8
        stack_args = ints[6:]
        rsp = _STACK - 8 * (len(stack_args) + 1) - 8 * (len(stack_args) % 2)  # rsp + 8 16-byte aligned at entry
        self.write(rsp, struct.pack(f"<{len(stack_args) + 1}Q", _STOP, *stack_args))
        st = bochscpu.State()
        bochscpu.cpu.set_long_mode(st)
        st.cr4 = st.cr4 | (1 << 9) | (1 << 10) | (1 << 18)  # OSFXSR, OSXMMEXCPT, OSXSAVE
        st.xcr0 = 0xE7  # x87, SSE, AVX, and AVX-512's opmask, ZMM_Hi256 and Hi16_ZMM state
        st.mxcsr, st.fpcw, st.fptw = 0x1F80, 0x37F, 0xFFFF  # the ABI's: exceptions masked, the x87 stack empty
        st.cr3 = _PML4
        st.rsp, st.rip = rsp, entry
        for reg, value in zip(("rdi", "rsi", "rdx", "rcx", "r8", "r9"), ints):
            setattr(st, reg, value)
        zmm = st.zmm
        for i, f in enumerate(floats):
            z = bochscpu._bochscpu.Zmm()
            double = isinstance(f, np.float64)  # a double; Python's floats go as fp32
            z.q = [struct.unpack("<Q" if double else "<I", struct.pack("<d" if double else "<f", f))[0]] + [0] * 7
            zmm[i] = z
        st.zmm = zmm
        code, data = bochscpu.Segment(), bochscpu.Segment()  # ring 0, flat: 64-bit code and data
        for seg, selector, attr in ((code, 0x08, 0x209B), (data, 0x10, 0xC093)):
            seg.present, seg.selector, seg.base, seg.limit, seg.attr = True, selector, 0, 0xFFFFFFFF, attr
        st.cs = code
        st.ds = st.ss = st.es = st.fs = st.gs = data
        self.fault = None
        self.sess.cpu.state = st
        self.sess.run([self.hook])
        rip = self.sess.cpu.state.rip
        if self.fault is not None or rip != _STOP + 1:
            raise RuntimeError(f"avx512_machine: {name} ({clone or 'no clone'}) stopped at {rip:#x} with exception "
                               f"{self.fault} (6: an instruction the emulated CPU lacks; 14: a call out of the function)")
        end = self.sess.cpu.state
        return end.rax, end.zmm[0].q[0]
