package keys

import (
	"crypto/ed25519"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/ssh"

	"kiln/daemon/api"
	"kiln/daemon/record"
	"kiln/internal/ids"
)

// Prefix is a key pair id's.
const Prefix = "key-"

// Types of key pairs kilnd makes.
const (
	TypeED25519 = "ed25519"
	TypeRSA     = "rsa"
)

// rsaBits is the size of the RSA keys kilnd makes, as the cloud's.
const rsaBits = 2048

// MaxNameLen bounds a key pair's name.
const MaxNameLen = 255

// Set keeps every user's key pairs. It is safe for concurrent use.
type Set struct {
	db  *record.DB
	mu  sync.Mutex
	all map[string]record.KeyPair // by id
}

// New makes the set of the key pairs loaded from db.
func New(db *record.DB, loaded []record.KeyPair) *Set {
	s := &Set{db: db, all: map[string]record.KeyPair{}}
	for _, kp := range loaded {
		s.all[kp.ID] = kp
	}
	return s
}

// Create makes a key pair of typ (ed25519 when empty) for owner, with tags (checked by
// the caller); the answer holds its private key, which kilnd keeps nowhere.
func (s *Set) Create(owner, name, typ string, tags map[string]string) (api.KeyPair, error) {
	var private, fingerprint string
	var public ssh.PublicKey
	switch typ {
	case "", TypeED25519:
		typ = TypeED25519
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return api.KeyPair{}, err
		}
		block, err := ssh.MarshalPrivateKey(priv, "")
		if err != nil {
			return api.KeyPair{}, err
		}
		if public, err = ssh.NewPublicKey(pub); err != nil {
			return api.KeyPair{}, err
		}
		private, fingerprint = string(pem.EncodeToMemory(block)), sha256Fingerprint(public)
	case TypeRSA:
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return api.KeyPair{}, err
		}
		if public, err = ssh.NewPublicKey(&priv.PublicKey); err != nil {
			return api.KeyPair{}, err
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return api.KeyPair{}, err
		}
		// The cloud's fingerprint of a pair it made: SHA-1 of the private key in PKCS#8.
		sum := sha1.Sum(pkcs8)
		fingerprint = colonHex(sum[:])
		private = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}))
	default:
		return api.KeyPair{}, fmt.Errorf("key type %q: want ed25519 or rsa: %w", ids.Clip(typ), errdefs.ErrInvalidArgument)
	}
	kp, err := s.add(owner, name, typ, fingerprint, public, tags)
	if err != nil {
		return api.KeyPair{}, err
	}
	out := View(kp)
	out.KeyMaterial = private
	return out, nil
}

// Import keeps a public key of owner's (authorized_keys form: ssh-ed25519 or ssh-rsa),
// with tags (checked by the caller).
func (s *Set) Import(owner, name, publicKey string, tags map[string]string) (api.KeyPair, error) {
	public, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey))
	if err != nil {
		return api.KeyPair{}, fmt.Errorf("public key: %v (want one line as in authorized_keys or a .pub file: ssh-ed25519 AAAA… or ssh-rsa AAAA…): %w",
			err, errdefs.ErrInvalidArgument)
	}
	var typ, fingerprint string
	switch public.Type() {
	case ssh.KeyAlgoED25519:
		typ, fingerprint = TypeED25519, sha256Fingerprint(public)
	case ssh.KeyAlgoRSA:
		key, ok := public.(ssh.CryptoPublicKey)
		if !ok {
			return api.KeyPair{}, fmt.Errorf("public key: an RSA key kiln cannot read: %w", errdefs.ErrInvalidArgument)
		}
		der, err := x509.MarshalPKIXPublicKey(key.CryptoPublicKey())
		if err != nil {
			return api.KeyPair{}, err
		}
		if n := key.CryptoPublicKey().(*rsa.PublicKey).N.BitLen(); n < rsaBits {
			return api.KeyPair{}, fmt.Errorf("public key: an RSA key of %d bits; at least %d: %w", n, rsaBits, errdefs.ErrInvalidArgument)
		}
		// The cloud's fingerprint of an imported RSA key: MD5 of the public key in DER.
		sum := md5.Sum(der)
		typ, fingerprint = TypeRSA, colonHex(sum[:])
	default:
		return api.KeyPair{}, fmt.Errorf("public key of type %s: want ssh-ed25519 or ssh-rsa: %w", public.Type(), errdefs.ErrInvalidArgument)
	}
	kp, err := s.add(owner, name, typ, fingerprint, public, tags)
	if err != nil {
		return api.KeyPair{}, err
	}
	return View(kp), nil
}

