#!/usr/bin/env python3
"""Makes a dirty SYSTEM hive whose transaction log holds a Virtio driver install.

Output (default fixtures/hives/):
  dirty-SYSTEM       primary file: a clean SYSTEM hive without viostor, marked dirty
                     (primary sequence number = secondary + 1, checksum right)
  dirty-SYSTEM.LOG1  new-format transaction log (regf base block + one HvLE entry) whose
                     dirty pages turn the primary into the same hive with a boot-start viostor
                     service and its CriticalDeviceDatabase entry
  dirty2-SYSTEM      the same primary
  dirty2-SYSTEM.LOG1 a log whose entry (sequence N) adds the viostor service
  dirty2-SYSTEM.LOG2 a log whose entry (sequence N+1) adds the PCI binding

How: hivexregedit writes the "before" hive (onto fixtures/realdata/hivex-minimal-hive), then
a copy of it gets the viostor keys merged in ("after"). hivex edits in place, so the two share
their layout; every 4096-byte page of the hive bins that differs (or is new) becomes a dirty
page of one log entry. Formats follow the "Windows registry file format specification"
(msuhanov/regf): base block, transaction log new format, HvLE log entries with Marvin32
hashes (seed 0x82EF4D887A4E55C5): hash-1 over the entry from offset 40 to its end, hash-2
over its first 32 bytes (which include hash-1).

Needs hivexregedit (apt-get install -y libhivex-bin). Deterministic apart from the
timestamps hivex writes.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINIMAL = os.path.join(ROOT, "fixtures", "realdata", "hivex-minimal-hive")
PREFIX = "HKEY_LOCAL_MACHINE\\SYSTEM"
SEED = 0x82EF4D887A4E55C5
M32 = 0xFFFFFFFF

BEFORE = r"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SYSTEM\Select]
"Current"=dword:00000001
"Default"=dword:00000001

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\CriticalDeviceDatabase]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\CriticalDeviceDatabase\pci#ven_8086&dev_7010]
"Service"="intelide"

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services]

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\disk]
"Start"=dword:00000000
"Type"=dword:00000001

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\intelide]
"Start"=dword:00000000
"Type"=dword:00000001
"""

AFTER_SERVICE = r"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\viostor]
"Start"=dword:00000000
"Type"=dword:00000001
"ErrorControl"=dword:00000001
"Group"="SCSI miniport"
"ImagePath"=hex(2):73,00,79,00,73,00,74,00,65,00,6d,00,33,00,32,00,5c,00,64,00,72,00,69,00,76,00,65,00,72,00,73,00,5c,00,76,00,69,00,6f,00,73,00,74,00,6f,00,72,00,2e,00,73,00,79,00,73,00,00,00
"""

AFTER_BINDING = r"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\CriticalDeviceDatabase\pci#ven_1af4&dev_1001&subsys_00021af4&rev_00]
"Service"="viostor"
"ClassGUID"="{4D36E97B-E325-11CE-BFC1-08002BE10318}"
"""


def rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & M32


def marvin32(seed, data):
    lo, hi = seed & M32, seed >> 32

    def mix(lo, hi):
        hi ^= lo
        lo = (rotl(lo, 20) + hi) & M32
        hi = rotl(hi, 9) ^ lo
        lo = (rotl(lo, 27) + hi) & M32
        hi = rotl(hi, 19)
        return lo, hi

    n = len(data) // 4
    for i in range(n):
        lo = (lo + struct.unpack_from("<I", data, i * 4)[0]) & M32
        lo, hi = mix(lo, hi)
    r = data[n * 4:]
    if len(r) == 0:
        fin = 0x80
    elif len(r) == 1:
        fin = 0x8000 | r[0]
    elif len(r) == 2:
        fin = 0x800000 | r[0] | r[1] << 8
    else:
        fin = 0x80000000 | r[2] << 16 | r[0] | r[1] << 8
    lo = (lo + fin) & M32
    lo, hi = mix(lo, hi)
    lo, hi = mix(lo, hi)
    return lo | hi << 32


def checksum(base):
    x = 0
    for i in range(127):
        x ^= struct.unpack_from("<I", base, i * 4)[0]
    if x == 0:
        return 1
    if x == M32:
        return M32 - 1
    return x


def set_seqs(base, s1, s2, file_type=None):
    base = bytearray(base)
    struct.pack_into("<II", base, 4, s1, s2)
    if file_type is not None:
        struct.pack_into("<I", base, 28, file_type)
    struct.pack_into("<I", base, 508, checksum(base))
    return base


