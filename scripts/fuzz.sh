#!/bin/sh
# Run every cargo-fuzz target for N seconds each (default 60), one at a time, and summarise.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz uses nightly-only rustc flags
# (-Zsanitizer=address); on a stable toolchain we set RUSTC_BOOTSTRAP=1 to allow them.
# Crashes, hangs (-timeout) and oversized allocations (-rss_limit_mb / -malloc_limit_mb) land in
# fuzz/artifacts/<target>/. Seeds come from scripts/fuzz-seeds.sh (fixtures; not committed).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"qcow2 vhd vmdk_sparse vmdk_descriptor mbr_gpt ntfs hive bcd nbd_server nbd_client"}
cd "$root/fuzz" || exit 2
if ! rustc --version | grep -q nightly; then export RUSTC_BOOTSTRAP=1; fi
[ -d corpus/nbd_client ] || "$root/scripts/fuzz-seeds.sh" >/dev/null
log=$root/fuzz/logs
mkdir -p "$log"
max_len() {
    case $1 in
        vmdk_descriptor) echo 16384 ;;
        ntfs|hive) echo 1048576 ;;
        qcow2|vhd|vmdk_sparse) echo 262144 ;;
        mbr_gpt) echo 65536 ;;
        bcd) echo 262144 ;;
        *) echo 65536 ;;
    esac
}
# A small ASan quarantine: with 1 MiB inputs the default (256 MiB) alone trips -rss_limit_mb
# (a false "out-of-memory" on an empty input); -malloc_limit_mb still catches any single
# allocation over 256 MiB, i.e. a buffer sized from a header field.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=32:malloc_context_size=10}"
status=0
summary=""
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    cargo fuzz run --jobs 1 "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5 \
        -max_len="$(max_len "$t")" -print_final_stats=1 > "$log/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log/$t.log" | grep -o '[0-9]*$' | tail -1)
    found=$(grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' "$log/$t.log" | tail -3)
    [ $rc -ne 0 ] && status=1
    line="$t: ${execs:-?} executions in ${secs}s, exit $rc"
    [ -n "$found" ] && line="$line
    $found"
    summary="$summary
$line"
done
echo "== summary (logs in fuzz/logs, crashing inputs in fuzz/artifacts)$summary"
exit $status
