package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"kiln/internal/kilntest"
)

// TestMain lets the test binary, copied under a name starting with "fake-nbd-", stand in
// for a caller's qemu-nbd that misbehaves (a caller owns that process: it may make it do
// anything). A real qemu-nbd cannot misbehave on demand.
func TestMain(m *testing.M) {
	if name := filepath.Base(os.Args[0]); strings.HasPrefix(name, "fake-nbd-") {
		fakeNBD(strings.TrimPrefix(name, "fake-nbd-"))
		return
	}
	os.Exit(m.Run())
}

// fakeNBD behaves as its name says on the activation socket (descriptor 3): "exit"
// fails at once, "garbage" answers a client with bytes that are not NBD, "stall" accepts
// a client and never answers.
func fakeNBD(how string) {
	if how == "exit" {
		os.Stderr.WriteString("fake-nbd: cannot open the disk\n")
		os.Exit(1)
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		os.Exit(2)
	}
	c, err := ln.Accept()
	if err != nil {
		os.Exit(2)
	}
	if how == "garbage" {
		c.Write([]byte(strings.Repeat("NOTNBD!!", 64)))
		io.Copy(io.Discard, c)
		os.Exit(0)
	}
	select {} // stall
}

// callerSetup makes a short socket directory kilnd's (0700) and returns the tool
// running as nobody with it, and a public copy of the disks directory d.
func callerTool(t *testing.T, d string) Tool {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run qemu-nbd as another user")
	}
	need(t, "qemu-nbd")
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		os.Chmod(filepath.Join(d, e.Name()), 0o644)
	}
	sockets, err := os.MkdirTemp("/tmp", "kv") // a socket path must fit in 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockets) })
	tool := Tool{SocketDir: sockets}.As(65534, 65534, nil)
	return tool
}