def merge(hive, text, tmp):
    reg = os.path.join(tmp, "in.reg")
    with open(reg, "w", newline="\r\n") as f:
        f.write(text)
    subprocess.run(["hivexregedit", "--merge", "--prefix", PREFIX, hive, reg], check=True)


def dirty_pages(old, new):
    """4096-byte pages of the hive bins of `new` that differ from `old` (or are new)."""
    bins_o = struct.unpack_from("<I", old, 40)[0]
    bins_n = struct.unpack_from("<I", new, 40)[0]
    assert bins_n >= bins_o and len(new) == 4096 + bins_n and len(old) == 4096 + bins_o
    pages = []
    for off in range(0, bins_n, 4096):
        if new[4096 + off:4096 + off + 4096] != old[4096 + off:4096 + off + 4096]:
            pages.append((off, new[4096 + off:4096 + off + 4096]))
    assert pages, "the merge changed nothing"
    return pages


def log_entry(seq, bins, pages):
    """One HvLE entry: header, dirty page references, pages, padded to a multiple of 512."""
    refs = b"".join(struct.pack("<II", off, len(p)) for off, p in pages)
    body = refs + b"".join(p for _, p in pages)
    size = (40 + len(body) + 511) // 512 * 512
    entry = bytearray(b"HvLE" + struct.pack("<IIIII", size, 0, seq, bins, len(pages)))
    entry += b"\0" * 16  # hashes, filled below
    entry += body
    entry += b"\0" * (size - len(entry))
    struct.pack_into("<Q", entry, 24, marvin32(SEED, bytes(entry[40:])))
    struct.pack_into("<Q", entry, 32, marvin32(SEED, bytes(entry[:32])))
    return bytes(entry)


def log_file(base_of, seq, entries):
    """A new-format log: the hive's base block with sequence numbers `seq`, file type 6
    (transaction log, new format), 512 bytes; then the entries."""
    return bytes(set_seqs(base_of[:512], seq, seq, file_type=6)) + b"".join(entries)


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "fixtures", "hives")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        before = os.path.join(tmp, "before")
        shutil.copyfile(MINIMAL, before)
        os.chmod(before, 0o644)
        merge(before, BEFORE, tmp)
        mid = os.path.join(tmp, "mid")
        shutil.copyfile(before, mid)
        merge(mid, AFTER_SERVICE, tmp)
        after = os.path.join(tmp, "after")
        shutil.copyfile(mid, after)
        merge(after, AFTER_BINDING, tmp)
        b = open(before, "rb").read()
        m = open(mid, "rb").read()
        a = open(after, "rb").read()

    seq = struct.unpack_from("<I", b, 8)[0]  # the primary's secondary sequence number
    bins = lambda h: struct.unpack_from("<I", h, 40)[0]
    # Primary: the old hive, left dirty (a write of sequence seq+1 began and did not finish).
    primary = bytes(set_seqs(b[:4096], seq + 1, seq)) + b[4096:]

    # dirty-SYSTEM + .LOG1: one log, one entry, before -> after.
    pages = dirty_pages(b, a)
    write(out, "dirty-SYSTEM", primary)
    write(out, "dirty-SYSTEM.LOG1", log_file(a, seq, [log_entry(seq, bins(a), pages)]))
    print(f"dirty-SYSTEM: sequence {seq + 1}/{seq}; dirty-SYSTEM.LOG1: 1 entry, "
          f"{len(pages)} dirty pages, hive bins {bins(b)} -> {bins(a)}")

    # dirty2-SYSTEM + .LOG1 + .LOG2: two logs, replayed oldest first. LOG1 (sequence seq)
    # adds the service, LOG2 (sequence seq+1) the PCI binding.
    p1 = dirty_pages(b, m)
    p2 = dirty_pages(m, a)
    write(out, "dirty2-SYSTEM", primary)
    write(out, "dirty2-SYSTEM.LOG1", log_file(m, seq, [log_entry(seq, bins(m), p1)]))
    write(out, "dirty2-SYSTEM.LOG2", log_file(a, seq + 1, [log_entry(seq + 1, bins(a), p2)]))
    print(f"dirty2-SYSTEM: LOG1 {len(p1)} dirty pages (sequence {seq}), "
          f"LOG2 {len(p2)} dirty pages (sequence {seq + 1})")


if __name__ == "__main__":
    main()
