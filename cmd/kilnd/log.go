package main

import (
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"kiln/systemd"
)

// setUpLog configures the logger all of kilnd logs through (containerd/log's log.L,
// containerd's own code in kilnd included): level, format, containerd's notices that
// are no news made Debug, and the journal when kilnd's stderr is the journal's.
func setUpLog(o logOptions) {
	_ = log.SetLevel(o.level)
	_ = log.SetFormat(log.OutputFormat(o.format))
	demoteNoise(log.L.Logger)
	if systemd.UnderJournal() {
		// After demoteNoise's hook: the journal's sees the level it set.
		systemd.LogToJournal(log.L.Logger, "kilnd")
	}
}

// noise are the messages containerd logs at Warn on every start of kilnd that say
// nothing wrong, logged at Debug instead:
//
//   - "failed check for fsverity support": containerd's local content store
//     (plugins/content/local.NewLabeledStore) tries to enable fs-verity on a file under
//     the store's root at each start, and warns where the file system has none (tmpfs,
//     ext4 without its verity feature, xfs): almost everywhere. kiln does not need it
//     (the store checks each blob's digest as it is written). The store logs through
//     log.L, the global logger, not its context's, so that no logger can be given to
//     that one call: the message itself is matched.
var noise = map[string]bool{
	"failed check for fsverity support": true,
}

// demoteNoise makes logger log the noise messages at Debug, and no others: a hook
// lowers an entry's level (logrus has checked it already), and the formatter then
// writes nothing for an entry below the logger's level.
func demoteNoise(logger *logrus.Logger) {
	logger.SetFormatter(levelGate{logger.Formatter})
	logger.AddHook(demote{})
}

// demote is a logrus hook lowering the noise messages' Warn to Debug.
type demote struct{}

func (demote) Levels() []logrus.Level { return []logrus.Level{logrus.WarnLevel} }

func (demote) Fire(e *logrus.Entry) error {
	if noise[e.Message] {
		e.Level = logrus.DebugLevel
	}
	return nil
}

// levelGate formats an entry only when its level is the logger's or above: a hook may
// have lowered it after logrus let it through.
type levelGate struct{ logrus.Formatter }

func (g levelGate) Format(e *logrus.Entry) ([]byte, error) {
	if !e.Logger.IsLevelEnabled(e.Level) {
		return nil, nil
	}
	return g.Formatter.Format(e)
}
