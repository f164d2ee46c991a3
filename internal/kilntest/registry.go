package kilntest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Registry is a real OCI registry (Distribution's, Debian's docker-registry) started by
// a test: its own config, on 127.0.0.1 at a free port, with TLS by a CA the test made
// and htpasswd authentication of one user. It stops when the test ends.
type Registry struct {
	Host     string // 127.0.0.1:PORT
	CAFile   string // the CA's certificate (PEM), which signed the registry's
	CAPEM    []byte
	User     string
	Password string
	Dir      string // its config, certificates and storage
	Log      *LockedBuffer
}

// StartRegistry starts a Registry, or ends the test as Missing does when
// docker-registry or htpasswd is not installed ('make deps').
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	bin := Need(t, "docker-registry")
	htpasswd := Need(t, "htpasswd")
	r := &Registry{Dir: t.TempDir(), User: "kiln", Password: "s3cret-" + fmt.Sprint(time.Now().UnixNano()%1e6), Log: &LockedBuffer{}}
	r.CAFile = filepath.Join(r.Dir, "ca.crt")
	cert, key := filepath.Join(r.Dir, "server.crt"), filepath.Join(r.Dir, "server.key")
	var err error
	if r.CAPEM, err = writeCerts(r.CAFile, cert, key); err != nil {
		t.Fatal(err)
	}
	out, err := Command(t, htpasswd, "-nbB", r.User, r.Password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "htpasswd"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		r.Host = freePort(t)
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: kiln-test
    path: %s
`, filepath.Join(r.Dir, "data"), r.Host, cert, key, filepath.Join(r.Dir, "htpasswd"))
		conf := filepath.Join(r.Dir, "config.yml")
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", conf)
		cmd.Stdout, cmd.Stderr = r.Log, r.Log
		if err := cmd.Start(); err != nil {
			t.Fatalf("docker-registry: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			select {
			case <-done:
			case <-time.After(ExitDeadline):
				t.Errorf("docker-registry %d did not exit", cmd.Process.Pid)
			}
		})
		if r.ready(done) {
			return r
		}
		if attempt == 2 {
			t.Fatalf("docker-registry did not serve on %s within 30 s:\n%s", r.Host, Tail(r.Log.String(), 20))
		}
	}
}

// ready waits until the registry answers /v2/ (401: it wants a login), or it exited.
func (r *Registry) ready(exited <-chan struct{}) bool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.CAPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		resp, err := hc.Get("https://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// freePort is a loopback address no one listens on just now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeCerts makes a CA and a server certificate it signed for 127.0.0.1 and
// localhost, and writes the CA's certificate and the server's certificate and key.
func writeCerts(caFile, certFile, keyFile string) ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kiln test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for _, f := range []struct {
		path string
		b    []byte
	}{
		{caFile, caPEM},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})},
	} {
		if err := os.WriteFile(f.path, f.b, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// TLSConfig trusts the registry's CA (for a test's own requests).
func (r *Registry) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.CAPEM)
	return &tls.Config{RootCAs: pool}
}
