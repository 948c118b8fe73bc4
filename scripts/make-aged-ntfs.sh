#!/usr/bin/env bash
# make-aged-ntfs.sh: NTFS volumes shaped like aged Windows system volumes (issue 20), made with
# libntfs-3g offline (no root, no mount): fragmented files and directories whose attributes are
# spread over extension records through an $ATTRIBUTE_LIST, an $MFT that itself needs one, 401
# hard links, clusters from 512 B to 64 KiB. Each volume is checked with ntfs-3g's own readers
# (ntfsls, ntfscat, ntfsinfo) before it is written out.
#
#   scripts/make-aged-ntfs.sh OUTDIR VOLUME...     build VOLUME.img in OUTDIR (raw, sparse)
#   scripts/make-aged-ntfs.sh --crate-testdata     rebuild vendor/ntfs/testdata/*.img.xz
#
# VOLUMEs:
#   aged        64 MiB, 4 KiB clusters, free space a checkerboard while it fills: the $MFT grows in
#               1-cluster runs until it has an attribute list and extension records, and so do
#               /Windows/Temp (4,000 files), /Windows/System32 (3,000 files: $INDEX_ALLOCATION in
#               several extents) and /Windows/System32/config/SYSTEM (2.4 MB, one run per
#               cluster, $DATA in several extents, MFT record past the $MFT's first extent);
#               /Links/target.bin has 401 names (its $FILE_NAMEs in extension records)
#   clusters-N  N = 512 ... 65536: a 300-file directory (index blocks smaller than a cluster
#               from 8 KiB up) and a fragmented file with an attribute list
#   winsxs      1 GiB: /Windows/WinSxS with 200,000 entries, its index in 1-cluster runs through
#               an attribute list (about 15 s)
#   links       /Links/target.bin (300,000 bytes) with 401 hard links
# File contents are numbered 512-byte blocks ("NAME block N"), so that a piece read at the wrong
# place shows, and so that the images compress well.
set -euo pipefail
export LC_ALL=C TZ=UTC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/scripts/fixtures

die() { printf 'make-aged-ntfs: ERROR: %s\n' "$*" >&2; exit 1; }

for t in mkntfs ntfsls ntfscat ntfsinfo gcc python3; do
  command -v "$t" >/dev/null || die "$t is not installed (apt-get install ntfs-3g ntfs-3g-dev gcc python3)"
done
[ -e /usr/include/ntfs-3g/volume.h ] || die "ntfs-3g-dev is not installed"
# libntfs-3g stamps the current time into what it writes; faketime (when installed) makes two
# runs give the same bytes.
FT() { if command -v faketime >/dev/null; then faketime -f '2024-03-01 12:00:00' "$@"; else "$@"; fi; }

W=$(mktemp -d "${TMPDIR:-/tmp}/imgcheck-aged.XXXXXX")
trap 'rm -rf "$W"' EXIT
gcc -O1 -Wall -Werror -o "$W/ntfsaged" "$SRC/ntfsaged.c" -lntfs-3g || die "cannot compile ntfsaged.c"

