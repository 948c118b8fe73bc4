#!/usr/bin/env bash
# make-fixtures.sh: build the Windows-like test disks under fixtures/ (see fixtures/README.md).
#
#   scripts/make-fixtures.sh            rebuild every fixture (about a minute)
#
# No root, no mount, no network beyond apt-get for missing tools. Everything is made with real
# tools, offline, in plain files:
#   - partition tables: sfdisk (MBR and GPT; fixed disk and partition IDs), sgdisk -h (hybrid MBR);
#   - NTFS: mkntfs -T (byte-deterministic) on a file per partition, filled by ntfsput (a small C
#     program against libntfs-3g, scripts/fixtures/ntfsput.c, compiled here), then copied into the
#     disk at its offset with dd conv=notrunc,sparse;
#   - FAT: mkfs.fat with a fixed volume ID, mtools (mmd/mcopy) for files;
#   - registry hives: hivexregedit --merge of scripts/fixtures/reg/*.reg onto a copy of hivex's
#     minimal hive (fixtures/realdata/hivex-minimal-hive), read back with hivexsh;
#   - BCD stores: real ones from fixtures/realdata/ (win10-bios-BCD, uefi-BCD.xz);
#   - byte-level breakage no tool makes (bad fixup, BPB, BitLocker header, PRIVHEAD, bad MBR
#     entries): scripts/fixtures/patch.py, which finds offsets by parsing the structures;
#   - containers: qemu-img convert.
# faketime freezes the clock around ntfs-3g, hivex, mkfs.fat, mtools and qemu-img, so running the
# script twice gives the same bytes, except that VHD and VMDK carry a random UUID/CID, which
# patch.py then sets to fixed values (VHD checksums redone).
# Every output is checked with independent tools (sfdisk --dump, ntfsls/ntfscat/ntfsinfo on the
# partition, hivexsh, qemu-img info/check/compare); any mismatch stops the script with an error.
set -euo pipefail
export LC_ALL=C TZ=UTC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/scripts/fixtures
REG=$SRC/reg
OUT=$ROOT/fixtures
REALDATA=$OUT/realdata
FAKETIME_AT='2024-03-01 12:00:00'

say() { printf '== [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'make-fixtures: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools
need_tools() {
  local -A pkg=([mkntfs]=ntfs-3g [ntfsls]=ntfs-3g [hivexsh]=libhivex-bin [hivexregedit]=libwin-hivex-perl
    [faketime]=faketime [sfdisk]=fdisk [sgdisk]=gdisk [mkfs.fat]=dosfstools [mcopy]=mtools [xz]=xz-utils
    [gcc]=gcc [pkg-config]=pkg-config [qemu-img]=qemu-utils [python3]=python3)
  local missing=() t
  for t in "${!pkg[@]}"; do command -v "$t" >/dev/null || missing+=("${pkg[$t]}"); done
  [ -e /usr/include/ntfs-3g/volume.h ] || missing+=(ntfs-3g-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]} (run as root once, or install them)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
  fi
}

FT() { faketime -f "$FAKETIME_AT" "$@"; }

# ---------------------------------------------------------------------------------------------
# Real data (copied once from the shared folder, then used from fixtures/realdata/)
realdata() {
  mkdir -p "$REALDATA"
  local shared="" d
  for d in "${IMGCHECK_REALDATA:-}" "$ROOT/../shared/realdata" "$ROOT/../../shared/realdata"; do
    [ -n "$d" ] && [ -e "$d/hivex-minimal-hive" ] && { shared=$d; break; }
  done
  local f
  for f in hivex-minimal-hive LICENSE.hivex README.hivex-images win10-bios-BCD LICENSE.windeploy-linux \
           uefi-BCD.xz LICENSE.regipy; do
    if [ ! -e "$REALDATA/$f" ]; then
      [ -n "$shared" ] || die "fixtures/realdata/$f missing and no shared realdata folder found (set IMGCHECK_REALDATA)"
      cp "$shared/$f" "$REALDATA/$f"
      chmod 644 "$REALDATA/$f"
    fi
  done
  xz -dc "$REALDATA/uefi-BCD.xz" > "$W/uefi-BCD"
  cp "$REALDATA/win10-bios-BCD" "$W/bios-BCD"
  # The BCD stores must say what we rely on (hivexml reads them independently): the 12000002
  # (application path) elements name winload.exe in the BIOS store and winload.efi in the UEFI one.
  bcd_loaders "$W/bios-BCD" | grep -qx 'winload.exe' || die "bios-BCD names no winload.exe"
  bcd_loaders "$W/bios-BCD" | grep -qx 'winload.efi' && die "bios-BCD names winload.efi"
  bcd_loaders "$W/uefi-BCD" | grep -qx 'winload.efi' || die "uefi-BCD names no winload.efi"
  return 0
}
bcd_loaders() { hivexml "$1" | grep -oiE 'value="[^"]*\\system32\\winload\.(exe|efi)"' | sed -E 's/.*\\//; s/"$//' | tr A-Z a-z | sort -u; }

# ---------------------------------------------------------------------------------------------
# Hives

# MountedDevices for an MBR disk: \DosDevices\C: = 4-byte disk signature + 8-byte byte offset (LE).
mounted_devices_reg() { # SIG(hex, 8 digits) OFFSET(bytes) > file
  local sig=$1 off=$2 le s=""
  le=$(printf '%08x' "0x$sig" | sed -E 's/(..)(..)(..)(..)/\4,\3,\2,\1/')
  local i o
  o=$(printf '%016x' "$off")
  for i in 14 12 10 8 6 4 2 0; do s+="${o:$i:2},"; done
  s=${s%,}
  printf 'Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\MountedDevices]\n'
  printf '"\\\\DosDevices\\\\C:"=hex:%s,%s\n' "$le" "$s"
  printf '"\\\\??\\\\Volume{3f2504e0-4f89-11d3-9a0c-0305e82c3301}"=hex:%s,%s\n\n' "$le" "$s"
}

# make_hive OUT PREFIX FRAGMENT...   (fragments are names in scripts/fixtures/reg or paths)
make_hive() {
  local out=$1 prefix=$2; shift 2
  local files=() f
  for f in "$@"; do
    if [ -e "$f" ]; then files+=("$f"); else files+=("$REG/$f.reg"); fi
  done
  cp "$REALDATA/hivex-minimal-hive" "$out"
  chmod 644 "$out"
  FT hivexregedit --merge --prefix "$prefix" --encoding UTF-16LE "$out" "${files[@]}" \
    || die "hivexregedit failed on $out (${files[*]})"
}

