#!/usr/bin/env bash
# Compressed output, side by side: imgcheck convert -c -O qcow2 and -O vmdk streamOptimized vs
# qemu-img on the benchmark sources of scripts/bench-sources/gen.py, in the same run.
# Prints size, wall and CPU seconds and qemu-img check's compressed share for both tools.
#   scripts/bench-compress.sh [SIZE_MIB] [WORKDIR]
# Both tools write without fsync (imgcheck -t unsafe; qemu-img's default) so the work is equal.
set -euo pipefail
size=${1:-512}
work=${2:-$(mktemp -d)}
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/target/release/imgcheck
[ -x "$bin" ] || (cd "$top" && cargo build --release -q)
mkdir -p "$work"
echo "# $(date -u +%F) $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg), ${size} MiB sources"
printf '| source | target | qemu-img bytes | imgcheck bytes | ratio | qemu-img wall / CPU s | imgcheck wall / CPU s | wall speed-up | compressed clusters qemu / imgcheck |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
share() { # compressed share of a qcow2 from qemu-img check
  qemu-img check --output=json "$1" 2>/dev/null | python3 -c 'import json,sys; j=json.load(sys.stdin); a=j.get("allocated-clusters",0); c=j.get("compressed-clusters",0); print("%.1f %%" % (100*c/a) if a else "-")'
}
timed() { # timed OUTVAR cmd...: sets OUTVAR to "wall cpu"
  local var=$1; shift
  local tf
  tf=$(mktemp)
  /usr/bin/time -o "$tf" -f '%e %U %S' "$@" >/dev/null 2>&1
  printf -v "$var" '%s' "$(awk '{printf "%s %.2f", $1, $2+$3}' "$tf")"
  rm -f "$tf"
}
for kind in text logs binary random zero mixed; do
  src=$work/$kind.raw
  [ -f "$src" ] || python3 "$top/scripts/bench-sources/gen.py" "$kind" "$size" "$src"
  for target in qcow2 vmdk; do
    if [ $target = qcow2 ]; then q=(-c -O qcow2); i=(-c -O qcow2); ext=qcow2;
    else q=(-O vmdk -o subformat=streamOptimized); i=(-O vmdk -o subformat=streamOptimized); ext=vmdk; fi
    rm -f "$work/q.$ext" "$work/i.$ext"
    sync; timed tq qemu-img convert -f raw "${q[@]}" "$src" "$work/q.$ext"
    sync; timed ti "$bin" convert -q -t unsafe "${i[@]}" "$src" "$work/i.$ext"
    qemu-img compare -q -f raw "$src" "$work/i.$ext" || { echo "MISMATCH $kind $target"; exit 1; }
    sq=$(stat -c %s "$work/q.$ext"); si=$(stat -c %s "$work/i.$ext")
    shq=-; shi=-
    [ $target = qcow2 ] && { shq=$(share "$work/q.$ext"); shi=$(share "$work/i.$ext"); }
    read -r wq cq <<<"$tq"; read -r wi ci <<<"$ti"
    printf '| %s | %s | %s | %s | %.4f | %s / %s | %s / %s | %.2fx | %s / %s |\n' "$kind" "${target/vmdk/vmdk stream}" \
      "$sq" "$si" "$(echo "$si / $sq" | bc -l)" "$wq" "$cq" "$wi" "$ci" "$(echo "$wq / $wi" | bc -l)" "$shq" "$shi"
  done
done
