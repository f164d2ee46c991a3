// Package guest holds the recipe of kiln's test guest (build.sh, initrd-init, rootfs/)
// and a test that boots it under real QEMU. `make guest` builds it into out/.
package guest
