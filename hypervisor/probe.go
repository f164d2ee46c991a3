package hypervisor

import (
	"bytes"
	"encoding/binary"
)

// The probe payload is a 64 KiB firmware image (QEMU's -bios) that does what a 64-bit
// kernel does before it prints its first line, and then proves it did: from the reset
// vector in real mode it loads a GDT, enters protected mode, builds page tables in RAM
// (an identity map of the first 2 MiB, and the same memory at -2 GiB, where Linux runs
// its kernel), turns on PAE, long mode and paging, jumps to a 64-bit code segment and up
// to the kernel's address range, checks that the CPU says long mode is active
// (EFER.LMA), copies itself to RAM backwards with rep movsq (as the kernel's
// decompressor moves itself), and runs probeRounds steps of an LCG seeded with the
// probe's nonce, read from the copy (a decompressor's worth of plain instructions).
// Only then does it write the token, a fixed prefix and the LCG's result, to the first
// serial port, and leave through isa-debug-exit. The result depends on the nonce chosen
// per probe, so no canned output passes for it.
//
// Seen on a host whose /dev/kvm is a kvm-pvm device: the stages up to the copy run, but
// each instruction goes through an emulator (the Linux kernel there sits for seconds
// on one rep movsq and never prints), and the LCG does not finish in 20 s; under TCG the
// whole payload takes about 0.1 s.
//
// It is written here as machine code, each instruction with its assembly, because a
// few hundred bytes do not justify an assembler in the build.

// Where the payload's parts sit in the image. The image is mapped both just below
// 4 GiB and, for its last 64 KiB, at 0xF0000 (the legacy BIOS window); the code runs
// from the low alias once it leaves real mode, so one identity-mapped 2 MiB page covers
// it.
const (
	payloadSize = 64 << 10
	lowAlias    = 0xF0000            // physical address of offset 0 in the legacy window
	off16       = 0xF000             // real-mode code
	off32       = 0xF040             // protected-mode code
	off64       = 0xF100             // long-mode code, run at its identity address
	offHigh     = 0xF140             // long-mode code, run where a kernel runs (kernelBase)
	offGDT      = 0xF200             // the GDT: null, code32 (0x08), data (0x10), code64 (0x18)
	offGDTR     = 0xF220             // the GDT's limit and base, for lgdt
	offToken    = 0xF300             // the token: tokenPrefix, then the nonce
	copyTo      = 0x20000            // RAM the image is copied to, as a kernel relocates itself
	offReset    = 0xFFF0             // where the CPU starts: CS base 0xFFFF0000, IP 0xFFF0
	tokenPrefix = "KILNLM64"         // the fixed half of the token
	debugExit   = 0xF4               // isa-debug-exit's port
	serialPort  = 0x3F8              // COM1
	pageTables  = 0x1000             // PML4, PDPT (low), PD, PDPT (high): four pages of RAM
	kernelBase  = 0xFFFFFFFF80000000 // where x86-64 Linux maps its kernel: -2 GiB
	// The work the guest must finish: probeRounds steps of Knuth's MMIX LCG. A KVM
	// that runs each guest instruction through an emulator (as some nested and
	// sandboxed hosts do, and so boot no kernel) cannot finish it within the deadline;
	// TCG and working KVM finish it in well under a second.
	probeRounds = 20_000_000
	lcgMul      = 6364136223846793005
	lcgAdd      = 1442695040888963407
)

