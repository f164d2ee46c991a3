package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"kiln/daemon/events"
	"kiln/daemon/record"
	"kiln/internal/kilntest"
)

func newSet(t *testing.T) *Set {
	t.Helper()
	root := t.TempDir()
	meta := kilntest.MetaDB(t, root)
	log, err := events.Open(meta, func() events.Retention { return events.Retention{} })
	if err != nil {
		t.Fatal(err)
	}
	db, err := record.Open(meta, log)
	if err != nil {
		t.Fatal(err)
	}
	return New(db, nil)
}

// TestFingerprints: the fingerprints are the cloud's, as the tools compute them: a
// created RSA key's is the SHA-1 of its private key in PKCS#8 (openssl pkcs8 | sha1), an
// imported RSA key's the MD5 of its public key in DER (openssl pkey -pubout | md5), an
// ED25519 key's the base64 SHA-256 ssh-keygen -l prints (with base64's padding).
func TestFingerprints(t *testing.T) {
	ssh, openssl := kilntest.Need(t, "ssh-keygen"), kilntest.Need(t, "openssl")
	s := newSet(t)
	dir := t.TempDir()
	run := func(argv ...string) string {
		t.Helper()
		out, err := kilntest.Command(t, argv...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(argv, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	// openssl's digests print as "(stdin)= HEX" (or "SHA1(stdin)= aa:bb…" with -c).
	digest := func(out string) string { return out[strings.LastIndex(out, " ")+1:] }

	rsa, err := s.Create("alice", "made-rsa", TypeRSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	der := filepath.Join(dir, "rsa.der")
	if err := os.WriteFile(filepath.Join(dir, "rsa.pem"), []byte(rsa.KeyMaterial), 0o600); err != nil {
		t.Fatal(err)
	}
	run(openssl, "pkcs8", "-topk8", "-nocrypt", "-in", filepath.Join(dir, "rsa.pem"), "-outform", "DER", "-out", der)
	if want := digest(run(openssl, "sha1", "-c", der)); rsa.KeyFingerprint != want {
		t.Errorf("created RSA: %s, openssl says %s", rsa.KeyFingerprint, want)
	}

	ed, err := s.Create("alice", "made-ed", "", nil)
	if err != nil || ed.KeyType != TypeED25519 {
		t.Fatalf("create: %+v, %v", ed, err)
	}
	pub := filepath.Join(dir, "ed.pub")
	os.WriteFile(pub, []byte(ed.PublicKey+"\n"), 0o600)
	// "256 SHA256:base64 comment (ED25519)"
	f := strings.Fields(run(ssh, "-l", "-E", "sha256", "-f", pub))
	if want := strings.TrimPrefix(f[1], "SHA256:") + "="; ed.KeyFingerprint != want {
		t.Errorf("ED25519: %s, ssh-keygen says %s", ed.KeyFingerprint, want)
	}
	// The private key is one ssh-keygen reads, and its public half is the pair's.
	priv := filepath.Join(dir, "ed")
	os.WriteFile(priv, []byte(ed.KeyMaterial), 0o600)
	if got := run(ssh, "-y", "-f", priv); got != ed.PublicKey {
		t.Errorf("ssh-keygen -y of the private key: %q, want %q", got, ed.PublicKey)
	}

	// Imported: a key ssh-keygen made.
	run(ssh, "-q", "-m", "PEM", "-t", "rsa", "-b", "3072", "-N", "", "-C", "alice@desk", "-f", filepath.Join(dir, "imp"))
	b, _ := os.ReadFile(filepath.Join(dir, "imp.pub"))
	imp, err := s.Import("alice", "imported", string(b), nil)
	if err != nil {
		t.Fatal(err)
	}
	run(openssl, "pkey", "-in", filepath.Join(dir, "imp"), "-pubout", "-outform", "DER", "-out", filepath.Join(dir, "imp.der"))
	if want := digest(run(openssl, "md5", "-c", filepath.Join(dir, "imp.der"))); imp.KeyFingerprint != want || imp.KeyMaterial != "" {
		t.Errorf("imported RSA: %s, openssl says %s (key material %q)", imp.KeyFingerprint, want, imp.KeyMaterial)
	}
}

// TestKeyPairRules: names are per owner, once each; bad names, types and keys are
// refused; by name a key pair is found among its owner's only.
func TestKeyPairRules(t *testing.T) {
	s := newSet(t)
	a, err := s.Create("alice", "k", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("alice", "k", "", nil); !errdefs.IsAlreadyExists(err) {
		t.Errorf("a second k of alice's: %v", err)
	}
	if _, err := s.Create("bob", "k", "", nil); err != nil {
		t.Errorf("bob's k: %v", err)
	}
	for _, bad := range []struct{ name, typ, key string }{
		{"", "", ""}, {"a b", "", ""}, {".hidden", "", ""}, {"a/b", "", ""}, {strings.Repeat("x", MaxNameLen+1), "", ""},
		{"key-0123456789abcdef0", "", ""}, {"ok", "dsa", ""}, {"ok", "", "ssh-rsa AAAA not-a-key"}, {"ok", "", "-----BEGIN RSA PRIVATE KEY-----"},
	} {
		var err error
		if bad.key != "" {
			_, err = s.Import("alice", bad.name, bad.key, nil)
		} else {
			_, err = s.Create("alice", bad.name, bad.typ, nil)
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: %v; want invalid", bad, err)
		}
	}
	own := func(o string) bool { return o == "bob" }
	if _, err := s.Get("k", "bob", own); err != nil {
		t.Errorf("bob's k by name: %v", err)
	}
	if _, err := s.Get(a.KeyPairID, "bob", own); !errdefs.IsNotFound(err) {
		t.Errorf("alice's k by id, for bob: %v", err)
	}
	if id, err := s.Delete("k", "alice", func(o string) bool { return o == "alice" }); err != nil || id != a.KeyPairID {
		t.Fatalf("delete alice's k: %q, %v; want %s", id, err, a.KeyPairID)
	}
	if n := len(s.List(func(string) bool { return true })); n != 1 {
		t.Errorf("%d key pairs after alice's went; want bob's", n)
	}
}
