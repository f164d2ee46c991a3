#!/bin/sh
# build.sh OUT: builds kiln's Debian test guest into OUT/disk.qcow2: a disk that boots
# alone, as a downloaded cloud image does (registered with --disk and nothing else).
#
# The root is Debian bookworm made by mmdebstrap from Debian's packages: systemd with
# dbus (so that logind takes the power button and shutdown works), cloud-init (NoCloud),
# openssh-server, qemu-guest-agent, sudo, curl, python3 and the cloud kernel.
# The disk has an MBR partition table, a FAT boot partition with syslinux (the kernel,
# its initrd and syslinux.cfg) and an ext4 root, each made as a file of its own with
# mkfs -d / mtools and copied in: no loop device and no mount. Needs root (mmdebstrap
# keeps the root's owners only as root).
set -eu

out=$(realpath -m "${1:?usage: build.sh OUT}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

suite=bookworm
packages=systemd-sysv,udev,dbus,cloud-init,cloud-guest-utils,openssh-server,qemu-guest-agent,python3,sudo,curl,linux-image-cloud-amd64,ifupdown,isc-dhcp-client,netbase
root="$work/root"
mmdebstrap --quiet --variant=apt --include="$packages" "$suite" "$root"

# The root's own settings, from rootfs/ beside this script (fstab, cloud-init's
# datasource, the network), then what a cloud image leaves out: host keys and the
# machine id (made at first boot), apt's lists.
uuid=$(cat /proc/sys/kernel/random/uuid)
cp -R "$here/rootfs/." "$root/"
sed -i "s/@ROOT_UUID@/$uuid/" "$root/etc/fstab"
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
echo debian >"$root/etc/hostname"

# The boot partition: FAT16, syslinux, the kernel and initrd the root's package made.
kernel=$(ls "$root"/boot/vmlinuz-* | head -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | head -n 1)
boot_mib=128
mkfs.vfat -F 16 -n KILNBOOT -C "$work/boot.img" $((boot_mib * 1024)) >/dev/null
sed "s/@ROOT_UUID@/$uuid/" "$here/syslinux.cfg" >"$work/syslinux.cfg"
mcopy -i "$work/boot.img" "$kernel" ::/vmlinuz
mcopy -i "$work/boot.img" "$initrd" ::/initrd.img
mcopy -i "$work/boot.img" "$work/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$work/boot.img"

# The root partition: ext4 made from the directory, with room to work in.
used_mib=$(du -sm "$root" | cut -f1)
root_mib=$(((used_mib * 3 / 2 / 256 + 1) * 256))
root_mib=$((root_mib < 2048 ? 2048 : root_mib))
mkfs.ext4 -q -F -U "$uuid" -L root -d "$root" "$work/root.img" "${root_mib}M" >/dev/null

# The disk: 1 MiB for the MBR and its gap, then the two partitions.
disk="$work/disk.raw"
truncate -s $((1 + boot_mib + root_mib))M "$disk"
sfdisk -q "$disk" <<EOF
label: dos
start=1MiB, size=${boot_mib}MiB, type=6, bootable
start=$((1 + boot_mib))MiB, type=83
EOF
dd if="$work/boot.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none

mkdir -p "$out"
qemu-img convert -O qcow2 "$disk" "$out/disk.qcow2.new"
mv "$out/disk.qcow2.new" "$out/disk.qcow2"
