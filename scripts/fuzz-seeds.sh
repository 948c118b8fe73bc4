#!/bin/sh
# Build small seed corpora for the cargo-fuzz targets from the committed fixtures.
# Output: fuzz/corpus/<target>/ (not committed; see fuzz/.gitignore). Every seed is at most 1 MiB.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
fx=$root/fixtures
out=$root/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"/qcow2 "$out"/vhd "$out"/vmdk_sparse "$out"/vmdk_descriptor "$out"/mbr_gpt "$out"/ntfs "$out"/hive "$out"/bcd "$out"/nbd_server "$out"/nbd_client

head1m() { head -c 1048576; }

# Containers: their first MiB (headers and first tables), and small whole images made by qemu-img.
xz -dc "$fx/good-mbr.qcow2.xz" | head1m > "$out/qcow2/good-mbr-head"
head -c 1048576 "$fx/good-mbr.compressed.qcow2" > "$out/qcow2/compressed-head"
xz -dc "$fx/good-mbr.vpc-dynamic.vhd.xz" | head1m > "$out/vhd/dynamic-head"
xz -dc "$fx/good-mbr.vpc-fixed.vhd.xz" | tail -c 512 > "$out/vhd/fixed-footer"
xz -dc "$fx/good-mbr.monolithicSparse.vmdk.xz" | head1m > "$out/vmdk_sparse/sparse-head"
head -c 1048576 "$fx/good-mbr.streamOptimized.vmdk" > "$out/vmdk_sparse/stream-head"
if command -v qemu-img >/dev/null; then
    for o in "" "-o cluster_size=512" "-o compat=0.10" "-o lazy_refcounts=on,cluster_size=4096"; do
        n=$(echo "x$o" | tr -c 'a-z0-9' '_')
        # shellcheck disable=SC2086
        qemu-img create -q -f qcow2 $o "$tmp/q$n.qcow2" 4M && cp "$tmp/q$n.qcow2" "$out/qcow2/small$n"
    done
    qemu-img create -q -f qcow2 "$tmp/base.qcow2" 4M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$tmp/ovl.qcow2" && cp "$tmp/ovl.qcow2" "$out/qcow2/overlay"
    qemu-img create -q -f vpc "$tmp/d.vhd" 4M && cp "$tmp/d.vhd" "$out/vhd/small-dynamic"
    qemu-img create -q -f vpc -o subformat=fixed "$tmp/f.vhd" 1M && cp "$tmp/f.vhd" "$out/vhd/small-fixed"
    qemu-img create -q -f vpc -b d.vhd -F vpc "$tmp/diff.vhd" 2>/dev/null && cp "$tmp/diff.vhd" "$out/vhd/differencing" || true
    qemu-img create -q -f vmdk "$tmp/s.vmdk" 4M && cp "$tmp/s.vmdk" "$out/vmdk_sparse/small-sparse"
    qemu-img create -q -f vmdk -o subformat=streamOptimized "$tmp/st.vmdk" 4M && cp "$tmp/st.vmdk" "$out/vmdk_sparse/small-stream"
    for sub in monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
        qemu-img create -q -f vmdk -o subformat=$sub "$tmp/$sub.vmdk" 4M && cp "$tmp/$sub.vmdk" "$out/vmdk_descriptor/$sub"
    done
fi
# Embedded descriptor of the sparse fixture (sector 1 onwards), as a stand-alone descriptor.
xz -dc "$fx/good-mbr.monolithicSparse.vmdk.xz" | dd bs=512 skip=1 count=2 2>/dev/null | tr -d '\000' > "$out/vmdk_descriptor/embedded"

# Partition tables: the first MiB and the last 64 KiB (backup GPT) of the partitioned fixtures.
for f in good-mbr gpt efi hybrid-mbr overlap past-end dynamic-ldm fat-first zeros-first odd-size; do
    [ -f "$fx/$f.raw.xz" ] || continue
    xz -dc "$fx/$f.raw.xz" > "$tmp/d.raw"
    head -c 65536 "$tmp/d.raw" > "$out/mbr_gpt/$f"