# hive_get HIVE 'Key\Path' VALUE  -> hivexsh's rendering of the value ("" if absent)
hive_get() {
  { printf 'cd %s\nlsval\n' "$2" | hivexsh "$1" 2>/dev/null || true; } | sed -n "s/^\"$3\"=//Ip" | head -1
}
expect_val() { # HIVE KEY VALUE EXPECTED-REGEX (empty regex: value must be absent)
  local got
  got=$(hive_get "$1" "$2" "$3")
  if [ -z "$4" ]; then
    [ -z "$got" ] || die "$1: $2\\$3 should be absent, is $got"
  else
    grep -qiE -- "$4" <<<"$got" || die "$1: $2\\$3 is '${got}', expected /$4/"
  fi
}
expect_no_key() { # HIVE KEY
  if printf 'cd %s\n' "$2" | hivexsh "$1" >/dev/null 2>&1; then
    die "$1: key $2 should not exist"
  fi
}

# Hive variants. Each sets SYS (fragments of SYSTEM), SW (of SOFTWARE) and FILES (what the volume
# holds besides the common Windows files): virtio-sys virtio-store netkvm-sys cloudbase vmware xen
# vbox parallels.
SYS_GOOD="system-base system-driverdb system-virtio-storage system-virtio-cddb system-virtio-driverdb system-netkvm system-netkvm-driverdb system-cloudbase-init"
SW_GOOD="software-base software-cloudbase-init software-virtio"
FILES_GOOD="virtio-sys virtio-store netkvm-sys cloudbase"
HIVE_VARIANTS="good no-virtio virtio-demand virtio-sys-missing virtio-staged virtio-unbound no-netkvm
  no-cloudbase vmware vmware-disabled xen xen-disabled vbox vbox-disabled parallels parallels-disabled
  ws2019 ws2008r2 pending-rename fast-startup static-ip rtu controlset2 dirty-log
  virtio-startoverride filter-missing filter-disabled remnant"
variant() {
  SYS=$SYS_GOOD SW=$SW_GOOD FILES=$FILES_GOOD
  case $1 in
    good) ;;
    no-virtio) SYS="system-base system-driverdb system-cloudbase-init"; SW="software-base software-cloudbase-init"; FILES=cloudbase ;;
    virtio-demand) SYS+=" system-virtio-storage-demand" ;;
    virtio-sys-missing) FILES="virtio-store netkvm-sys cloudbase" ;;
    virtio-staged) SYS="system-base system-driverdb system-virtio-driverdb system-netkvm-driverdb system-cloudbase-init"
      SW="software-base software-cloudbase-init"; FILES="virtio-store cloudbase" ;;
    virtio-unbound) SYS="system-base system-driverdb system-virtio-storage system-netkvm system-netkvm-driverdb system-cloudbase-init" ;;
    no-netkvm) SYS="system-base system-driverdb system-virtio-storage system-virtio-cddb system-virtio-driverdb system-cloudbase-init"
      FILES="virtio-sys virtio-store cloudbase" ;;
    no-cloudbase) SYS="system-base system-driverdb system-virtio-storage system-virtio-cddb system-virtio-driverdb system-netkvm system-netkvm-driverdb"
      SW="software-base software-virtio"; FILES="virtio-sys virtio-store netkvm-sys" ;;
    vmware|xen|vbox|parallels) SYS+=" system-$1"; SW+=" software-$1"; FILES+=" $1" ;;
    vmware-disabled|xen-disabled|vbox-disabled|parallels-disabled)
      SYS+=" system-${1%-disabled} system-$1"; FILES+=" ${1%-disabled}" ;;
    ws2019) SYS+=" system-ws2019"; SW+=" software-ws2019" ;;
    ws2008r2) SYS="system-base system-virtio-storage system-virtio-cddb system-netkvm system-cloudbase-init system-ws2008r2"
      SW+=" software-ws2008r2" ;;
    pending-rename|fast-startup|static-ip|rtu) SYS+=" system-$1" ;;
    controlset2) ;;   # see build_hives: the good set as ControlSet002, a stale ControlSet001
    dirty-log) SYS+=" system-virtio-storage-demand" ;;  # the primary; the log makes it good
    virtio-startoverride|filter-missing|filter-disabled|remnant) SYS+=" system-$1" ;;
    *) die "unknown variant $1" ;;
  esac
}

# build_hives VARIANT SIG OFFSET DIR: SYSTEM and SOFTWARE of VARIANT for a C: at OFFSET of disk SIG
build_hives() {
  local v=$1 sig=$2 off=$3 dir=$4
  variant "$v"
  mkdir -p "$dir"
  mounted_devices_reg "$sig" "$off" > "$dir/mounted.reg"
  local sys_frags=$SYS f
  if [ "$v" = controlset2 ]; then
    # ControlSet001: a stale set without Virtio and cloudbase-init; ControlSet002: the good set;
    # Select\Current=2. A reader that assumes ControlSet001 finds no Virtio.
    for f in $SYS_GOOD; do sed 's/ControlSet001/ControlSet002/g' "$REG/$f.reg"; echo; done > "$dir/cs2.reg"
    printf 'Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n"Current"=dword:00000002\n"Default"=dword:00000002\n"LastKnownGood"=dword:00000001\n\n' > "$dir/select2.reg"
    sys_frags="system-base system-driverdb $dir/cs2.reg $dir/select2.reg"
  fi
  # shellcheck disable=SC2086
  make_hive "$dir/SYSTEM" 'HKEY_LOCAL_MACHINE\SYSTEM' $sys_frags "$dir/mounted.reg"
  # shellcheck disable=SC2086
  make_hive "$dir/SOFTWARE" 'HKEY_LOCAL_MACHINE\SOFTWARE' $SW
  if [ "$v" = dirty-log ]; then
    # The primary SYSTEM says viostor/vioscsi Start=3; SYSTEM.LOG1 holds the page in which
    # Windows set them to 0 (boot) before the export, not yet written back to the primary.
    cp "$dir/SYSTEM" "$dir/SYSTEM.before"
    cp "$dir/SYSTEM" "$dir/SYSTEM.after"
    python3 "$SRC/patch.py" hive-set-dword "$dir/SYSTEM.after" 'ControlSet001\Services\viostor' Start 0 >/dev/null
    python3 "$SRC/patch.py" hive-set-dword "$dir/SYSTEM.after" 'ControlSet001\Services\vioscsi' Start 0 >/dev/null
    expect_val "$dir/SYSTEM.after" 'ControlSet001\Services\viostor' Start 'dword:0*0$'
    python3 "$SRC/patch.py" hive-log "$dir/SYSTEM.before" "$dir/SYSTEM.after" "$dir/SYSTEM" "$dir/SYSTEM.LOG1" >/dev/null
    : > "$dir/SYSTEM.LOG2"
    [ "$(od -An -tu4 -j4 -N8 "$dir/SYSTEM" | awk '{print ($1 != $2)}')" = 1 ] || die "dirty-log: primary not dirty"
    head -c 4 "$dir/SYSTEM.LOG1" | grep -q regf && [ "$(dd if="$dir/SYSTEM.LOG1" bs=512 skip=1 count=1 status=none | head -c 4)" = HvLE ] \
      || die "dirty-log: LOG1 is not a new-format log"
    # Independent replay when regipy happens to be installed (it is not required).
    if python3 -c 'import regipy' 2>/dev/null; then
      python3 - "$dir" <<'PY' || die "dirty-log: regipy's replay does not give the intended hive"
import sys
from regipy.recovery import apply_transaction_logs
d = sys.argv[1]
apply_transaction_logs(d + "/SYSTEM", d + "/SYSTEM.LOG1", restored_hive_path=d + "/restored")
assert open(d + "/restored", "rb").read()[4096:] == open(d + "/SYSTEM.after", "rb").read()[4096:]
PY
    fi
    rm -f "$dir/SYSTEM.before" "$dir/SYSTEM.after" "$dir/restored"
  fi
  check_hives "$v" "$dir/SYSTEM" "$dir/SOFTWARE"
}