// add records a key pair, refusing a name its owner has.
func (s *Set) add(owner, name, typ, fingerprint string, public ssh.PublicKey, tags map[string]string) (record.KeyPair, error) {
	if err := checkName(name); err != nil {
		return record.KeyPair{}, err
	}
	kp := record.KeyPair{ID: ids.NewID(Prefix), Name: name, OwnerID: owner, Type: typ, Fingerprint: fingerprint,
		PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(public))), CreateTime: time.Now().UTC(), Tags: tags}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.all {
		if o.OwnerID == owner && o.Name == name {
			return record.KeyPair{}, fmt.Errorf("key pair %q exists (%s); choose another name or remove it: %w", name, o.ID, errdefs.ErrAlreadyExists)
		}
	}
	if err := s.db.PutKeyPair(kp); err != nil {
		return record.KeyPair{}, err
	}
	s.all[kp.ID] = kp
	return kp, nil
}

// Get finds a key pair the caller may see by its id or the start of it, or by name among
// owner's own.
func (s *Set) Get(ref, owner string, visible func(owner string) bool) (record.KeyPair, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found []record.KeyPair
	for _, kp := range s.all {
		if visible(kp.OwnerID) {
			found = append(found, kp)
		}
	}
	slices.SortFunc(found, func(a, b record.KeyPair) int { return strings.Compare(a.ID, b.ID) })
	return ids.Pick("key pair", Prefix, ref, owner, found, func(kp record.KeyPair) ids.Ref {
		r := ids.Ref{ID: kp.ID, Owner: kp.OwnerID}
		if kp.OwnerID == owner { // names are each owner's own
			r.Name = kp.Name
		}
		return r
	})
}

// List are the key pairs the caller may see, by name.
func (s *Set) List(visible func(owner string) bool) []api.KeyPair {
	s.mu.Lock()
	out := []api.KeyPair{}
	for _, kp := range s.all {
		if visible(kp.OwnerID) {
			out = append(out, View(kp))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b api.KeyPair) int {
		return strings.Compare(a.OwnerID+"\x00"+a.KeyName, b.OwnerID+"\x00"+b.KeyName)
	})
	return out
}

// Delete removes a key pair. Instances launched with it keep the key they were given.
func (s *Set) Delete(ref, owner string, visible func(owner string) bool) (string, error) {
	kp, err := s.Get(ref, owner, visible)
	if err != nil {
		return "", err
	}
	if err := s.db.DeleteKeyPair(kp.ID); err != nil {
		return "", err
	}
	s.mu.Lock()
	delete(s.all, kp.ID)
	s.mu.Unlock()
	return kp.ID, nil
}

// Tag changes the tags of a key pair the caller may see (found as Get finds it): change
// gets its tags and returns the new ones (it must not change the map it gets). The
// answer is the key pair then.
func (s *Set) Tag(ref, owner string, visible func(owner string) bool, change func(map[string]string) (map[string]string, error)) (api.KeyPair, error) {
	found, err := s.Get(ref, owner, visible)
	if err != nil {
		return api.KeyPair{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kp, ok := s.all[found.ID]
	if !ok {
		return api.KeyPair{}, ids.NotFound("key pair", ref, nil) // deleted meanwhile
	}
	if kp.Tags, err = change(kp.Tags); err != nil {
		return api.KeyPair{}, err
	}
	if err := s.db.PutKeyPair(kp); err != nil {
		return api.KeyPair{}, err
	}
	s.all[kp.ID] = kp
	return View(kp), nil
}

// View is the API's view of a key pair.
func View(kp record.KeyPair) api.KeyPair {
	out := api.KeyPair{KeyPairID: kp.ID, KeyName: kp.Name, KeyType: kp.Type, KeyFingerprint: kp.Fingerprint,
		PublicKey: kp.PublicKey, OwnerID: kp.OwnerID, CreateTime: kp.CreateTime, Tags: kp.Tags}
	if out.Tags == nil {
		out.Tags = map[string]string{}
	}
	return out
}

// sha256Fingerprint is the cloud's fingerprint of an ED25519 key: the SHA-256 of its SSH
// wire form in base64, as ssh-keygen -l prints it (with base64's padding).
func sha256Fingerprint(k ssh.PublicKey) string {
	sum := sha256.Sum256(k.Marshal())
	return base64.StdEncoding.EncodeToString(sum[:])
}

// colonHex is b in hex, a colon between bytes.
func colonHex(b []byte) string {
	h := hex.EncodeToString(b)
	parts := make([]string, 0, len(b))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// checkName checks a key pair's name: 1 to MaxNameLen letters, digits, '.', '-', '_' and
// '@', beginning with a letter or a digit (it names the private key's file under
// ~/.ssh/kiln/), never a key pair id.
func checkName(name string) error {
	return ids.CheckWord("key pair name", name, MaxNameLen, ".-_@", Prefix)
}