done
# NTFS: the first MiB of the partition of a few fixture disks (boot sector, $MFT start).
for f in good-mbr bitlocker bad-bootsector bad-mft-record hibernated; do
    [ -f "$fx/$f.raw.xz" ] || continue
    xz -dc "$fx/$f.raw.xz" | dd bs=1048576 skip=1 count=1 iflag=fullblock 2>/dev/null > "$out/ntfs/$f"
done
# Hives: the small ones as they are; the big ones only when under 1 MiB.
for d in "$fx"/hives/*/; do
    n=$(basename "$d")
    for h in SYSTEM SOFTWARE; do
        if [ -f "$d/$h.xz" ]; then xz -dc "$d/$h.xz" > "$tmp/h"; elif [ -f "$d/$h" ]; then cp "$d/$h" "$tmp/h"; else continue; fi
        [ "$(wc -c < "$tmp/h")" -le 1048576 ] && cp "$tmp/h" "$out/hive/$n-$h"
    done
done
cp "$fx/realdata/hivex-minimal-hive" "$out/hive/"
cp "$fx/realdata/win10-bios-BCD" "$out/bcd/"
xz -dc "$fx/realdata/uefi-BCD.xz" > "$out/bcd/uefi-BCD"
xz -dc "$fx/realdata/win7-vmware-SYSTEM.xz" > "$tmp/h"
[ "$(wc -c < "$tmp/h")" -le 1048576 ] && cp "$tmp/h" "$out/hive/win7-vmware-SYSTEM" || true
# NBD: real conversations, recorded between imgcheck serve and its clients (imgcheck's own,
# qemu-img, nbdinfo when installed) by scripts/nbd-record.py. The client's bytes seed
# nbd_server, the server's bytes seed nbd_client.
img=$root/target/release/imgcheck
[ -x "$img" ] || img=$root/target/debug/imgcheck
if [ -x "$img" ]; then
    qemu-img create -q -f qcow2 "$tmp/n.qcow2" 1M 2>/dev/null && qemu-io -c "write -P 7 0 64k" "$tmp/n.qcow2" >/dev/null 2>&1 || true
    "$img" serve --unix "$tmp/up.sock" --export-name disk "$tmp/n.qcow2" > "$tmp/serve.out" 2>/dev/null &
    spid=$!
    python3 "$root/scripts/nbd-record.py" "$tmp/up.sock" "$tmp/rec.sock" "$tmp/rec" &
    rpid=$!
    i=0; while [ ! -S "$tmp/rec.sock" ] || [ ! -S "$tmp/up.sock" ]; do sleep 0.1; i=$((i+1)); [ $i -gt 50 ] && break; done
    u="nbd+unix:///disk?socket=$tmp/rec.sock"
    "$img" info "$u" >/dev/null 2>&1 || true
    "$img" verify "$u" >/dev/null 2>&1 || true
    if command -v qemu-img >/dev/null; then
        qemu-img info "$u" >/dev/null 2>&1 || true
        qemu-img map --output=json "$u" >/dev/null 2>&1 || true
        qemu-img convert -O raw "$u" "$tmp/copy.raw" >/dev/null 2>&1 || true
        qemu-io -r -f raw -c "read 0 4k" -c "write 0 512" "$u" >/dev/null 2>&1 || true
    fi
    if command -v nbdinfo >/dev/null; then
        nbdinfo --list "$u" >/dev/null 2>&1 || true
        nbdinfo --map "$u" >/dev/null 2>&1 || true
    fi
    sleep 0.5
    kill $rpid $spid 2>/dev/null; wait $rpid $spid 2>/dev/null
    for f in "$tmp"/rec/client-*; do [ -s "$f" ] && head -c 65536 "$f" > "$out/nbd_server/$(basename "$f")"; done
    for f in "$tmp"/rec/server-*; do [ -s "$f" ] && head -c 65536 "$f" > "$out/nbd_client/$(basename "$f")"; done
fi
for t in "$out"/*/; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds"; done