# Read every hive back with hivexsh and check what its variant is about.
check_hives() {
  local v=$1 S=$2 W_=$3 cs='ControlSet001'
  if [ "$v" = controlset2 ]; then
    cs=ControlSet002
    expect_val "$S" 'Select' Current 'dword:0*2$'
    expect_no_key "$S" 'ControlSet001\Services\viostor'
    expect_no_key "$S" 'ControlSet001\Services\cloudbase-init'
  else
    expect_val "$S" 'Select' Current 'dword:0*1$'
  fi
  expect_val "$S" "$cs\\Control\\Session Manager\\Environment" PROCESSOR_ARCHITECTURE 'AMD64'
  expect_val "$S" "$cs\\Control\\TimeZoneInformation" TimeZoneKeyName 'W. Europe Standard Time'
  expect_val "$S" 'MountedDevices' '\\\\DosDevices\\\\C:' '^hex\(3\):([0-9a-f]{2},){11}[0-9a-f]{2}$'
  expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' InstallationType 'Server'
  local vs=yes vstart=0 bound=yes nk=yes cb=yes
  case $v in
    no-virtio) vs=no bound=no nk=no ;;
    virtio-demand|dirty-log) vstart=3 ;;   # dirty-log: what the primary alone says
    virtio-staged) vs=no nk=no ;;
    virtio-unbound) bound=no ;;
    no-netkvm) nk=no ;;
    no-cloudbase) cb=no ;;
  esac
  if [ $vs = yes ]; then
    expect_val "$S" "$cs\\Services\\viostor" Start "dword:0*$vstart\$"
    expect_val "$S" "$cs\\Services\\viostor" ImagePath 'str\(2\):"system32\\\\DRIVERS\\\\viostor.sys"'
    expect_val "$S" "$cs\\Services\\vioscsi" Start "dword:0*$vstart\$"
  else
    expect_no_key "$S" "$cs\\Services\\viostor"
    expect_no_key "$S" "$cs\\Services\\vioscsi"
  fi
  if [ $bound = yes ]; then
    case $v in
      ws2008r2) expect_no_key "$S" 'DriverDatabase' ;;
      *) expect_val "$S" 'DriverDatabase\DeviceIds\PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00' oem3.inf 'hex\(3\):01,ff,00,00'
         expect_val "$S" 'DriverDatabase\DriverInfFiles\oem3.inf' Active 'viostor\.inf_amd64_' ;;
    esac
    case $v in
      virtio-staged) expect_no_key "$S" "$cs\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001" ;;
      *) expect_val "$S" "$cs\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001&subsys_00021af4&rev_00" Service 'viostor' ;;
    esac
  else
    expect_no_key "$S" 'DriverDatabase\DeviceIds\PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00'
    expect_no_key "$S" "$cs\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001"
  fi
  if [ $nk = yes ]; then expect_val "$S" "$cs\\Services\\netkvm" Start 'dword:0*3$'
  else expect_no_key "$S" "$cs\\Services\\netkvm"; fi
  if [ $cb = yes ]; then
    expect_val "$S" "$cs\\Services\\cloudbase-init" Start 'dword:0*2$'
    expect_val "$W_" 'Microsoft\Windows\CurrentVersion\Uninstall\{A7F3B1C2-6D4E-4F58-9B0A-1C2D3E4F5A6B}' DisplayName 'Cloudbase-Init 1\.1\.4'
  else
    expect_no_key "$S" "$cs\\Services\\cloudbase-init"
    expect_no_key "$W_" 'Microsoft\Windows\CurrentVersion\Uninstall\{A7F3B1C2-6D4E-4F58-9B0A-1C2D3E4F5A6B}'
  fi
  case $v in
    vmware) expect_val "$S" "$cs\\Services\\vmci" Start 'dword:0*0$'
      expect_val "$S" "$cs\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}" LowerFilters 'hex\(7\):76,00,6d,00'
      expect_val "$W_" 'Microsoft\Windows\CurrentVersion\Uninstall\{E9C2A6B5-0A8C-4B2B-9C8F-1C5B3E1F0D2A}' DisplayName 'VMware Tools' ;;
    vmware-disabled) expect_val "$S" "$cs\\Services\\vmci" Start 'dword:0*4$'
      expect_val "$S" "$cs\\Services\\VMTools" Start 'dword:0*4$'
      expect_val "$S" "$cs\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}" LowerFilters ''
      expect_no_key "$W_" 'Microsoft\Windows\CurrentVersion\Uninstall\{E9C2A6B5-0A8C-4B2B-9C8F-1C5B3E1F0D2A}' ;;
    xen) expect_val "$S" "$cs\\Services\\xenvbd" Start 'dword:0*0$' ;;
    xen-disabled) expect_val "$S" "$cs\\Services\\xenvbd" Start 'dword:0*4$'
      expect_val "$S" "$cs\\Control\\Class\\{4d36e97d-e325-11ce-bfc1-08002be10318}" UpperFilters '' ;;
    vbox) expect_val "$S" "$cs\\Services\\VBoxGuest" Start 'dword:0*0$' ;;
    vbox-disabled) expect_val "$S" "$cs\\Services\\VBoxGuest" Start 'dword:0*4$' ;;
    parallels) expect_val "$S" "$cs\\Services\\prl_strg" Start 'dword:0*0$' ;;
    parallels-disabled) expect_val "$S" "$cs\\Services\\prl_fs" Start 'dword:0*4$' ;;
    ws2019) expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' CurrentMajorVersionNumber 'dword:0*a$'
      expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' CurrentBuildNumber '"17763"' ;;
    ws2008r2) expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' CurrentVersion '"6\.1"'
      expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' UBR '' ;;
    pending-rename) expect_val "$S" "$cs\\Control\\Session Manager" PendingFileRenameOperations '^hex\(7\):5c,00,3f,00' ;;
    fast-startup) expect_val "$S" "$cs\\Control\\Session Manager\\Power" HiberbootEnabled 'dword:0*1$' ;;
    static-ip) expect_val "$S" "$cs\\Services\\Tcpip\\Parameters\\Interfaces\\{6a1f0c3e-8e4b-4d2a-9c1e-2f5b7d9a0c11}" EnableDHCP 'dword:0*$' ;;
    rtu) expect_val "$S" "$cs\\Control\\TimeZoneInformation" RealTimeIsUniversal 'dword:0*1$' ;;
    virtio-startoverride) expect_val "$S" "$cs\\Services\\viostor\\StartOverride" 0 'dword:0*3$'
      expect_val "$S" "$cs\\Services\\vioscsi\\StartOverride" 0 'dword:0*3$' ;;
    filter-missing) expect_val "$S" "$cs\\Control\\Class\\{4d36e967-e325-11ce-bfc1-08002be10318}" UpperFilters \
        '^hex\(7\):70,00,61,00,72,00,74,00,6d,00,67,00,72,00,00,00,73,00,6e,00,61,00,70,00,6d,00,61,00,6e,00,00,00,00,00$'
      expect_no_key "$S" "$cs\\Services\\snapman" ;;
    filter-disabled) expect_val "$S" "$cs\\Control\\Class\\{4d36e97b-e325-11ce-bfc1-08002be10318}" LowerFilters '^hex\(7\):73,00,70,00,74,00,64,00,00,00,00,00$'
      expect_val "$S" "$cs\\Services\\sptd" Start 'dword:0*4$' ;;
    remnant) expect_val "$S" "$cs\\Services\\pvscsi" vwdk.installers '^hex\(7\):'
      expect_val "$S" "$cs\\Services\\pvscsi" Start ''
      expect_val "$S" "$cs\\Services\\pvscsi" Type ''
      expect_val "$S" "$cs\\Services\\pvscsi" ImagePath '' ;;
    *) expect_val "$S" "$cs\\Control\\Session Manager" PendingFileRenameOperations ''
       expect_val "$S" "$cs\\Control\\TimeZoneInformation" RealTimeIsUniversal '' ;;
  esac
  case $v in
    ws2019) ;;
    ws2008r2) expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' ProductName 'Windows Server 2008 R2 Standard' ;;
    *) expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' ProductName 'Windows Server 2012 R2 Standard'
       expect_val "$W_" 'Microsoft\Windows NT\CurrentVersion' CurrentMajorVersionNumber '' ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Files that go on the volumes