# blocks FILE NAME BYTES: BYTES bytes of 512-byte blocks, each starting "NAME block N"
blocks() {
  python3 - "$1" "$2" "$3" <<'EOF'
import sys
out, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(out, "wb") as f:
    for i in range((size + 511) // 512):
        b = f"{name} block {i:08d}".encode().ljust(511, b".") + b"\n"
        f.write(b[: min(512, size - 512 * i)])
EOF
}

# new_volume IMG BYTES CLUSTER LABEL
new_volume() {
  rm -f "$1"
  truncate -s "$2" "$1"
  mkntfs -Q -F -T -q -s 512 -c "$3" -p 2048 -H 255 -S 63 -L "$4" "$1" >/dev/null 2>&1 || die "mkntfs -c $3 failed on $1"
}

aged() { # IMG SCRIPT: run an ntfsaged script
  FT "$W/ntfsaged" "$1" < "$2" || die "ntfsaged failed on $1"
}

# Check what ntfs-3g says about the shapes we wanted.
attr_extents() { # IMG PATH TYPE -> how many records hold an attribute of TYPE (e.g. '$DATA')
  ntfsinfo -v -F "$2" "$1" 2>/dev/null | grep -c "^Dumping attribute $3 (" || true
}
has_attr_list() { [ "$(attr_extents "$1" "$2" '\$ATTRIBUTE_LIST')" -ge 1 ]; }
expect_cat() { # IMG PATH HOST
  cmp -s <(ntfscat "$1" "$2") "$3" || die "$1: ntfscat $2 differs from what was written"
}

build_aged() {
  local img=$1
  new_volume "$img" $((64 << 20)) 4096 Aged
  blocks "$W/SYSTEM" SYSTEM 2400000
  blocks "$W/target" target 300000
  cat > "$W/aged.script" <<EOF
d	/Windows/System32/config
hold	mft	0
hold	data	0
files	/Windows/Temp	4000	tmp-file-number-
f	/Windows/System32/config/SYSTEM	$W/SYSTEM
files	/Windows/System32	3000	driver-file-with-a-long-name-
release
f	/Links/target.bin	$W/target
links	/Links/target.bin	/Links	400	hard-link-number-
EOF
  aged "$img" "$W/aged.script"
  has_attr_list "$img" '$MFT' || die "aged: the \$MFT has no attribute list"
  [ "$(attr_extents "$img" '$MFT' '\$DATA')" -ge 3 ] || die "aged: the \$MFT's \$DATA is not in 3+ extents"
  [ "$(attr_extents "$img" /Windows/System32/config/SYSTEM '\$DATA')" -ge 3 ] || die "aged: SYSTEM's \$DATA is not in 3+ extents"
  [ "$(attr_extents "$img" /Windows/System32 '\$INDEX_ALLOCATION')" -ge 2 ] || die "aged: System32's index is not in 2+ extents"
  has_attr_list "$img" /Links/target.bin || die "aged: target.bin has no attribute list"
  [ "$(ntfsls -p /Windows/System32 "$img" | wc -l)" -eq 3003 ] || die "aged: System32 does not list 3,000 files"
  expect_cat "$img" /Windows/System32/config/SYSTEM "$W/SYSTEM"
  expect_cat "$img" /Links/hard-link-number-399 "$W/target"
}

build_clusters() { # IMG CLUSTER
  local img=$1 c=$2
  new_volume "$img" $((16 << 20)) "$c" "C$c"
  blocks "$W/frag-$c" "frag$c" $((c * 600 < 2400000 ? c * 600 : 2400000))
  # Then 2,000 files grown on gaps of 9 clusters (512-byte clusters: a 1 KiB record is 2 of them,
  # a 4 KiB index block 8, which libntfs-3g must find in one free range): the $MFT gets runs of
  # odd lengths, so that records straddle runs.
  cat > "$W/c$c.script" <<EOF
files	/Dir	300	entry-number-
hold	data	0
hold	mft	0
f	/frag.bin	$W/frag-$c
release
hold	data	0	9
hold	mft	0	9
files	/Many	2000	many-
release
EOF
  aged "$img" "$W/c$c.script"
  [ "$(ntfsls -p /Dir "$img" | wc -l)" -eq 301 ] || die "clusters-$c: /Dir does not list 300 files"
  expect_cat "$img" /frag.bin "$W/frag-$c"
}

build_winsxs() {
  local img=$1
  new_volume "$img" $((1 << 30)) 4096 WinSxS
  printf 'mftzone\t60000\nd\t/Windows/WinSxS\nhold\tdata\t0\nfiles\t/Windows/WinSxS\t200000\tamd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.17763.1_none_\nrelease\n' > "$W/winsxs.script"
  aged "$img" "$W/winsxs.script"
  [ "$(attr_extents "$img" /Windows/WinSxS '\$INDEX_ALLOCATION')" -ge 10 ] || die "winsxs: the index is not in 10+ extents"
  [ "$(ntfsls -p /Windows/WinSxS "$img" | wc -l)" -eq 200002 ] || die "winsxs: does not list 200,000 entries"
}

build_links() {
  local img=$1
  new_volume "$img" $((16 << 20)) 4096 Links
  blocks "$W/target" target 300000
  printf 'f\t/Links/target.bin\t%s\nlinks\t/Links/target.bin\t/Links\t400\thard-link-number-\n' "$W/target" > "$W/links.script"
  aged "$img" "$W/links.script"
  has_attr_list "$img" /Links/target.bin || die "links: target.bin has no attribute list"
}

build() { # OUTDIR NAME
  local out=$1 name=$2
  case $name in
    aged) build_aged "$out/$name.img" ;;
    clusters-*) build_clusters "$out/$name.img" "${name#clusters-}" ;;
    winsxs) build_winsxs "$out/$name.img" ;;
    links) build_links "$out/$name.img" ;;
    *) die "unknown volume $name" ;;
  esac
}

if [ "${1:-}" = --crate-testdata ]; then
  td=$ROOT/vendor/ntfs/testdata
  for v in aged clusters-512 clusters-65536; do
    build "$W" "$v"
    xz -T1 -9 -c "$W/$v.img" > "$td/$v.img.xz"
    printf '%s.img.xz: %s bytes\n' "$v" "$(stat -c %s "$td/$v.img.xz")"
  done
  exit 0
fi
[ $# -ge 2 ] || die "usage: $0 OUTDIR VOLUME... | --crate-testdata"
out=$1; shift
mkdir -p "$out"
for v in "$@"; do build "$out" "$v"; done