// layerOf converts src with tool into a fresh file and returns its bytes.
func layerOf(t *testing.T, tool Tool, src Info, dir, name string) []byte {
	t.Helper()
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tool.Convert(context.Background(), src, out); err != nil {
		t.Fatalf("Convert %s: %v", src.Name, err)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != uint32(os.Getuid()) {
		t.Errorf("%s: layer owned by %d, want kilnd's own %d", src.Name, uid, os.Getuid())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConvertExportedAsCaller: a caller's disk, read by the caller's qemu-nbd and written
// by kilnd's qemu-img, gives byte for byte the layer kilnd's own direct conversion gives,
// for every format, twice the same; the socket directory is gone afterwards.
func TestConvertExportedAsCaller(t *testing.T) {
	d := kilntest.Disks(t)
	nobody := callerTool(t, d)
	private := t.TempDir() // 0700, root's: where the layers go
	ctx := context.Background()
	for _, tc := range []struct{ file, format string }{
		{"good.qcow2", "qcow2"}, {"random.raw", "raw"}, {"good.vmdk", "vmdk"}, {"good.vhdx", "vhdx"},
	} {
		info, err := nobody.Inspect(ctx, source(t, filepath.Join(d, tc.file), tc.format))
		if err != nil {
			t.Fatalf("Inspect %s as nobody: %v", tc.file, err)
		}
		direct := layerOf(t, Tool{}, info, private, tc.file+".direct")
		first := layerOf(t, nobody, info, private, tc.file+".1")
		second := layerOf(t, nobody, info, private, tc.file+".2")
		if sha256.Sum256(first) != sha256.Sum256(direct) || sha256.Sum256(second) != sha256.Sum256(first) {
			t.Errorf("%s: the exported conversions (%d, %d bytes) differ from the direct one (%d bytes) or from each other",
				tc.file, len(first), len(second), len(direct))
		}
	}
	if left, _ := os.ReadDir(nobody.SocketDir); len(left) != 0 {
		t.Errorf("socket directory keeps %d entries after the conversions", len(left))
	}
}

// TestExportKeepsHoles: the export answers block status, so kilnd's qemu-img sees a 64
// GiB disk with 1 MiB of data as 1 MiB of data and the rest holes (it never reads them),
// and the layer holds the data, not the size.
func TestExportKeepsHoles(t *testing.T) {
	d := kilntest.Disks(t)
	sh(t, d, "qemu-img", "create", "-q", "-f", "raw", "sparse.raw", "64G")
	sh(t, d, "qemu-io", "-f", "raw", "-c", "write -P 0x33 32G 1M", "sparse.raw")
	nobody := callerTool(t, d)
	ctx := context.Background()
	info, err := nobody.Inspect(ctx, source(t, filepath.Join(d, "sparse.raw"), "raw"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := nobody.startExport(info)
	if err != nil {
		t.Fatal(err)
	}
	defer e.stop()
	spec, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{"driver": "nbd", "server": map[string]any{"type": "unix", "path": e.socket}}})
	out, err := kilntest.Command(t, "qemu-img", "map", "--output=json", "json:"+string(spec)).Output()
	if err != nil {
		t.Fatalf("qemu-img map of the export: %v", err)
	}
	var extents []struct {
		Start, Length int64
		Data          bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var data int64
	for _, x := range extents {
		if x.Data {
			data += x.Length
		}
	}
	if data > 4<<20 {
		t.Errorf("the export shows %d bytes of data for 1 MiB written (no block status reaches qemu-img):\n%s", data, out)
	}
	e.stop()
	layer := layerOf(t, nobody, info, t.TempDir(), "layer")
	if len(layer) > 8<<20 {
		t.Errorf("layer of a 64 GiB disk with 1 MiB of data is %d bytes", len(layer))
	}
}

// TestConvertExportMisbehaves: a caller's export that exits, answers garbage or stops
// answering fails the conversion with an error that says so, within its bounds, and a
// cancelled conversion ends at once; none leaves a process behind.
func TestConvertExportMisbehaves(t *testing.T) {
	d := kilntest.Disks(t)
	nobody := callerTool(t, d)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	public, err := os.MkdirTemp("/tmp", "kv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(public) })
	os.Chmod(public, 0o755)
	info, err := nobody.Inspect(context.Background(), source(t, filepath.Join(d, "random.raw"), "raw"))
	if err != nil {
		t.Fatal(err)
	}
	saved := ConvertLimits
	ConvertLimits.Stall = 3 * time.Second
	t.Cleanup(func() { ConvertLimits = saved })
	deadline := func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }
	for _, tc := range []struct {
		name, how string
		cancel    bool // the register is cancelled (after 1s) before the stall bound
		class     func(error) bool
		want      string
	}{
		{"exit", "exit", false, errdefs.IsInvalidArgument, "fake-nbd: cannot open the disk"},
		{"garbage", "garbage", false, errdefs.IsInvalidArgument, "disk " + filepath.Join(d, "random.raw") + " (read through its export)"},
		{"stall", "stall", false, deadline, "stopped answering"},
		{"cancelled", "stall", true, deadline, "qemu-img convert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := filepath.Join(public, "fake-nbd-"+tc.how)
			if err := os.WriteFile(fake, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			tool := nobody
			tool.NBD = fake
			out := filepath.Join(t.TempDir(), "layer")
			os.WriteFile(out, nil, 0o600)
			bound := time.Minute
			if tc.cancel {
				bound = time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			start := time.Now()
			err := tool.Convert(ctx, info, out)
			t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
			switch {
			case err == nil:
				t.Fatal("Convert succeeded")
			case ctx.Err() != nil && !tc.cancel:
				t.Fatalf("Convert ran until the test's deadline: %v", err)
			case tc.cancel && time.Since(start) > ConvertLimits.Stall:
				t.Fatalf("a cancelled Convert returned after %s, not when cancelled: %v", time.Since(start), err)
			case !tc.class(err) || !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q: want its class and %q", err, tc.want)
			}
			for _, p := range kilntest.ProcessesAs(65534) {
				if strings.HasPrefix(p.Comm, "fake-nbd") {
					t.Errorf("a process of nobody left behind: %s", p)
				}
			}
		})
	}
}

// TestPrecheckRefusesVMDKDescriptors: a VMDK that does not start with a sparse extent's
// magic is a text descriptor to QEMU, wherever its text starts: one after 600 bytes of
// comment lines (past a look at the first 512 bytes) naming a host file is refused
// before qemu-img opens it, saying how to fix it.
func TestPrecheckRefusesVMDKDescriptors(t *testing.T) {
	d := t.TempDir()
	desc := strings.Repeat("#"+strings.Repeat(" ", 58)+"\n", 10) + `# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"
RW 16 FLAT "/etc/shadow" 0
ddb.virtualHWVersion = "4"
`
	for name, content := range map[string]string{
		"after-comments.vmdk": desc,
		"empty.vmdk":          "",
		"short.vmdk":          "KD",
		"text.vmdk":           "RW 16 FLAT \"/etc/shadow\" 0\n",
	} {
		path := filepath.Join(d, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := precheck(source(t, path, "vmdk"))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "monolithicSparse or streamOptimized") {
			t.Errorf("%s: precheck gave %v; want InvalidArgument saying to convert to a single-file VMDK", name, err)
		}
	}
	// The single-file kinds pass.
	need(t, "qemu-img")
	for _, sub := range []string{"monolithicSparse", "streamOptimized"} {
		sh(t, d, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat="+sub, sub+".vmdk", "8M")
		if err := precheck(source(t, filepath.Join(d, sub+".vmdk"), "vmdk")); err != nil {
			t.Errorf("%s: %v", sub, err)
		}
	}
}