# fake_pe OUT NAME: a small file that starts like a PE image (MZ, e_lfanew, PE\0\0), 1 KiB.
fake_pe() {
  {
    printf 'MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00'
    head -c $((0x3c - 16)) /dev/zero
    printf '\x80\x00\x00\x00'
    printf 'This program cannot be run in DOS mode.\r\r\n$'
    head -c $((0x80 - 0x40 - 43)) /dev/zero
    printf 'PE\x00\x00\x64\x86'
    printf 'imgcheck test fixture: %s (not a real executable)' "$2"
  } > "$1"
  truncate -s 1024 "$1"
}

make_payload() {
  P=$W/payload
  mkdir -p "$P"
  local n
  for n in bootmgr cmd.exe winload.exe ntoskrnl.exe hal.dll disk.sys partmgr.sys volmgr.sys atapi.sys \
           tcpip.sys vmbus.sys VMBusHID.sys viostor.sys vioscsi.sys netkvm.sys OpenStackService.exe \
           cloudbase-init.exe python.exe vmtoolsd.exe vmci.sys vsock.sys vmhgfs.sys vm3dmp.sys vmmouse.sys \
           vmrawdsk.sys vmmemctl.sys vmxnet3.sys pvscsii.sys xenbus.sys xenfilt.sys xenvbd.sys xenvif.sys \
           xennet.sys xeniface.sys XenGuestAgent.exe VBoxGuest.sys VBoxMouse.sys VBoxSF.sys VBoxService.exe \
           VBoxVideo.sys prl_strg.sys prl_fs.sys prl_tg.sys prl_eth5.sys prl_memdev.sys prl_tools_service.exe \
           bootmgfw.efi bootx64.efi; do
    fake_pe "$P/$n" "$n"
  done
  printf '[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=SCSIAdapter\r\nProvider=%%VENDOR%%\r\n; imgcheck fixture\r\n' > "$P/viostor.inf"
  sed 's/; imgcheck/; vioscsi, imgcheck/' "$P/viostor.inf" > "$P/vioscsi.inf"
  sed 's/SCSIAdapter/Net/' "$P/viostor.inf" > "$P/netkvm.inf"
  printf '[DEFAULT]\r\nusername=Admin\r\ngroups=Administrators\r\nmetadata_services=cloudbaseinit.metadata.services.httpservice.HttpService\r\n' > "$P/cloudbase-init.conf"
  { printf 'HIBR'; head -c 65532 /dev/zero; } > "$P/hiberfil.sys"
}

