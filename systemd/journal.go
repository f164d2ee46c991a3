package systemd

import (
	"fmt"
	"io"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// JournalHook is a logrus hook that sends every entry to journald, with its level as
// the priority and its fields as journal fields (instance → INSTANCE, …). go-systemd's
// journal speaks the native protocol: one datagram per entry, or, for an entry too big
// for a datagram, a file descriptor holding it. It is safe for concurrent use.
type JournalHook struct {
	Identifier string // SYSLOG_IDENTIFIER
}

// Levels is every level.
func (h *JournalHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire sends the entry, unless its level is below the logger's (a hook that fired
// before this one lowered it). A field whose name has nothing a journal field name may
// hold is left out.
func (h *JournalHook) Fire(e *logrus.Entry) error {
	if !e.Logger.IsLevelEnabled(e.Level) {
		return nil
	}
	fields := map[string]string{"SYSLOG_IDENTIFIER": h.Identifier}
	for k, v := range e.Data {
		name := journalName(k)
		if name == "" {
			continue
		}
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		fields[name] = fmt.Sprint(v)
	}
	return journal.Send(e.Message, priority(e.Level), fields)
}

// journalName makes a logrus field name a journal field name (upper case letters,
// digits and _, at most 64 bytes, not starting with _ or a digit), or "" when nothing
// of it is usable. go-systemd does not: it sends a name journald would drop, after
// complaining on stderr. Names with a leading _ are journald's own (trusted fields),
// so a field "_pid" becomes PID.
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

func priority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel:
		return journal.PriEmerg
	case logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// UnderJournal reports whether kilnd's stderr is connected to the journal (systemd
// sets JOURNAL_STREAM to its device and inode), so logs should go there natively.
func UnderJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return ok && err == nil
}

// LogToJournal sends logger's entries to journald (at /run/systemd/journal/socket)
// instead of its output.
func LogToJournal(logger *logrus.Logger, identifier string) {
	logger.AddHook(&JournalHook{Identifier: identifier})
	logger.SetOutput(io.Discard)
}
