#!/usr/bin/env bash
# Read benchmarks, imgcheck side by side with qemu-img in the same run:
#  1. reading a 2 GiB image of each format (imgcheck convert -O raw vs qemu-img convert -O raw);
#  2. verify of a 64 GiB sparse image: time and bytes read (metadata only);
#  3. 100 small images verified in one call vs 100 separate calls.
# Usage: scripts/bench-read.sh [WORKDIR]   (needs ~8 GiB free; prints a Markdown table)
set -euo pipefail
command -v bc >/dev/null && [ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq bc time >/dev/null; }
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/imgcheck-bench.XXXXXX)}
mkdir -p "$work"
cargo build --release -q
IMG=$PWD/target/release/imgcheck
SIZE=${BENCH_SIZE:-2G}

# wall seconds and peak RSS (MiB) of a command: "secs rss"
measure() {
  local t0 t1 rss tf
  tf=$(mktemp)
  t0=$(date +%s.%N)
  /usr/bin/time -o "$tf" -f '%M' "$@" >/dev/null 2>&1
  t1=$(date +%s.%N)
  rss=$(tail -1 "$tf"); rm -f "$tf"
  echo "$(echo "$t1 - $t0" | bc -l) $((rss / 1024))"
}
best_of() { # best_of N cmd... -> best "secs rss"
  local n=$1; shift; local best="" line
  for _ in $(seq "$n"); do
    line=$(measure "$@")
    if [ -z "$best" ] || (( $(echo "${line%% *} < ${best%% *}" | bc -l) )); then best=$line; fi
  done
  echo "$best"
}

echo "## Reading a $SIZE image (convert to a sparse raw file), best of 3"
echo
echo "imgcheck fsyncs its output before renaming it into place; qemu-img leaves it in the page"
echo "cache. \"qemu-img + fsync\" runs \`sync FILE\` after qemu-img, for a like-for-like figure."
echo
echo "| source | qemu-img s | qemu-img + fsync s | imgcheck s | ratio (qemu+fsync / imgcheck) | imgcheck peak RSS MiB |"
echo "|---|---|---|---|---|---|"
src=$work/src.raw
if [ ! -f "$src" ]; then
  # ~50% random data in 1 MiB runs, the rest holes
  python3 - "$src" "$SIZE" <<'PY'
import os, sys
path, size = sys.argv[1], sys.argv[2]
n = int(size[:-1]) * (1 << {"G": 30, "M": 20}[size[-1]])
rnd = os.urandom(1 << 20)
with open(path, "wb") as f:
    f.truncate(n)
    for i in range(0, n, 1 << 21):
        f.seek(i); f.write(rnd[(i >> 21) % 7:][:1 << 20])
PY
fi
declare -A made
for spec in "qcow2:qcow2:" "qcow2-c:qcow2:-c" "vpc-dynamic:vpc:-o subformat=dynamic" "vpc-fixed:vpc:-o subformat=fixed" \
            "vmdk-sparse:vmdk:-o subformat=monolithicSparse" "vmdk-stream:vmdk:-o subformat=streamOptimized" "raw:raw:"; do
  IFS=: read -r name fmt opts <<<"$spec"
  f=$work/img-$name
  if [ "$fmt" = raw ]; then f=$src; elif [ ! -f "$f" ]; then qemu-img convert -O "$fmt" $opts "$src" "$f"; fi
  qf=$fmt; [ "$fmt" = raw ] && qf=raw
  q=$(best_of 3 qemu-img convert -f "$qf" -O raw "$f" "$work/out-q.raw"); rm -f "$work/out-q.raw"
  qs=$(best_of 3 sh -c "qemu-img convert -f '$qf' -O raw '$f' '$work/out-q.raw' && sync '$work/out-q.raw'"); rm -f "$work/out-q.raw"
  i=$(best_of 3 sh -c "rm -f '$work/out-i.raw'; exec '$IMG' convert -q -O raw '$f' '$work/out-i.raw'"); rm -f "$work/out-i.raw"
  printf '| %s | %.2f | %.2f | %.2f | %.2f | %s |\n' "$name" "${q%% *}" "${qs%% *}" "${i%% *}" "$(echo "${qs%% *} / ${i%% *}" | bc -l)" "${i##* }"
done

echo
echo "## verify of a 64 GiB sparse qcow2 holding a Windows-like disk"
echo
big=$work/big64.qcow2
xz -dc fixtures/good-mbr.raw.xz > "$work/good.raw"
qemu-img create -q -f qcow2 "$big" 64G
qemu-img convert -n -O qcow2 "$work/good.raw" "$big"
out=$("$IMG" verify -v "$big" 2>&1 >/dev/null)
echo "- $out"
echo "- file: $(du -h "$big" | cut -f1) on disk, virtual size 64 GiB"

echo
echo "## 100 small images: one call vs 100 calls"
echo
mkdir -p "$work/many"
for i in $(seq -w 1 100); do cp --sparse=always "$work/good.raw" "$work/many/img$i.raw"; done
one=$(best_of 3 "$IMG" verify -q --format jsonl "$work"/many/*.raw)
many=$(best_of 3 sh -c "for f in '$work'/many/*.raw; do '$IMG' verify --format jsonl \"\$f\" >/dev/null; done")
printf -- '- one call: %.2f s; 100 calls: %.2f s (%.1fx)\n' "${one%% *}" "${many%% *}" "$(echo "${many%% *} / ${one%% *}" | bc -l)"
