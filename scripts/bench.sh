#!/usr/bin/env bash
# Benchmarks. Usage: scripts/bench.sh [convert|sources]   (BENCH_DIR=/var/tmp/imgcheck-bench, BENCH_GIB=2,
# BENCH_ONLY=REGEX: only the cases whose "case source" matches, e.g. 'stream.*ntfs')
#
# convert: imgcheck convert against `qemu-img convert -m 8 -W` on the same sources, from the
# page cache, timed with /usr/bin/time (wall seconds, peak RSS), `sync` before each run so no
# run pays for the previous one's writeback. Each case is timed twice over: durable (imgcheck's
# default fsync against qemu-img -t writeback, which flushes at close) and not durable
# (imgcheck -t unsafe against qemu-img's default, cache=unsafe). Sources (BENCH_GIB GiB each):
#   random  - random data in 1-8 MiB runs with ~30% holes (incompressible: worst case for -c)
#   zeros   - mostly zeros: 5% random data, 45% explicit (allocated) zeros, 50% holes
#   ntfs    - an MBR disk with one NTFS partition (mkntfs) holding a ~1 GB tar of /usr
#             (binaries and text: realistic compressibility), made with ntfscp
# Cases: raw->qcow2, raw->qcow2 -c, raw->vmdk streamOptimized, vmdk(streamOptimized)->qcow2,
# compressed qcow2->vhd, qcow2->vhd (the derived sources are made by qemu-img).
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
    for s in random zeros ntfs; do
        [ -f $s.raw ] || continue
        [ -f $s.stream.vmdk ] || qemu-img convert -O vmdk -o subformat=streamOptimized $s.raw $s.stream.vmdk
        [ -f $s.qcow2 ] || qemu-img convert -O qcow2 $s.raw $s.qcow2
        [ -f $s.c.qcow2 ] || qemu-img convert -c -O qcow2 $s.raw $s.c.qcow2
    done
    cd - >/dev/null
}

# run NAME CMD... : time one command (output removed afterwards); prints "secs rss_mib"
run() {
    local out=$1; shift
    rm -f "$out"
    sync
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

ratio() { awk -v q="${1% *}" -v o="${2% *}" 'BEGIN{ if (o>0) printf "%.2f", q/o; else print "-" }'; }

# one case, four timings: (durable) imgcheck default vs qemu-img -m 8 -W -t writeback, and
# (not durable) imgcheck -t unsafe vs qemu-img -m 8 -W (its default cache mode for the output).
# case_row N CASE SRC_NAME OUT_EXT IMGCHECK_ARGS QEMU_ARGS SRC_FILE
case_row() {
    local n=$1 c=$2 s=$3 ext=$4 iargs=$5 qargs=$6 src=$7 D=$BENCH_DIR
    [ -f "$src" ] || return 0
    if [ -n "${BENCH_ONLY:-}" ] && ! [[ "$c $s" =~ $BENCH_ONLY ]]; then return 0; fi
    if ! readable "$src"; then
        echo "| $c | $s | skipped: imgcheck cannot open $src |"
        return 0
    fi
    local od ou qd qu
    # shellcheck disable=SC2086
    od=$(best "$n" "$D/o.$ext" "$IMG" convert -q $iargs "$src" "$D/o.$ext")
    # shellcheck disable=SC2086
    qd=$(best "$n" "$D/q.$ext" qemu-img convert -m 8 -W -t writeback $qargs "$src" "$D/q.$ext")
    # shellcheck disable=SC2086
    ou=$(best "$n" "$D/o.$ext" "$IMG" convert -q -t unsafe $iargs "$src" "$D/o.$ext")
    # shellcheck disable=SC2086
    qu=$(best "$n" "$D/q.$ext" qemu-img convert -m 8 -W $qargs "$src" "$D/q.$ext")
    printf "| %-26s | %-6s | %5s s %3s MiB | %5s s %3s MiB | **%5sx** | %5s s %3s MiB | %5s s %3s MiB | **%5sx** |\n" \
        "$c" "$s" $od $qd "$(ratio "$qd" "$od")" $ou $qu "$(ratio "$qu" "$ou")"
}

bench_convert() {
    make_sources
    local D=$BENCH_DIR N
    N=$(nproc)
    echo
    echo "imgcheck convert (-j $N) vs qemu-img $(qemu-img --version | head -1 | awk '{print $3}') convert -m 8 -W, $N cores, $GIB GiB sources, page cache warm, sync before each run"
    echo "durable: imgcheck default (fsync before rename) vs qemu-img -t writeback (flush at close)"
    echo "not durable: imgcheck -t unsafe vs qemu-img default (cache=unsafe for the output)"
    echo "ratio = qemu-img seconds / imgcheck seconds; best of 3 (compressed output: 1 run)"
    echo
    echo "| case                       | source | imgcheck        | qemu-img -t writeback | ratio | imgcheck -t unsafe | qemu-img (unsafe) | ratio |"
    echo "|----------------------------|--------|-----------------|-----------------|-------|-----------------|-----------------|-------|"
    for s in random zeros ntfs; do
        [ -f "$D/$s.raw" ] || continue
        cat "$D/$s.raw" "$D/$s".*.vmdk "$D/$s".*qcow2 >/dev/null 2>&1 || true
        case_row 3 "raw->qcow2" "$s" qcow2 "-O qcow2" "-O qcow2" "$D/$s.raw"
        case_row 1 "raw->qcow2 -c" "$s" qcow2 "-c -O qcow2" "-c -O qcow2" "$D/$s.raw"
        case_row 1 "raw->vmdk streamOptimized" "$s" vmdk "-O vmdk -o subformat=streamOptimized" \
            "-O vmdk -o subformat=streamOptimized" "$D/$s.raw"
        case_row 3 "vmdk(stream)->qcow2" "$s" qcow2 "-O qcow2" "-O qcow2" "$D/$s.stream.vmdk"
        case_row 3 "qcow2(-c)->vhd" "$s" vhd "-O vpc" "-O vpc" "$D/$s.c.qcow2"
        case_row 3 "qcow2->vhd" "$s" vhd "-O vpc" "-O vpc" "$D/$s.qcow2"
    done
    [ -n "${BENCH_ONLY:-}" ] && { rm -f "$D"/o.* "$D"/q.* "$D/time.txt" "$D/err.txt"; return 0; }
    # memory bound: 16 workers on the compressing path
    if [ -f "$D/random.raw" ]; then
        o=$(run "$D/o.qcow2" "$IMG" convert -q -j 16 -c -O qcow2 "$D/random.raw" "$D/o.qcow2")
        echo
        echo "imgcheck convert -j 16 -c -O qcow2 random.raw: ${o% *} s, peak RSS ${o#* } MiB"
    fi
    # scaling: the compressing path with 1 worker and with one per core
    if [ -f "$D/ntfs.raw" ]; then
        local one all
        one=$(run "$D/o.qcow2" "$IMG" convert -q -j 1 -c -O qcow2 "$D/ntfs.raw" "$D/o.qcow2")
        all=$(run "$D/o.qcow2" "$IMG" convert -q -j "$N" -c -O qcow2 "$D/ntfs.raw" "$D/o.qcow2")
        echo "imgcheck convert -c -O qcow2 ntfs.raw: -j 1 ${one% *} s, -j $N ${all% *} s (speed-up $(ratio "$one" "$all")x)"
    fi
    rm -f "$D"/o.* "$D"/q.* "$D/time.txt" "$D/err.txt"
}

case "$WHAT" in
    convert) bench_convert ;;
    sources) make_sources ;;
    *) echo "usage: $0 [convert|sources]" >&2; exit 2 ;;
esac
