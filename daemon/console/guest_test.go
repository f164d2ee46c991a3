package console

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// testdata/cloud-init-final.txt is the end of testdata/guest-debian's first boot as its
// serial console showed it (cloud-init 22.4.2, Debian 12), launched with a key pair.
func TestParseGuest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "cloud-init-final.txt"))
	if err != nil {
		t.Fatal(err)
	}
	g := parseGuest(b)
	want := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBNwx0Wh9eWzhc6/TVo1mLv9BCRKMtX/J8wxPw8KUvp0"}
	if !slices.Equal(g.SSHHostKeys, want) || g.SSHUser != "debian" {
		t.Errorf("parsed %+v; want the ed25519 host key and user debian", g)
	}

	ecdsa := "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBL8oe2Ye5FroUXXpleB44ZDH2fupjxfP9TAjdibFWnMTThX50JAktDF7IGA/5Ko1sXZeLk54zMpSeP43v/QXp/g="
	for _, tc := range []struct {
		name, console string
		keys          []string
		user          string
	}{
		{"a later block wins", string(b) + "\n-----BEGIN SSH HOST KEY KEYS-----\r\n" + ecdsa + " root@x\r\n-----END SSH HOST KEY KEYS-----\r\n", []string{ecdsa}, "debian"},
		{"no end line", "-----BEGIN SSH HOST KEY KEYS-----\n" + ecdsa + "\n", nil, ""},
		{"a key that does not parse", "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAnotakey\n" + ecdsa + "\n-----END SSH HOST KEY KEYS-----\n", []string{ecdsa}, ""},
		{"no keys, a user", "ci-info: no authorized SSH keys fingerprints found for user ec2-user.\n", nil, "ec2-user"},
		{"a user name that is no Unix name", "Authorized keys from /x for user Root;rm\n", nil, ""},
	} {
		g := parseGuest([]byte(tc.console))
		if !slices.Equal(g.SSHHostKeys, tc.keys) || g.SSHUser != tc.user {
			t.Errorf("%s: parsed %+v; want keys %q, user %q", tc.name, g, tc.keys, tc.user)
		}
	}
}

func FuzzParseGuest(f *testing.F) {
	b, _ := os.ReadFile(filepath.Join("testdata", "cloud-init-final.txt"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		g := parseGuest(b)
		if len(g.SSHHostKeys) > maxHostKeys {
			t.Fatalf("%d keys kept", len(g.SSHHostKeys))
		}
	})
}

// TestNoteGuestAtReadiness: the host keys are read where the ready line was, however much
// the guest wrote after it before anyone looked.
func TestNoteGuestAtReadiness(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "cloud-init-final.txt"))
	if err != nil {
		t.Fatal(err)
	}
	final := []byte("\r\n[  121.7] cloud-init[517]: Cloud-init v. 22.4.2 finished at Mon, 30 Nov 2026 08:13:49 +0000. Datasource DataSourceNoCloud.\r\n")
	junk := bytes.Repeat([]byte("a line the guest wrote later\n"), 3<<20/29)
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	if err := os.WriteFile(path, slices.Concat(b, final, junk), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := &Tracker{Limit: func() int64 { return 8 << 20 }}
	c := Console{ID: "i-0123456789abcdef0", Path: path, Running: true}
	if !tr.Ready(c) {
		t.Fatal("not ready")
	}
	if g := GuestOf(c); len(g.SSHHostKeys) != 1 || g.SSHUser != "debian" {
		t.Errorf("kept %+v; want the host key and user debian, 3 MiB before the console's end", g)
	}
}