DS='/Windows/System32/DriverStore/FileRepository'
# windows_manifest FILES HIVEDIR [extra...]: ntfsput manifest of a C: volume
windows_manifest() {
  local files=" $1 " hd=$2 n
  printf 'd\t/Windows/Temp\nd\t/Users/Administrator\nd\t/PerfLogs\n'
  printf 'f\t/Windows/System32/config/SYSTEM\t%s\n' "$hd/SYSTEM"
  printf 'f\t/Windows/System32/config/SOFTWARE\t%s\n' "$hd/SOFTWARE"
  for n in SYSTEM.LOG1 SYSTEM.LOG2; do [ -e "$hd/$n" ] && printf 'f\t/Windows/System32/config/%s\t%s\n' "$n" "$hd/$n"; done
  for n in cmd.exe winload.exe ntoskrnl.exe hal.dll; do printf 'f\t/Windows/System32/%s\t%s\n' "$n" "$P/$n"; done
  for n in disk partmgr volmgr atapi tcpip vmbus VMBusHID; do printf 'f\t/Windows/System32/drivers/%s.sys\t%s\n' "$n" "$P/$n.sys"; done
  if [[ $files == *" virtio-sys "* ]]; then
    for n in viostor vioscsi; do printf 'f\t/Windows/System32/drivers/%s.sys\t%s\n' "$n" "$P/$n.sys"; done
  fi
  [[ $files == *" netkvm-sys "* ]] && printf 'f\t/Windows/System32/drivers/netkvm.sys\t%s\n' "$P/netkvm.sys"
  if [[ $files == *" virtio-store "* ]]; then
    printf 'f\t%s/viostor.inf_amd64_e1ad3e4d8f3cd1a6/viostor.%s\t%s\n' "$DS" inf "$P/viostor.inf" "$DS" sys "$P/viostor.sys"
    printf 'f\t%s/vioscsi.inf_amd64_4c2a1b8e9d7f0a35/vioscsi.%s\t%s\n' "$DS" inf "$P/vioscsi.inf" "$DS" sys "$P/vioscsi.sys"
    printf 'f\t%s/netkvm.inf_amd64_9b0e6f4d2c1a8e77/netkvm.%s\t%s\n' "$DS" inf "$P/netkvm.inf" "$DS" sys "$P/netkvm.sys"
    printf 'f\t/Windows/INF/oem3.inf\t%s\nf\t/Windows/INF/oem4.inf\t%s\nf\t/Windows/INF/oem2.inf\t%s\n' \
      "$P/viostor.inf" "$P/vioscsi.inf" "$P/netkvm.inf"
  fi
  if [[ $files == *" cloudbase "* ]]; then
    local cb='/Program Files/Cloudbase Solutions/Cloudbase-Init'
    printf 'f\t%s/bin/OpenStackService.exe\t%s\n' "$cb" "$P/OpenStackService.exe"
    printf 'f\t%s/Python/python.exe\t%s\n' "$cb" "$P/python.exe"
    printf 'f\t%s/Python/Scripts/cloudbase-init.exe\t%s\n' "$cb" "$P/cloudbase-init.exe"
    printf 'f\t%s/conf/cloudbase-init.conf\t%s\n' "$cb" "$P/cloudbase-init.conf"
    printf 'd\t%s/log\n' "$cb"
  fi
  if [[ $files == *" vmware "* ]]; then
    printf 'f\t/Program Files/VMware/VMware Tools/vmtoolsd.exe\t%s\n' "$P/vmtoolsd.exe"
    for n in vmci vsock vmhgfs vm3dmp vmmouse vmrawdsk vmmemctl vmxnet3 pvscsii; do
      printf 'f\t/Windows/System32/drivers/%s.sys\t%s\n' "$n" "$P/$n.sys"; done
  fi
  if [[ $files == *" xen "* ]]; then
    printf 'f\t/Program Files/Citrix/XenTools/XenGuestAgent.exe\t%s\n' "$P/XenGuestAgent.exe"
    for n in xenbus xenfilt xenvbd xenvif xennet xeniface; do printf 'f\t/Windows/System32/drivers/%s.sys\t%s\n' "$n" "$P/$n.sys"; done
  fi
  if [[ $files == *" vbox "* ]]; then
    printf 'f\t/Windows/System32/VBoxService.exe\t%s\n' "$P/VBoxService.exe"
    for n in VBoxGuest VBoxMouse VBoxSF VBoxVideo; do printf 'f\t/Windows/System32/drivers/%s.sys\t%s\n' "$n" "$P/$n.sys"; done
  fi
  if [[ $files == *" parallels "* ]]; then
    printf 'f\t/Program Files/Parallels/Parallels Tools/Services/prl_tools_service.exe\t%s\n' "$P/prl_tools_service.exe"
    for n in prl_strg prl_fs prl_tg prl_eth5 prl_memdev; do printf 'f\t/Windows/System32/drivers/%s.sys\t%s\n' "$n" "$P/$n.sys"; done
  fi
  [[ $files == *" hiberfil "* ]] && printf 'f\t/hiberfil.sys\t%s\n' "$P/hiberfil.sys"
  return 0
}
boot_manifest() { # BCDFILE
  printf 'f\t/bootmgr\t%s\nf\t/Boot/BCD\t%s\nd\t/Boot/en-US\n' "$P/bootmgr" "$1"
}

# ---------------------------------------------------------------------------------------------
# Volumes and disks
MiB=1048576

# make_ntfs PARTFILE SECTORS HIDDEN LABEL MANIFEST
make_ntfs() {
  local part=$1 sectors=$2 hidden=$3 label=$4 man=$5
  rm -f "$part"
  truncate -s $((sectors * 512)) "$part"
  mkntfs -Q -F -T -q -s 512 -c 4096 -p "$hidden" -H 255 -S 63 -L "$label" "$part" >/dev/null 2>&1 \
    || die "mkntfs failed on $part"
  FT "$W/ntfsput" "$part" < "$man" || die "ntfsput failed on $part"
  check_ntfs "$part" "$man"
}

# Check a volume with ntfs-3g's own readers: `ntfsls -R` must list every path of the manifest
# (and exactly those, besides NTFS's $-files and System Volume Information), and `ntfscat` must
# read back every file bigger than the 1 KiB fake executables (hives, BCD, hiberfil.sys)
# byte for byte; with FULL=1 every file.
check_ntfs() {
  local part=$1 man=$2 full=${3:-0} force="" kind path host
  grep -qx dirty "$man" && force=-f   # ntfs-3g refuses a dirty volume without --force
  ntfsls $force -R "$part" 2>/dev/null | awk '
    /^\/.*:$/ { dir = substr($0, 1, length($0) - 1); if (dir == "/") dir = ""; next }
    $0 == "." || $0 == ".." || $0 == "" { next }
    { print dir "/" $0 }' | sort > "$part.ls" || die "$part: ntfsls -R failed"
  grep -v -e '^#' -e '^dirty$' "$man" | cut -f2 | awk '{
      n = split($0, c, "/"); p = ""
      for (i = 2; i <= n; i++) { p = p "/" c[i]; print p } }' | sort -u > "$part.want"
  cmp -s "$part.ls" "$part.want" || die "$part: ntfsls -R lists other names than the manifest:
$(diff "$part.want" "$part.ls" | head -20)"
  while IFS=$'\t' read -r kind path host; do
    [ "$kind" = f ] || continue
    [ "$full" = 1 ] || [ "$(stat -c %s "$host")" -gt 1024 ] || continue
    cmp -s <(ntfscat $force "$part" "$path" 2>/dev/null) "$host" || die "$part: ntfscat $path differs from $host"
  done < <(grep -v -e '^#' -e '^dirty$' "$man")
  rm -f "$part.ls" "$part.want"
}

