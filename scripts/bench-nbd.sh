#!/usr/bin/env bash
# NBD benchmark: qemu-img reading a 2 GiB raw image from `imgcheck serve` and from
# `qemu-nbd`, in one run, same machine, same image, servers on 127.0.0.1.
#
#   scripts/bench-nbd.sh            # uses target/release/imgcheck (builds it if missing)
#   IMGCHECK=path/to/imgcheck RUNS=5 scripts/bench-nbd.sh
#
# The image holds 1.5 GiB of random data in four runs separated by 128 MiB holes, so the
# clients' use of block status (holes skipped) counts as well as raw read throughput. The
# reader is `qemu-img convert -n -f raw nbd://... --target-image-opts driver=null-co`: the
# bytes are fetched over NBD and thrown away, so no disk write is measured. The image is read
# once before the runs so that both servers read it from the page cache. Runs alternate
# between the servers; the median of RUNS runs is reported. A second table does the same with
# imgcheck as the client (`imgcheck convert -O raw nbd://... out`, output in /dev/shm when
# writable, removed after each run).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
IMGCHECK=${IMGCHECK:-target/release/imgcheck}
if [ ! -x "$IMGCHECK" ]; then
    cargo build --release --quiet
fi
for t in qemu-img qemu-nbd; do
    command -v "$t" >/dev/null || { echo "bench-nbd: $t not installed" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/bench-nbd.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK" "${OUT_DIR:-$WORK}"
}
trap cleanup EXIT

IMG=$WORK/disk.raw
SIZE_MIB=${SIZE_MIB:-2048} # smaller only to try the script out
SIZE=$((SIZE_MIB * 1024 * 1024))
truncate -s "$SIZE" "$IMG"
for i in 0 1 2 3; do
    dd if=/dev/urandom of="$IMG" bs=1M count=$((SIZE_MIB * 3 / 16)) seek=$((i * SIZE_MIB / 4)) \
        conv=notrunc,fsync status=none
done
cat "$IMG" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# imgcheck serve
P1=$(free_port)
"$IMGCHECK" serve --listen "127.0.0.1:$P1" --export-name bench "$IMG" >"$WORK/serve.out" 2>"$WORK/serve.err" &
PIDS+=($!)
# qemu-nbd (read-only, persistent, same export name)
P2=$(free_port)
qemu-nbd -t -r -f raw -b 127.0.0.1 -p "$P2" -x bench --fork --pid-file="$WORK/qemu-nbd.pid" "$IMG"
PIDS+=("$(cat "$WORK/qemu-nbd.pid")")
for _ in $(seq 50); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done

U1="nbd://127.0.0.1:$P1/bench"
U2="nbd://127.0.0.1:$P2/bench"

now() { date +%s.%N; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

qemu_read() {
    qemu-img convert -n -f raw "$1" --target-image-opts "driver=null-co,size=$SIZE"
}
# imgcheck writes its output to memory (/dev/shm) when it can, so that the disk does not
# dominate the figures; the output is removed after each run.
OUT_DIR=$WORK
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    OUT_DIR=$(mktemp -d /dev/shm/bench-nbd.XXXXXX)
fi
imgcheck_read() {
    rm -f "$OUT_DIR/out.raw"
    "$IMGCHECK" convert -O raw "$1" "$OUT_DIR/out.raw"
    rm -f "$OUT_DIR/out.raw"
}

# Sanity: both servers give the same bytes.
qemu-img compare -f raw -F raw "$U1" "$U2" >/dev/null

report() { # title reader
    local title=$1 reader=$2 a=() b=()
    for _ in $(seq "$RUNS"); do
        t0=$(now); $reader "$U1"; t1=$(now); a+=("$(echo "$t1 - $t0" | bc -l)")
        t0=$(now); $reader "$U2"; t1=$(now); b+=("$(echo "$t1 - $t0" | bc -l)")
    done
    ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
    printf '\n%s (%s MiB image, 3/4 data; median of %s runs)\n' "$title" "$SIZE_MIB" "$RUNS"
    printf '| server | seconds | MiB/s of virtual disk | all runs (s) |\n|---|---|---|---|\n'
    printf '| imgcheck serve | %.2f | %.0f | %s |\n' "$ma" "$(echo "$SIZE_MIB / $ma" | bc -l)" "${a[*]}"
    printf '| qemu-nbd | %.2f | %.0f | %s |\n' "$mb" "$(echo "$SIZE_MIB / $mb" | bc -l)" "${b[*]}"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(qemu-img --version | head -1); imgcheck $("$IMGCHECK" --version)"
report "qemu-img convert (client) reading over NBD" qemu_read
report "imgcheck convert (client) reading over NBD" imgcheck_read
