#!/usr/bin/env bash
# Lists a 200,000-entry directory (a Windows\WinSxS as an aged server has it, its index
# allocation grown interleaved with another directory's, so fragmented) with `imgcheck ls` and
# with ntfs-3g's `ntfsls`, in the same run, and checks that both list the same names.
#
#   scripts/bench-bigdir.sh [COUNT] [RUNS]      (defaults 200000, 3)
#
# Needs mkntfs/ntfsls (ntfs-3g), ntfs-3g-dev and gcc (for scripts/fixtures/ntfsput.c), and a
# release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-200000}
runs=${2:-3}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
gcc -O1 -o "$w/ntfsput" scripts/fixtures/ntfsput.c $(pkg-config --cflags --libs libntfs-3g 2>/dev/null || echo -lntfs-3g)
vol=$w/bigdir.img
truncate -s 1G "$vol"
mkntfs -Q -F -q -c 4096 -L bigdir "$vol" 2>/dev/null
printf 'n\t/Windows/WinSxS\t%s\t/Windows/Temp\n' "$count" | "$w/ntfsput" "$vol"
bin=target/release/imgcheck
"$bin" ls "$vol" /Windows/WinSxS | sort > "$w/ours"
ntfsls -p /Windows/WinSxS "$vol" | grep -vx '[.][.]*' | sort > "$w/theirs"
cmp -s "$w/ours" "$w/theirs" || { echo "imgcheck ls and ntfsls disagree" >&2; diff "$w/ours" "$w/theirs" | head >&2; exit 1; }
echo "entries: $(wc -l < "$w/ours") (same names from both tools)"
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for i in $(seq "$runs"); do
  a=$(t "$bin" ls "$vol" /Windows/WinSxS)
  b=$(t ntfsls -p /Windows/WinSxS "$vol")
  c=$(t "$bin" ls -l "$vol" /Windows/WinSxS)
  d=$(t ntfsls -l -p /Windows/WinSxS "$vol")
  printf 'run %d: imgcheck ls %.2f s, ntfsls %.2f s; imgcheck ls -l %.2f s, ntfsls -l %.2f s\n' "$i" "$a" "$b" "$c" "$d"
done
