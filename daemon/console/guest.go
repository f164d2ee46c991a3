package console

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"

	"github.com/containerd/log"
	"golang.org/x/crypto/ssh"
)

// What a guest says of itself on its console, for kiln ssh: cloud-init prints the
// guest's SSH host keys there (between "-----BEGIN SSH HOST KEY KEYS-----" and its END
// line), and names the user it gave the launch's key to ("Authorized keys from … for
// user debian"). kilnd reads them when the guest is seen ready and keeps them in
// guestFile: the ring drops old output, and cloud-init prints the keys only at an
// instance's first boot. The guest is the authority on its own host keys, as EC2's
// console output is.
const (
	guestFile = "guest.json"
	// guestWindow is how much of the console's end a ready guest's host keys are
	// looked for in.
	guestWindow = 1 << 20
	// maxHostKeys bounds what a guest can have kept.
	maxHostKeys = 8
)

// Guest is what a guest's console said of it.
type Guest struct {
	// SSHHostKeys are known_hosts keys ("ssh-ed25519 AAAA…"), each parsed.
	SSHHostKeys []string `json:"sshHostKeys,omitempty"`
	// SSHUser is the user cloud-init gave the launch's key to.
	SSHUser string `json:"sshUser,omitempty"`
}

var (
	hostKeysBegin = []byte("-----BEGIN SSH HOST KEY KEYS-----")
	hostKeysEnd   = []byte("-----END SSH HOST KEY KEYS-----")
	hostKeyLine   = regexp.MustCompile(`(?:^|\s)((?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/]+={0,2})(?:\s|$)`)
	sshUserLine   = regexp.MustCompile(`(?:Authorized keys from \S+|no authorized SSH keys fingerprints found) for user ([a-z_][a-z0-9_-]{0,31})\b`)
)

// parseGuest finds, in console output b, the last host-key block and the last user
// cloud-init named. Keys that do not parse are left out.
func parseGuest(b []byte) Guest {
	var g Guest
	if i := bytes.LastIndex(b, hostKeysBegin); i >= 0 {
		block := b[i+len(hostKeysBegin):]
		if j := bytes.Index(block, hostKeysEnd); j >= 0 {
			for _, line := range bytes.Split(block[:j], []byte("\n")) {
				m := hostKeyLine.FindSubmatch(line)
				if m == nil || len(g.SSHHostKeys) == maxHostKeys {
					continue
				}
				if k, _, _, _, err := ssh.ParseAuthorizedKey(m[1]); err == nil {
					g.SSHHostKeys = append(g.SSHHostKeys, string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(k))))
				}
			}
		}
	}
	if all := sshUserLine.FindAllSubmatch(b, -1); len(all) > 0 {
		g.SSHUser = string(all[len(all)-1][1])
	}
	return g
}

// noteGuest reads the console f up to end (where its ready line was read) for what the
// guest says of itself and keeps what it found in guestFile, over what an earlier boot
// said only where this one said something. The caller holds the console's state.
func (t *Tracker) noteGuest(c Console, f *os.File, end int64) {
	from := ringStart(f, max(c.Start, end-guestWindow), end, t.Limit())
	b := make([]byte, end-from)
	n, _ := f.ReadAt(b, from)
	found := parseGuest(b[:n])
	if len(found.SSHHostKeys) == 0 && found.SSHUser == "" {
		return
	}
	g := GuestOf(c)
	if len(found.SSHHostKeys) > 0 {
		g.SSHHostKeys = found.SSHHostKeys
	}
	if found.SSHUser != "" {
		g.SSHUser = found.SSHUser
	}
	out, _ := json.Marshal(g)
	dir := filepath.Dir(c.Path)
	tmp := filepath.Join(dir, guestFile+".new")
	err := os.WriteFile(tmp, out, 0o600)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, guestFile))
	}
	if err != nil {
		log.L.WithError(err).WithField("instance", c.ID).Warn("keep the guest's SSH host keys")
	}
}

// GuestOf is what the instance's guest said of itself, as kept: empty until its console
// showed it (a guest without cloud-init never does).
func GuestOf(c Console) Guest {
	var g Guest
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(c.Path), guestFile)); err == nil {
		json.Unmarshal(b, &g)
	}
	return g
}
