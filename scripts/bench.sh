#!/usr/bin/env bash
# Benchmarks. Usage: scripts/bench.sh [convert]   (BENCH_DIR=/var/tmp/imgcheck-bench, BENCH_GIB=2)
#
# convert: imgcheck convert against `qemu-img convert -m 8 -W` (and plain qemu-img convert
# where its default is faster) on the same sources, from the page cache, timed with
# /usr/bin/time (wall seconds, peak RSS). Sources (BENCH_GIB GiB each):
#   random  - random data in 1-8 MiB runs with ~30% holes (incompressible: worst case for -c)
#   zeros   - mostly zeros: 5% random data, 45% explicit (allocated) zeros, 50% holes
#   ntfs    - an MBR disk with one NTFS partition (mkntfs) holding a ~1 GB tar of /usr
#             (binaries and text: realistic compressibility), made with ntfscp
# Cases: raw->qcow2, raw->qcow2 -c, raw->vmdk streamOptimized, vmdk(streamOptimized)->qcow2,
# qcow2->vhd; the last two need imgcheck's VMDK/qcow2 readers (skipped if they cannot open the
# source).
set -euo pipefail

cd "$(dirname "$0")/.."
WHAT=${1:-convert}
BENCH_DIR=${BENCH_DIR:-/var/tmp/imgcheck-bench}
GIB=${BENCH_GIB:-2}
SIZE=$((GIB * 1024 * 1024 * 1024))
mkdir -p "$BENCH_DIR"

cargo build --release --quiet
IMG=$PWD/target/release/imgcheck

make_sources() {
    cd "$BENCH_DIR"
    if [ ! -f random.raw ] || [ "$(stat -c %s random.raw)" != "$SIZE" ]; then
        echo "making random.raw ($GIB GiB, ~30% holes)"
        python3 - "$SIZE" <<'PY'
import os, random, sys
size = int(sys.argv[1]); random.seed(42)
with open("random.raw", "wb") as f:
    f.truncate(size)
    pos = 0
    while pos < size:
        run = min(random.randint(1, 8) << 20, size - pos)
        if random.random() >= 0.30:
            f.seek(pos); f.write(os.urandom(run))
        pos += run
PY
    fi
    if [ ! -f zeros.raw ] || [ "$(stat -c %s zeros.raw)" != "$SIZE" ]; then
        echo "making zeros.raw ($GIB GiB, 5% data, 45% explicit zeros, 50% holes)"
        python3 - "$SIZE" <<'PY'
import os, random, sys
size = int(sys.argv[1]); random.seed(7); z = bytes(4 << 20)
with open("zeros.raw", "wb") as f:
    f.truncate(size)
    pos = 0
    while pos < size:
        run = min(4 << 20, size - pos); r = random.random()
        if r < 0.05:
            f.seek(pos); f.write(os.urandom(run))
        elif r < 0.50:
            f.seek(pos); f.write(z[:run])
        pos += run
PY
    fi
    if [ ! -f ntfs.raw ] && command -v mkntfs >/dev/null && command -v ntfscp >/dev/null; then
        echo "making ntfs.raw ($GIB GiB MBR disk, NTFS partition with a tar of /usr)"
        rm -f part.ntfs usr.tar
        truncate -s $((SIZE - 1024 * 1024)) part.ntfs
        mkntfs -q -F -Q -s 512 -p 2048 -H 255 -S 63 part.ntfs >/dev/null
        tar -cf - -C / usr 2>/dev/null | head -c $((SIZE / 2)) > usr.tar || true
        ntfscp -q part.ntfs usr.tar usr.tar
        truncate -s "$SIZE" ntfs.raw
        printf 'label: dos\nstart=2048, type=7, bootable\n' | sfdisk -q ntfs.raw
        dd if=part.ntfs of=ntfs.raw bs=4M conv=notrunc,sparse status=none oflag=seek_bytes seek=1048576
        rm -f part.ntfs usr.tar
    fi
    # derived sources, made by qemu-img
    for s in random ntfs; do
        [ -f $s.raw ] || continue
        [ -f $s.stream.vmdk ] || qemu-img convert -O vmdk -o subformat=streamOptimized $s.raw $s.stream.vmdk
        [ -f $s.qcow2 ] || qemu-img convert -O qcow2 $s.raw $s.qcow2
    done
    cd - >/dev/null
}

# run NAME CMD... : time one command (output removed afterwards); prints "secs rss_mib"
run() {
    local out=$1; shift
    rm -f "$out"
    /usr/bin/time -f "%e %M" -o "$BENCH_DIR/time.txt" "$@" >/dev/null 2>"$BENCH_DIR/err.txt" || {
        echo "FAILED: $*" >&2; cat "$BENCH_DIR/err.txt" >&2; rm -f "$out"; echo "nan nan"; return
    }
    rm -f "$out"
    awk '{printf "%.2f %.0f\n", $1, $2/1024}' "$BENCH_DIR/time.txt"
}

# best of N runs (by time); prints "secs rss"
best() {
    local n=$1; shift
    local b="" r
    for _ in $(seq "$n"); do
        r=$(run "$@")
        if [ -z "$b" ] || awk -v a="${r% *}" -v b="${b% *}" 'BEGIN{exit !(a<b)}'; then b=$r; fi
    done
    echo "$b"
}

readable() { "$IMG" info "$1" >/dev/null 2>&1; }

