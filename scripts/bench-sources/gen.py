#!/usr/bin/env python3
"""Deterministic benchmark sources that stand for what real system disks hold.

    gen.py KIND SIZE_MIB OUT

KIND:
  text    random words from a large vocabulary, in lines: deflates to ~60 % (plain text with
          few repeats, the case a static-Huffman probe misjudges as incompressible)
  logs    log-like lines from a Zipf vocabulary with time stamps: deflates to ~30 %
  binary  executables, libraries and documents from /usr, concatenated in a fixed order
          (ELF code and data, compressed .gz files, text): a mix of compressible and not
  random  bytes from a seeded generator (encrypted or already-compressed data)
  zero    mostly zero, with a 64 KiB text block every 8 MiB (a fresh, little-used disk)
  mixed   a quarter each of text, binary, random and zero, interleaved in 4 MiB pieces

The same KIND and SIZE always give the same bytes (for `binary`, on the same /usr).
"""
import os
import random
import sys

MIB = 1 << 20


def text_stream(rng):
    # A Zipf-ish vocabulary: common words repeat, as in logs and configuration files.
    syll = ["an", "ro", "ver", "sys", "tem", "dri", "ver", "con", "fig", "ser", "vice", "net",
            "work", "stor", "age", "boot", "win", "dows", "reg", "is", "try", "key", "val", "ue",
            "mi", "cro", "soft", "ker", "nel", "log", "file", "pa", "th", "ins", "tall", "er"]
    words = []
    for _ in range(5000):
        words.append("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
    weights = [1.0 / (i + 1) for i in range(len(words))]
    while True:
        line = rng.choices(words, weights, k=rng.randint(4, 16))
        if rng.random() < 0.3:
            line.insert(0, "%04d-%02d-%02d %02d:%02d:%02d" % (
                rng.randint(2012, 2026), rng.randint(1, 12), rng.randint(1, 28),
                rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)))
        if rng.random() < 0.2:
            line.append("0x%08X" % rng.getrandbits(32))
        yield (" ".join(line) + "\r\n").encode()


def text(size, seed=1):
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2,
               2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07]
    vocab = ["".join(rng.choices(letters, weights, k=rng.randint(2, 11))) for _ in range(60000)]
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 14)))
        out += line.encode() + b"\r\n"
    return bytes(out[:size])


def logs(size, seed=1):
    rng = random.Random(seed)
    out = bytearray()
    for chunk in text_stream(rng):
        out += chunk
        if len(out) >= size:
            return bytes(out[:size])


def binary(size):
    out = bytearray()
    roots = ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/lib/python3"]
    while len(out) < size:
        before = len(out)
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    try:
                        with open(p, "rb") as f:
                            out += f.read(size - len(out))
                    except OSError:
                        continue
                    # Files start on 4 KiB boundaries, as on a file system.
                    out += b"\0" * (-len(out) % 4096)
                    if len(out) >= size:
                        return bytes(out[:size])
        if len(out) == before:
            sys.exit("no readable files under /usr")
    return bytes(out[:size])


def rand(size, seed=2):
    return random.Random(seed).randbytes(size)


def zero(size):
    out = bytearray(size)
    block = text(64 * 1024, seed=3)
    for off in range(0, size, 8 * MIB):
        out[off:off + len(block)] = block[:size - off]
    return bytes(out)


def mixed(size):
    piece = 4 * MIB
    n = (size + piece - 1) // piece
    kinds = [text(n * piece // 4 + piece, 4), binary(n * piece // 4 + piece),
             rand(n * piece // 4 + piece, 5)]
    out = bytearray()
    for i in range(n):
        k = i % 4
        if k == 3:
            out += b"\0" * piece
        else:
            j = i // 4
            out += kinds[k][j * piece:(j + 1) * piece]
    return bytes(out[:size])


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    kind, size, path = sys.argv[1], int(sys.argv[2]) * MIB, sys.argv[3]
    gen = {"text": text, "logs": logs, "binary": binary, "random": rand, "zero": zero, "mixed": mixed}
    if kind not in gen:
        sys.exit("unknown kind %r" % kind)
    data = gen[kind](size)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


if __name__ == "__main__":
    main()