# new_disk FILE BYTES SFDISK-SCRIPT
new_disk() {
  rm -f "$1"
  truncate -s "$2" "$1"
  [ -z "$3" ] || sfdisk -q --no-reread --no-tell-kernel "$1" <<<"$3" >/dev/null || die "sfdisk failed on $1"
}
put_part() { # DISK PARTFILE START-SECTOR
  dd if="$2" of="$1" bs=1M seek=$(($3 * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
}
# expect_table DISK REGEX...: sfdisk --dump must match every regex
expect_table() {
  local d=$1 dump; shift
  dump=$(sfdisk --dump "$d" 2>/dev/null) || die "$d: sfdisk --dump failed"
  local r
  for r in "$@"; do grep -qE -- "$r" <<<"$dump" || die "$d: sfdisk --dump lacks /$r/:
$dump"; done
}

# store FILE NAME: xz it into fixtures/NAME.xz, in the background (two at a time; `finish` waits).
# Single-threaded xz gives the same bytes for the same input.
store() {
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || die "xz failed"; done
  { xz -T1 -6 -c "$1" > "$OUT/$2.xz.tmp" && mv "$OUT/$2.xz.tmp" "$OUT/$2.xz"; } &
}
finish() {
  local j
  for j in $(jobs -rp); do wait "$j" || die "xz failed"; done
  wait || true
  ls "$OUT"/*.tmp >/dev/null 2>&1 && die "unfinished output in fixtures/"
  return 0
}

DISK_BYTES=$((64 * MiB))
SIG=1a2b3c4d
START=2048
C_SECTORS=$((DISK_BYTES / 512 - START))
MBR_ONE="label: dos
label-id: 0x$SIG
unit: sectors
start=$START, size=$C_SECTORS, type=7, bootable"

# good_layout_disk NAME VARIANT [extra FILES words]: the good one-partition MBR layout, with VARIANT's
# hives; builds $W/NAME.raw and its partition file $W/NAME.part
good_layout_disk() {
  local name=$1 v=$2 extra=${3:-} hd=$W/hives/$2
  [ -e "$hd/SYSTEM" ] || build_hives "$v" "$SIG" $((START * 512)) "$hd"
  variant "$v"
  { boot_manifest "$W/bios-BCD"; windows_manifest "$FILES $extra" "$hd"; } > "$W/$name.man"
  make_ntfs "$W/$name.part" "$C_SECTORS" "$START" "Windows" "$W/$name.man"
  new_disk "$W/$name.raw" "$DISK_BYTES" "$MBR_ONE"
  put_part "$W/$name.raw" "$W/$name.part" "$START"
  expect_table "$W/$name.raw" "label-id: 0x$SIG" "start= *$START, size= *$C_SECTORS, type=7, bootable"
}

# ---------------------------------------------------------------------------------------------
main() {
  need_tools
  W=$(mktemp -d "${TMPDIR:-/tmp}/imgcheck-fixtures.XXXXXX")
  trap 'rm -rf "$W"' EXIT
  mkdir -p "$OUT"
  # Remove what an earlier run generated (never README.md, realdata/, or the files other
  # generators keep in hives/, such as scripts/make-dirty-hive.py's).
  rm -rf "$OUT"/*.xz "$OUT"/*.vmdk "$OUT"/*.qcow2
  local v
  for v in $HIVE_VARIANTS; do rm -rf "${OUT:?}/hives/$v"; done
  realdata
  gcc -O1 -Wall -Werror -o "$W/ntfsput" "$SRC/ntfsput.c" $(pkg-config --cflags --libs libntfs-3g 2>/dev/null || echo -lntfs-3g) \
    || die "cannot compile ntfsput.c (is ntfs-3g-dev installed?)"
  make_payload

  say "hives"
  local v
  for v in $HIVE_VARIANTS; do
    build_hives "$v" "$SIG" $((START * 512)) "$W/hives/$v"
    mkdir -p "$OUT/hives/$v"
    local h
    for h in SYSTEM SOFTWARE SYSTEM.LOG1 SYSTEM.LOG2; do
      [ -e "$W/hives/$v/$h" ] && xz -T1 -6 -c "$W/hives/$v/$h" > "$OUT/hives/$v/$h.xz"
    done
  done

  say "good-mbr"
  good_layout_disk good-mbr good
  check_ntfs "$W/good-mbr.part" "$W/good-mbr.man" 1
  store "$W/good-mbr.raw" good-mbr.raw
  disks_issue3
  containers
  disks_issue4
  finish
  say "done: $(du -sh "$OUT" | cut -f1) in fixtures/"
}

disks_issue3() {
  local d
  say "good-sysres: System Reserved (16 MiB, active) + C:"
  local sr=32768 c2=$((START + 32768))
  local c2n=$((DISK_BYTES / 512 - c2))
  build_hives good "$SIG" $((c2 * 512)) "$W/hives-sysres"
  boot_manifest "$W/bios-BCD" > "$W/sysres.man"
  variant good
  windows_manifest "$FILES" "$W/hives-sysres" > "$W/sysres-c.man"
  make_ntfs "$W/sysres.part" "$sr" "$START" "System Reserved" "$W/sysres.man"
  make_ntfs "$W/sysres-c.part" "$c2n" "$c2" "Windows" "$W/sysres-c.man"
  d=$W/good-sysres.raw
  new_disk "$d" "$DISK_BYTES" "label: dos
label-id: 0x$SIG
unit: sectors
start=$START, size=$sr, type=7, bootable
start=$c2, size=$c2n, type=7"
  put_part "$d" "$W/sysres.part" "$START"
  put_part "$d" "$W/sysres-c.part" "$c2"
  expect_table "$d" "start= *$START, size= *$sr, type=7, bootable" "start= *$c2, size= *$c2n, type=7$"
  ntfsls -p / "$W/sysres.part" | grep -qx bootmgr || die "System Reserved lacks bootmgr"
  ntfsls -p / "$W/sysres-c.part" | grep -qx bootmgr && die "C: of good-sysres must not hold bootmgr"
  store "$d" good-sysres.raw

  say "gpt: GPT, one Microsoft basic data partition holding the good C:"
  d=$W/gpt.raw
  local gn=$((DISK_BYTES / 512 - START - 2048))
  new_disk "$d" "$DISK_BYTES" "label: gpt
label-id: 6E4C1B2A-3D5F-4A7B-8C9D-0E1F2A3B4C5D
unit: sectors
first-lba: 34
start=$START, size=$gn, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=1F2E3D4C-5B6A-4978-8695-A4B3C2D1E0F9, name=\"Basic data partition\""
  make_ntfs "$W/gpt.part" "$gn" "$START" "Windows" "$W/good-mbr.man"
  put_part "$d" "$W/gpt.part" "$START"
  expect_table "$d" '^label: gpt' "start= *$START, size= *$gn, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
  store "$d" gpt.raw

  say "hybrid-mbr: the GPT disk with sgdisk -h (MBR: 0xEE + a real NTFS entry)"
  cp --sparse=always "$W/gpt.raw" "$W/hybrid-mbr.raw"
  FT sgdisk -h 1 "$W/hybrid-mbr.raw" >/dev/null || die "sgdisk -h failed"
  python3 - "$W/hybrid-mbr.raw" <<'EOF' || die "hybrid-mbr: MBR is not a hybrid"
import struct, sys
b = open(sys.argv[1], "rb").read(512)
types = [b[446 + 16 * i + 4] for i in range(4)]
assert 0xEE in types and 0x07 in types and b[510:512] == b"\x55\xaa", types
EOF
  store "$W/hybrid-mbr.raw" hybrid-mbr.raw

  say "bare-ntfs: no partition table, an NTFS volume at sector 0"
  make_ntfs "$W/bare-ntfs.raw" $((DISK_BYTES / 512)) 0 "Windows" "$W/good-mbr.man"
  # The NTFS boot sector ends in 55 AA, so sfdisk sees an (empty) DOS label: no partitions.
  sfdisk --dump "$W/bare-ntfs.raw" 2>/dev/null | grep -q 'start=' && die "bare-ntfs: sfdisk found a partition"
  store "$W/bare-ntfs.raw" bare-ntfs.raw

  say "zeros: 16 MiB of zeros"
  new_disk "$W/zeros.raw" $((16 * MiB)) ""
  store "$W/zeros.raw" zeros.raw

  say "fat-first: MBR, one FAT16 partition (active), no NTFS"
  local fn=$((DISK_BYTES / 512 - START))
  new_disk "$W/fat-first.raw" "$DISK_BYTES" "label: dos
label-id: 0x$SIG
unit: sectors
start=$START, size=$fn, type=6, bootable"
  rm -f "$W/fat.part"
  FT mkfs.fat -F 16 -i 5ea7f00d -n DATA -h $START -C "$W/fat.part" $((fn / 2)) >/dev/null || die "mkfs.fat"
  FT mcopy -i "$W/fat.part" "$P/bootmgr" ::/BOOTMGR
  mdir -i "$W/fat.part" ::/ | grep -q BOOTMGR || die "fat-first: mcopy failed"
  put_part "$W/fat-first.raw" "$W/fat.part" "$START"
  expect_table "$W/fat-first.raw" "start= *$START, size= *$fn, type=6, bootable"
  store "$W/fat-first.raw" fat-first.raw

  say "zeros-first: MBR, partition type 0x07 (active) full of zeros"
  new_disk "$W/zeros-first.raw" "$DISK_BYTES" "$MBR_ONE"
  expect_table "$W/zeros-first.raw" "type=7, bootable"
  store "$W/zeros-first.raw" zeros-first.raw

  say "bad-bootsector: good-mbr with an invalid bytes-per-sector / sectors-per-cluster"
  cp --sparse=always "$W/good-mbr.part" "$W/bad-bs.part"
  python3 "$SRC/patch.py" ntfs-bpb "$W/bad-bs.part" >/dev/null
  ntfsls "$W/bad-bs.part" >/dev/null 2>&1 && die "bad-bootsector: ntfs-3g still opens it"
  cp --sparse=always "$W/good-mbr.raw" "$W/bad-bootsector.raw"
  put_part "$W/bad-bootsector.raw" "$W/bad-bs.part" "$START"
  store "$W/bad-bootsector.raw" bad-bootsector.raw

  say "bad-mft-record: root directory's MFT record (5) with a broken fixup"
  cp --sparse=always "$W/good-mbr.part" "$W/bad-mft.part"
  python3 "$SRC/patch.py" ntfs-usn "$W/bad-mft.part" 5 >/dev/null
  ntfsls -p / "$W/bad-mft.part" >/dev/null 2>&1 && die "bad-mft-record: ntfs-3g still lists the root"
  ntfsinfo -m "$W/bad-mft.part" >/dev/null 2>&1 && die "bad-mft-record: ntfsinfo still mounts it"
  cp --sparse=always "$W/good-mbr.raw" "$W/bad-mft-record.raw"
  put_part "$W/bad-mft-record.raw" "$W/bad-mft.part" "$START"
  store "$W/bad-mft-record.raw" bad-mft-record.raw

  say "dirty: good-mbr whose \$Volume has VOLUME_IS_DIRTY set (ntfsput 'dirty')"
  { cat "$W/good-mbr.man"; echo dirty; } > "$W/dirty.man"
  make_ntfs "$W/dirty.part" "$C_SECTORS" "$START" "Windows" "$W/dirty.man"
  ntfsinfo -f -m "$W/dirty.part" 2>/dev/null | grep -q 'Volume Flags: 0x0001 DIRTY' || die "dirty: flag not set"
  ntfsinfo -m "$W/dirty.part" >/dev/null 2>&1 && die "dirty: ntfs-3g mounts it without force"
  new_disk "$W/dirty.raw" "$DISK_BYTES" "$MBR_ONE"
  put_part "$W/dirty.raw" "$W/dirty.part" "$START"
  store "$W/dirty.raw" dirty.raw

  say "bitlocker: MBR, partition 1 (0x07, active) starting with a -FVE-FS- boot sector"
  new_disk "$W/bitlocker.raw" "$DISK_BYTES" "$MBR_ONE"
  truncate -s $((C_SECTORS * 512)) "$W/bl.part"
  python3 "$SRC/patch.py" bitlocker "$W/bl.part" "$START" >/dev/null
  [ "$(dd if="$W/bl.part" bs=1 skip=3 count=8 status=none)" = "-FVE-FS-" ] || die "bitlocker: no signature"
  put_part "$W/bitlocker.raw" "$W/bl.part" "$START"
  store "$W/bitlocker.raw" bitlocker.raw

  say "hibernated: good-mbr with /hiberfil.sys starting with HIBR"
  good_layout_disk hibernated good hiberfil
  [ "$(ntfscat "$W/hibernated.part" /hiberfil.sys | head -c 4)" = HIBR ] || die "hibernated: no HIBR"
  store "$W/hibernated.raw" hibernated.raw

  say "odd-size: good-mbr content on a disk of 64 MiB + 7 sectors"
  cp --sparse=always "$W/good-mbr.raw" "$W/odd-size.raw"
  truncate -s $((DISK_BYTES + 7 * 512)) "$W/odd-size.raw"
  [ $(( $(stat -c %s "$W/odd-size.raw") % MiB )) -ne 0 ] || die "odd-size is a multiple of 1 MiB"
  store "$W/odd-size.raw" odd-size.raw

  say "dynamic-ldm: partition type 0x42 (LDM) + PRIVHEAD at LBA 6, NTFS inside"
  local ln=$((DISK_BYTES / 512 - START - 2048))
  new_disk "$W/dynamic-ldm.raw" "$DISK_BYTES" "label: dos
label-id: 0x$SIG
unit: sectors
start=$START, size=$ln, type=42"
  make_ntfs "$W/ldm.part" "$ln" "$START" "Windows" "$W/good-mbr.man"
  put_part "$W/dynamic-ldm.raw" "$W/ldm.part" "$START"
  python3 "$SRC/patch.py" privhead "$W/dynamic-ldm.raw" >/dev/null
  expect_table "$W/dynamic-ldm.raw" "start= *$START, size= *$ln, type=42"
  store "$W/dynamic-ldm.raw" dynamic-ldm.raw

  say "overlap: good-mbr plus a second entry starting inside the first"
  cp --sparse=always "$W/good-mbr.raw" "$W/overlap.raw"
  python3 "$SRC/patch.py" mbr-entry "$W/overlap.raw" 2 $((START + 65536)) 16384 0x07 >/dev/null
  expect_table "$W/overlap.raw" "start= *$START, size= *$C_SECTORS, type=7, bootable" "start= *$((START + 65536)), size= *16384, type=7"
  store "$W/overlap.raw" overlap.raw

  say "past-end: good-mbr whose entry claims 64 MiB more than the disk has"
  cp --sparse=always "$W/good-mbr.raw" "$W/past-end.raw"
  python3 "$SRC/patch.py" mbr-entry "$W/past-end.raw" 1 $START $((C_SECTORS + 131072)) 0x07 >/dev/null
  printf '\x80' | dd of="$W/past-end.raw" bs=1 seek=446 conv=notrunc status=none   # keep it active
  expect_table "$W/past-end.raw" "start= *$START, size= *$((C_SECTORS + 131072)), type=7, bootable"
  store "$W/past-end.raw" past-end.raw
}

containers() {
  say "containers of good-mbr (qemu-img convert)"
  local src=$W/good-mbr.raw
  conv() { # NAME FMT [options...]
    local name=$1 fmt=$2; shift 2
    rm -f "$W/$name"
    FT qemu-img convert -q -f raw -O "$fmt" "$@" "$src" "$W/$name" || die "qemu-img convert $name"
    case $name in *.vhd) python3 "$SRC/patch.py" vhd-fix "$W/$name" >/dev/null ;; *.vmdk) python3 "$SRC/patch.py" vmdk-fix "$W/$name" >/dev/null ;; esac
    qemu-img compare -q -f raw -F "$fmt" "$src" "$W/$name" || die "$name differs from good-mbr.raw"
    local rc=0; qemu-img check -q -f "$fmt" "$W/$name" >/dev/null 2>&1 || rc=$?
    [ $rc = 0 ] || [ $rc = 63 ] || die "qemu-img check $name exited $rc"
    qemu-img info -f "$fmt" "$W/$name" | grep -q "virtual size: .*($DISK_BYTES bytes)" || die "$name: wrong virtual size"
  }
  conv good-mbr.vpc-fixed.vhd vpc -o subformat=fixed,force_size=on
  conv good-mbr.vpc-dynamic.vhd vpc -o subformat=dynamic,force_size=on
  conv good-mbr.monolithicSparse.vmdk vmdk -o subformat=monolithicSparse
  conv good-mbr.streamOptimized.vmdk vmdk -o subformat=streamOptimized
  conv good-mbr.qcow2 qcow2
  conv good-mbr.compressed.qcow2 qcow2 -c
  qemu-img info -f vpc "$W/good-mbr.vpc-fixed.vhd" | grep -q 'file format: vpc' || die "vpc fixed"
  say "too-big: good-mbr's qcow2 grown to 3 TiB (larger than MBR with 512-byte sectors can address)"
  cp "$W/good-mbr.qcow2" "$W/too-big.qcow2"
  FT qemu-img resize -q -f qcow2 "$W/too-big.qcow2" 3T || die "qemu-img resize"
  qemu-img check -q -f qcow2 "$W/too-big.qcow2" || die "too-big: qemu-img check"
  qemu-img info -f qcow2 "$W/too-big.qcow2" | grep -q 'virtual size: 3 TiB (3298534883328 bytes)' || die "too-big: size"
  qemu-img compare -q -f raw -F qcow2 "$src" "$W/too-big.qcow2" 2>/dev/null || die "too-big: contents differ from good-mbr"
  store "$W/too-big.qcow2" too-big.qcow2
  store "$W/good-mbr.vpc-fixed.vhd" good-mbr.vpc-fixed.vhd
  store "$W/good-mbr.vpc-dynamic.vhd" good-mbr.vpc-dynamic.vhd
  store "$W/good-mbr.monolithicSparse.vmdk" good-mbr.monolithicSparse.vmdk
  store "$W/good-mbr.qcow2" good-mbr.qcow2
  cp "$W/good-mbr.streamOptimized.vmdk" "$W/good-mbr.compressed.qcow2" "$OUT/"
}

disks_issue4() {
  say "efi: MBR, C: (NTFS, active, \\Boot\\BCD = a UEFI store) + EFI system partition (0xEF, FAT)"
  local d=$W/efi.raw esp=32768
  local cn=$((DISK_BYTES / 512 - START - esp))
  local es=$((START + cn))
  { boot_manifest "$W/uefi-BCD" | grep -v '^f	/bootmgr'; windows_manifest "$FILES_GOOD" "$W/hives/good"; } > "$W/efi.man"
  make_ntfs "$W/efi.part" "$cn" "$START" "Windows" "$W/efi.man"
  new_disk "$d" "$DISK_BYTES" "label: dos
label-id: 0x$SIG
unit: sectors
start=$START, size=$cn, type=7, bootable
start=$es, size=$esp, type=ef"
  rm -f "$W/esp.part"
  FT mkfs.fat -F 16 -i 0e5f0e5f -n SYSTEM -h "$es" -C "$W/esp.part" $((esp / 2)) >/dev/null || die "mkfs.fat esp"
  FT mmd -i "$W/esp.part" ::/EFI ::/EFI/Boot ::/EFI/Microsoft ::/EFI/Microsoft/Boot
  FT mcopy -i "$W/esp.part" "$W/uefi-BCD" ::/EFI/Microsoft/Boot/BCD
  FT mcopy -i "$W/esp.part" "$P/bootmgfw.efi" ::/EFI/Microsoft/Boot/bootmgfw.efi
  FT mcopy -i "$W/esp.part" "$P/bootx64.efi" ::/EFI/Boot/bootx64.efi
  cmp -s <(mtype -i "$W/esp.part" ::/EFI/Microsoft/Boot/BCD) "$W/uefi-BCD" || die "efi: BCD on the ESP"
  put_part "$d" "$W/efi.part" "$START"
  put_part "$d" "$W/esp.part" "$es"
  expect_table "$d" "start= *$START, size= *$cn, type=7, bootable" "start= *$es, size= *$esp, type=ef"
  store "$d" efi.raw

  local v
  for v in $HIVE_VARIANTS; do
    [ "$v" = good ] && continue
    say "registry variant $v"
    good_layout_disk "$v" "$v"
    store "$W/$v.raw" "$v.raw"
  done
}

main "$@"