// probePayload returns the firmware image whose serial output is tokenPrefix+nonce.
// nonce must be 8 bytes.
func probePayload(nonce [8]byte) []byte {
	img := make([]byte, payloadSize)
	put := func(off int, code ...[]byte) {
		for _, c := range code {
			off += copy(img[off:], c)
		}
	}
	const (
		pml4     = pageTables
		pdptLow  = pageTables + 0x1000
		pd       = pageTables + 0x2000
		pdptHigh = pageTables + 0x3000
	)
	u16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	// Reset vector (16-bit): jmp near off16.
	put(offReset, []byte{0xE9}, u16(0x10000+off16-(offReset+3))) // rel16, wrapped

	// Real mode.
	put(off16,
		[]byte{0xFA},                                       // cli
		[]byte{0x2E, 0x66, 0x0F, 0x01, 0x16}, u16(offGDTR), // lgdt cs:[offGDTR] (32-bit base)
		[]byte{0x0F, 0x20, 0xC0},            // mov eax, cr0
		[]byte{0x66, 0x25}, u32(0x9FFFFFFF), // and eax, ~(CD|NW): caches on, as a kernel runs
		[]byte{0x0C, 0x01},                                 // or al, 1 (PE)
		[]byte{0x0F, 0x22, 0xC0},                           // mov cr0, eax
		[]byte{0x66, 0xEA}, u32(lowAlias+off32), u16(0x08), // jmp dword 0x08:off32
	)

	// Protected mode, 32-bit, flat segments.
	put(off32,
		[]byte{0xB8}, u32(0x10), // mov eax, 0x10
		[]byte{0x8E, 0xD8}, // mov ds, eax
		[]byte{0x8E, 0xC0}, // mov es, eax
		[]byte{0x8E, 0xD0}, // mov ss, eax
		// Zero four pages of RAM for the page tables.
		[]byte{0xBF}, u32(pageTables), // mov edi, pageTables
		[]byte{0x31, 0xC0},          // xor eax, eax
		[]byte{0xB9}, u32(4*4096/4), // mov ecx, 4 pages in dwords
		[]byte{0xFC},       // cld
		[]byte{0xF3, 0xAB}, // rep stosd
		// PML4[0] → PDPT low, PDPT low[0] → PD; PML4[511] → PDPT high, PDPT high[510]
		// → the same PD (so -2 GiB maps to 0); PD[0] = the first 2 MiB, writable.
		[]byte{0xC7, 0x05}, u32(pml4), u32(pdptLow|3), // mov dword [PML4[0]], PDPT low|3
		[]byte{0xC7, 0x05}, u32(pml4+511*8), u32(pdptHigh|3), // mov dword [PML4[511]], PDPT high|3
		[]byte{0xC7, 0x05}, u32(pdptLow), u32(pd|3), // mov dword [PDPT low[0]], PD|3
		[]byte{0xC7, 0x05}, u32(pdptHigh+510*8), u32(pd|3), // mov dword [PDPT high[510]], PD|3
		[]byte{0xC7, 0x05}, u32(pd), u32(0x83), // mov dword [PD[0]], 0|PS|RW|P
		[]byte{0x0F, 0x20, 0xE0},      // mov eax, cr4
		[]byte{0x83, 0xC8, 0x20},      // or eax, 0x20 (PAE)
		[]byte{0x0F, 0x22, 0xE0},      // mov cr4, eax
		[]byte{0xB8}, u32(pageTables), // mov eax, pageTables
		[]byte{0x0F, 0x22, 0xD8},      // mov cr3, eax
		[]byte{0xB9}, u32(0xC0000080), // mov ecx, EFER
		[]byte{0x0F, 0x32},       // rdmsr
		[]byte{0x0D}, u32(0x100), // or eax, LME
		[]byte{0x0F, 0x30},            // wrmsr
		[]byte{0x0F, 0x20, 0xC0},      // mov eax, cr0
		[]byte{0x0D}, u32(0x80000000), // or eax, PG
		[]byte{0x0F, 0x22, 0xC0},                     // mov cr0, eax: long mode is active from here
		[]byte{0xEA}, u32(lowAlias+off64), u16(0x18), // jmp 0x18:off64
	)

	// Long mode, at the identity address: jump to the same code's kernel address.
	put(off64,
		[]byte{0x48, 0xB8}, binary.LittleEndian.AppendUint64(nil, kernelBase+lowAlias+offHigh), // mov rax, high
		[]byte{0xFF, 0xE0}, // jmp rax
	)

	// Long mode, at -2 GiB. The loop emits the 8 bytes of rax, lowest first:
	// out dx, al (EE); shr rax, 8 (48 C1 E8 08); loop back 7 bytes (E2 F9).
	emit8 := cat([]byte{0xB9}, u32(8), []byte{0xEE, 0x48, 0xC1, 0xE8, 0x08, 0xE2, 0xF9}) // mov ecx, 8; the loop
	long := cat(
		[]byte{0xB9}, u32(0xC0000080), // mov ecx, EFER
		[]byte{0x0F, 0x32},             // rdmsr
		[]byte{0x0F, 0xBA, 0xE0, 0x0A}, // bt eax, 10 (LMA)
	)
	jnc := len(long)
	long = append(long, cat(
		[]byte{0x73, 0x00}, // jnc halt (its offset is set below)
		// Copy the whole image to RAM backwards, 8 bytes at a time, as the kernel's
		// decompressor moves itself (std; rep movsq): the token is read from the copy.
		[]byte{0xBE}, u32(lowAlias+payloadSize-8), // mov esi, last qword of the image
		[]byte{0xBF}, u32(copyTo+payloadSize-8), // mov edi, last qword of the copy
		[]byte{0xB9}, u32(payloadSize/8), // mov ecx, qwords
		[]byte{0xFD},             // std
		[]byte{0xF3, 0x48, 0xA5}, // rep movsq
		[]byte{0xFC},             // cld
		// Work, as a kernel does before it prints a line (it decompresses itself):
		// probeRounds steps of a 64-bit LCG seeded with the nonce, read from the copy.
		[]byte{0x48, 0x8B, 0x04, 0x25}, u32(copyTo+offToken+8), // mov rax, [nonce]
		[]byte{0x49, 0xB8}, u64(lcgMul), // mov r8, lcgMul
		[]byte{0x49, 0xBA}, u64(lcgAdd), // mov r10, lcgAdd
		[]byte{0x41, 0xB9}, u32(probeRounds), // mov r9d, probeRounds
		[]byte{0x49, 0x0F, 0xAF, 0xC0}, // round: imul rax, r8
		[]byte{0x4C, 0x01, 0xD0},       // add rax, r10
		[]byte{0x41, 0xFF, 0xC9},       // dec r9d
		[]byte{0x75, 0xF4},             // jnz round (back 12 bytes)
		[]byte{0x48, 0x89, 0xC3},       // mov rbx, rax
		// The token: the prefix from the copy, then the LCG's result as 16 letters
		// a-p, lowest nibble first.
		[]byte{0x66, 0xBA}, u16(serialPort), // mov dx, COM1
		[]byte{0x48, 0x8B, 0x04, 0x25}, u32(copyTo+offToken), emit8, // mov rax, [prefix]; emit
		[]byte{0xB9}, u32(16), // mov ecx, 16
		[]byte{0x89, 0xD8},                 // nibble: mov eax, ebx
		[]byte{0x24, 0x0F},                 // and al, 0x0F
		[]byte{0x04, 'a'},                  // add al, 'a'
		[]byte{0xEE},                       // out dx, al
		[]byte{0x48, 0xC1, 0xEB, 0x04},     // shr rbx, 4
		[]byte{0xE2, 0xF3},                 // loop nibble (back 13 bytes)
		[]byte{0xB0, '\n', 0xEE},           // mov al, '\n'; out dx, al
		[]byte{0x66, 0xBA}, u16(debugExit), // mov dx, isa-debug-exit
		[]byte{0xB0, 0x10, 0xEE}, // mov al, 0x10; out dx, al: QEMU exits with status 33
	)...)
	long[jnc+1] = byte(len(long) - (jnc + 2))
	long = append(long, 0xF4, 0xEB, 0xFD) // halt: hlt; jmp halt
	put(offHigh, long)

	// GDT: accessed bits set, so that loading a selector writes nothing to ROM.
	put(offGDT,
		make([]byte, 8), // null
		[]byte{0xFF, 0xFF, 0, 0, 0, 0x9B, 0xCF, 0}, // 0x08: code, 32-bit, 4 GiB
		[]byte{0xFF, 0xFF, 0, 0, 0, 0x93, 0xCF, 0}, // 0x10: data, 4 GiB
		[]byte{0xFF, 0xFF, 0, 0, 0, 0x9B, 0xAF, 0}, // 0x18: code, 64-bit
	)
	put(offGDTR, u16(4*8-1), u32(lowAlias+offGDT))
	put(offToken, []byte(tokenPrefix), nonce[:])
	return img
}

// probeToken is what the payload seeded with nonce prints when it ran to its end.
func probeToken(nonce [8]byte) string {
	x := binary.LittleEndian.Uint64(nonce[:])
	for i := 0; i < probeRounds; i++ {
		x = x*lcgMul + lcgAdd
	}
	out := []byte(tokenPrefix)
	for i := 0; i < 16; i++ {
		out = append(out, 'a'+byte(x>>(4*i)&0xF))
	}
	return string(out)
}