row() { # case src ours qemu_mW [qemu_default]
    local c=$1 s=$2 o=$3 q=$4 d=${5:-}
    local ratio
    ratio=$(awk -v q="${q% *}" -v o="${o% *}" 'BEGIN{ if (o>0) printf "%.2f", q/o; else print "-" }')
    if [ -n "$d" ]; then
        local r2
        r2=$(awk -v q="${d% *}" -v o="${o% *}" 'BEGIN{ if (o>0) printf "%.2f", q/o; else print "-" }')
        printf "| %-28s | %-7s | %6s s %5s MiB | %6s s %5s MiB | %6s s %5s MiB | %5sx | %5sx |\n" \
            "$c" "$s" ${o} ${q} ${d} "$ratio" "$r2"
    else
        printf "| %-28s | %-7s | %6s s %5s MiB | %6s s %5s MiB | %18s | %5sx | %6s |\n" \
            "$c" "$s" ${o} ${q} "" "$ratio" ""
    fi
}

bench_convert() {
    make_sources
    local D=$BENCH_DIR N
    N=$(nproc)
    echo
    echo "imgcheck convert vs qemu-img $(qemu-img --version | head -1 | awk '{print $3}'), $N cores, $GIB GiB sources, page cache warm"
    echo "(a) third column: qemu-img -m 8 -W -t writeback (flushes its output at the end, as imgcheck fsyncs)"
    echo "(b) third column: qemu-img convert -c without -m 8 -W (its faster setting for compression)"
    echo "| case                         | source  | imgcheck (-j $N)     | qemu-img -m 8 -W    | qemu-img, 3rd       | ratio | ratio vs 3rd |"
    echo "|------------------------------|---------|---------------------|---------------------|---------------------|-------|-------|"
    for s in random zeros ntfs; do
        [ -f "$D/$s.raw" ] || continue
        cat "$D/$s.raw" >/dev/null
        o=$(best 3 "$D/o.qcow2" "$IMG" convert -q -O qcow2 "$D/$s.raw" "$D/o.qcow2")
        q=$(best 3 "$D/q.qcow2" qemu-img convert -m 8 -W -O qcow2 "$D/$s.raw" "$D/q.qcow2")
        d=$(best 3 "$D/q.qcow2" qemu-img convert -m 8 -W -t writeback -O qcow2 "$D/$s.raw" "$D/q.qcow2")
        row "raw->qcow2 (a)" "$s" "$o" "$q" "$d"
        o=$(run "$D/o.qcow2" "$IMG" convert -q -c -O qcow2 "$D/$s.raw" "$D/o.qcow2")
        q=$(run "$D/q.qcow2" qemu-img convert -m 8 -W -c -O qcow2 "$D/$s.raw" "$D/q.qcow2")
        d=$(run "$D/q.qcow2" qemu-img convert -c -O qcow2 "$D/$s.raw" "$D/q.qcow2")
        row "raw->qcow2 -c (b)" "$s" "$o" "$q" "$d"
        o=$(run "$D/o.vmdk" "$IMG" convert -q -O vmdk -o subformat=streamOptimized "$D/$s.raw" "$D/o.vmdk")
        q=$(run "$D/q.vmdk" qemu-img convert -m 8 -W -O vmdk -o subformat=streamOptimized "$D/$s.raw" "$D/q.vmdk")
        row "raw->vmdk streamOptimized" "$s" "$o" "$q"
        if [ -f "$D/$s.stream.vmdk" ]; then
            if readable "$D/$s.stream.vmdk"; then
                o=$(best 2 "$D/o.qcow2" "$IMG" convert -q -O qcow2 "$D/$s.stream.vmdk" "$D/o.qcow2")
                q=$(best 2 "$D/q.qcow2" qemu-img convert -m 8 -W -O qcow2 "$D/$s.stream.vmdk" "$D/q.qcow2")
                row "vmdk(stream)->qcow2" "$s" "$o" "$q"
            else
                echo "| vmdk(stream)->qcow2          | $s | skipped: imgcheck's VMDK reader is not merged yet |"
            fi
        fi
        if [ -f "$D/$s.qcow2" ]; then
            if readable "$D/$s.qcow2"; then
                o=$(best 2 "$D/o.vhd" "$IMG" convert -q -O vpc "$D/$s.qcow2" "$D/o.vhd")
                q=$(best 2 "$D/q.vhd" qemu-img convert -m 8 -W -O vpc "$D/$s.qcow2" "$D/q.vhd")
                row "qcow2->vhd" "$s" "$o" "$q"
            else
                echo "| qcow2->vhd                   | $s | skipped: imgcheck's qcow2 reader is not merged yet |"
            fi
        fi
    done
    # memory bound: 16 workers on the compressing path
    if [ -f "$D/random.raw" ]; then
        o=$(run "$D/o.qcow2" "$IMG" convert -q -j 16 -c -O qcow2 "$D/random.raw" "$D/o.qcow2")
        echo "imgcheck convert -j 16 -c -O qcow2 random.raw: ${o% *} s, peak RSS ${o#* } MiB"
    fi
    rm -f "$D"/o.* "$D"/q.* "$D/time.txt" "$D/err.txt"
}

case "$WHAT" in
    convert) bench_convert ;;
    *) echo "usage: $0 [convert]" >&2; exit 2 ;;
esac
