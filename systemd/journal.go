package systemd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"
)

// JournalSocket is where journald takes native protocol messages.
const JournalSocket = "/run/systemd/journal/socket"

// Journal sends entries to journald over its native protocol: one datagram per entry,
// KEY=VALUE lines, binary-safe framing for values with newlines. It is safe for
// concurrent use.
type Journal struct {
	addr string
	mu   sync.Mutex
	conn *net.UnixConn
}

// NewJournal returns a Journal that sends to the socket at addr (JournalSocket unless a
// test says otherwise).
func NewJournal(addr string) *Journal { return &Journal{addr: addr} }

// Send sends one entry: the message, its syslog priority (0 emerg … 7 debug) and fields
// (names are made journal-safe: upper case, letters, digits and _).
func (j *Journal) Send(message string, priority int, fields map[string]string) error {
	var b bytes.Buffer
	field(&b, "MESSAGE", message)
	field(&b, "PRIORITY", fmt.Sprint(priority))
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if name := journalName(k); name != "" {
			field(&b, name, fields[k])
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.conn == nil {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.addr, Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("journal %s: %w", j.addr, err)
		}
		j.conn = c
	}
	if _, err := j.conn.Write(b.Bytes()); err != nil {
		j.conn.Close()
		j.conn = nil
		return fmt.Errorf("journal %s: %w", j.addr, err)
	}
	return nil
}

// field appends one field in the native format.
func field(b *bytes.Buffer, name, value string) {
	if !strings.ContainsRune(value, '\n') {
		b.WriteString(name + "=" + value + "\n")
		return
	}
	b.WriteString(name + "\n")
	binary.Write(b, binary.LittleEndian, uint64(len(value)))
	b.WriteString(value + "\n")
}

// journalName makes a logrus field name a journal field name, or "" when nothing of it
// is usable. Names journald keeps for itself (leading _) are not allowed.
func journalName(k string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(k) {
		switch {
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	name := strings.TrimLeft(b.String(), "_0123456789")
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// journalSender is what JournalHook needs of a journal.
type journalSender interface {
	Send(message string, priority int, fields map[string]string) error
}

// JournalHook is a logrus hook that sends every entry to the journal, with its level
// as the priority and its fields as journal fields (instance → INSTANCE, …).
type JournalHook struct {
	Journal    journalSender
	Identifier string // SYSLOG_IDENTIFIER
}

// Levels is every level.
func (h *JournalHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire sends the entry.
func (h *JournalHook) Fire(e *logrus.Entry) error {
	fields := map[string]string{"SYSLOG_IDENTIFIER": h.Identifier}
	for k, v := range e.Data {
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		fields[k] = fmt.Sprint(v)
	}
	return h.Journal.Send(e.Message, priority(e.Level), fields)
}

func priority(l logrus.Level) int {
	switch l {
	case logrus.PanicLevel:
		return 0
	case logrus.FatalLevel:
		return 2
	case logrus.ErrorLevel:
		return 3
	case logrus.WarnLevel:
		return 4
	case logrus.InfoLevel:
		return 6
	}
	return 7
}

// UnderJournal reports whether stderr is connected to the journal (systemd sets
// JOURNAL_STREAM to its device and inode), so logs should go there natively.
func UnderJournal(stderr *os.File) bool {
	var dev, ino uint64
	if _, err := fmt.Sscanf(os.Getenv("JOURNAL_STREAM"), "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// LogToJournal sends logger's entries to the journal at addr instead of its output.
func LogToJournal(logger *logrus.Logger, addr, identifier string) {
	logger.AddHook(&JournalHook{Journal: NewJournal(addr), Identifier: identifier})
	logger.SetOutput(io.Discard)
}
