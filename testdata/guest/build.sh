#!/bin/sh
# build.sh OUT: builds the kiln test guest into OUT (vmlinuz, initrd.img, root.qcow2).
#
# The kernel is Debian's cloud kernel, downloaded and unpacked (never installed). The
# initrd is busybox plus the virtio and ISO modules, loaded with insmod in dependency
# order because the package ships no modules.dep. The root disk is an ext4 image made
# with mkfs.ext4 -d (no root or loop device needed) from rootfs/ beside this script.
set -eu

out=$(realpath -m "${1:?usage: build.sh OUT}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Modules in the order they must be loaded (each after what its depends= names).
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk cdrom isofs evdev button pvpanic pvpanic-pci"
# Loaded only when the guest booted through UEFI (the module refuses a BIOS boot).
efi_modules="efivarfs"

kernel_package() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1
}
kpkg=$(kernel_package)
if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ]; then
	apt-get update -qq # a machine whose package lists were never fetched
	kpkg=$(kernel_package)
fi
if [ -z "$kpkg" ]; then
	echo "build.sh: no linux-image-*-cloud-amd64 package found; run 'apt-get update' first" >&2
	exit 1
fi
(cd "$work" && apt-get download -q "$kpkg" 2>&1 | grep -v '_apt' || true)
dpkg -x "$work"/"$kpkg"_*.deb "$work/kernel"
kver=${kpkg#linux-image-}
moddir="$work/kernel/lib/modules/$kver/kernel"

busybox=/bin/busybox # from busybox-static

# initrd: busybox, the modules, /init.
ird="$work/initrd"
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/newroot"
cp "$busybox" "$ird/bin/busybox"
for m in $modules $efi_modules; do
	f=$(find "$moddir" -name "$m.ko" | head -n 1)
	[ -n "$f" ] || { echo "build.sh: module $m not in $kpkg" >&2; exit 1; }
	cp "$f" "$ird/lib/modules/"
done
printf '%s\n' "$modules" > "$ird/lib/modules/order"
printf '%s\n' "$efi_modules" > "$ird/lib/modules/efi"
cp "$here/initrd-init" "$ird/init"
chmod 0755 "$ird/init"

# root disk: busybox with its applet links, rootfs/ on top.
root="$work/root"
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/proc" "$root/sys" \
	"$root/dev" "$root/tmp" "$root/mnt/cidata" "$root/run" "$root/root" "$root/var/log"
ln -s /run "$root/var/run"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
	[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cp -r "$here/rootfs/." "$root/"
chmod 0755 "$root/etc/init.d/rcS" "$root/etc/init.d/rcK" "$root/etc/acpi/pwr"

mkdir -p "$out"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.tmp"
mkfs.ext4 -q -F -L kiln-root -d "$root" "$work/root.raw" 256M
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$out/root.qcow2.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/root.qcow2.tmp" "$out/root.qcow2"
echo "$kpkg" > "$out/kernel-package"
