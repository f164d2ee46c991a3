#!/bin/sh
# build.sh OUT: builds kiln's Debian test guest into OUT/disk.qcow2: a disk that boots
# alone, as a downloaded cloud image does (registered with --disk and nothing else).
#
# The root is Debian bookworm made by mmdebstrap from Debian's packages: systemd with
# dbus (so that logind takes the power button and shutdown works), cloud-init (NoCloud),
# openssh-server, qemu-guest-agent, sudo, curl, python3, the cloud kernel, and Debian's
# signed EFI loaders (shim-signed, grub-efi-amd64-signed) with mokutil.
# The disk has an MBR partition table, a FAT boot partition and an ext4 root, each made
# as a file of its own with mkfs -d / mtools and copied in: no loop device and no mount.
# The boot partition boots both ways: legacy BIOS through syslinux (the MBR's code, the
# partition's boot sector, syslinux.cfg), UEFI through Debian's signed chain as the
# firmware finds it on removable media: shim (shim-signed, signed by Microsoft) as
# \EFI\BOOT\BOOTX64.EFI, which starts GRUB (grub-efi-amd64-signed, signed by Debian)
# beside it, which reads grub.cfg from its prefix, \EFI\debian, and starts the cloud
# kernel (signed by Debian); so it boots under Secure Boot with Microsoft's keys. Both
# loaders start the same kernel and initrd from the partition's root. Needs root
# (mmdebstrap keeps the root's owners only as root).
set -eu

out=$(realpath -m "${1:?usage: build.sh OUT}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

suite=bookworm
packages=systemd-sysv,udev,dbus,cloud-init,cloud-guest-utils,openssh-server,qemu-guest-agent,python3,sudo,curl,linux-image-cloud-amd64,shim-signed,grub-efi-amd64-signed,mokutil,ifupdown,isc-dhcp-client,netbase
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

# The boot partition: FAT16, the kernel and initrd the root's package made, syslinux,
# and the EFI loaders the root's packages hold (shim's fallback, fbx64.efi, is left
# out: it would add a boot entry and reset the machine).
kernel=$(ls "$root"/boot/vmlinuz-* | head -n 1)
initrd=$(ls "$root"/boot/initrd.img-* | head -n 1)
boot_mib=128
boot="$work/boot.img"
mkfs.vfat -F 16 -n KILNBOOT -C "$boot" $((boot_mib * 1024)) >/dev/null
for cfg in syslinux.cfg grub.cfg; do
	sed "s/@ROOT_UUID@/$uuid/" "$here/$cfg" >"$work/$cfg"
done
mcopy -i "$boot" "$kernel" ::/vmlinuz
mcopy -i "$boot" "$initrd" ::/initrd.img
mcopy -i "$boot" "$work/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$boot"
mmd -i "$boot" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$boot" "$root/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$boot" "$root/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
mcopy -i "$boot" "$work/grub.cfg" ::/EFI/debian/grub.cfg

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
