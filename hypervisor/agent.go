package hypervisor

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// The guest agent (qemu-guest-agent, QGA) answers on a virtio-serial port of the guest,
// org.qemu.guest_agent.0, which QEMU joins to a socket kilnd connects to. Its protocol is
// QMP's JSON without a greeting, ids or events, over a stream that may hold what an
// earlier client or an earlier boot of the guest left: half a command on the agent's side,
// replies nobody read on ours. Every exchange therefore starts with guest-sync-delimited
// and a random id, and the answer to the command is the first message after the echo of
// that id.

// Limits of an Agent.
const (
	// AgentTimeout bounds one exchange with the agent (a command and its answer) when ctx
	// does not end sooner.
	AgentTimeout = 30 * time.Second
	// ShutdownWait bounds how long Shutdown waits, once guest-shutdown is sent, for the
	// agent to refuse it: on success it sends nothing.
	ShutdownWait = 5 * time.Second
	// maxAgentMessage bounds one message from the agent: a guest is not trusted with
	// kilnd's memory. guest-exec-status carries up to 16 MiB of each output stream
	// (QEMU 7.2), base64-encoded.
	maxAgentMessage = 64 << 20
	// sentinel is the byte the agent sends before its answer to guest-sync-delimited, and
	// kilnd before the request: both sides' parsers drop what came before it.
	sentinel = 0xFF
	// Exec polls guest-exec-status this often at first, and at most this seldom.
	execPollFirst = 20 * time.Millisecond
	execPollMax   = 500 * time.Millisecond
)

// Shutdown modes, as guest-shutdown takes them.
const (
	ShutdownPowerdown = "powerdown"
	ShutdownReboot    = "reboot"
	ShutdownHalt      = "halt"
)

// AgentError is an error the guest agent answered a command with; it keeps the agent's
// class (GenericError, CommandNotFound, …) and description. CommandNotFound, which the
// agent gives for a command it lacks and for one its administrator disabled
// (--block-rpcs), is errdefs.ErrNotImplemented.
type AgentError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *AgentError) Error() string { return e.Class + ": " + e.Desc }

// Unwrap classifies the error for errdefs.
func (e *AgentError) Unwrap() error {
	if e.Class == "CommandNotFound" {
		return errdefs.ErrNotImplemented
	}
	return nil
}

// errProtocol marks an answer that does not follow the protocol: the stream is out of
// step and the next exchange resynchronises it.
var errProtocol = errors.New("not the guest agent's protocol")

// Agent is a connection to a guest's agent. Its methods are safe for concurrent use and
// run one exchange at a time; each is bounded by its ctx and by AgentTimeout per exchange,
// and a call whose ctx ends returns ctx's error. An Agent whose connection failed (QEMU
// went, Close) fails every call with errdefs.ErrUnavailable: dial again. Whoever dials
// closes it.
type Agent struct {
	path string
	conn net.Conn

	mu    sync.Mutex // one exchange at a time; guards the fields below
	in    *agentStream
	dirty bool  // the agent may hold half a command: precede the next sync with the sentinel
	err   error // why the connection failed; set once

	closeOnce sync.Once
}

// DialAgent connects to the guest agent's socket at path. It does not wait for the agent:
// QEMU takes the connection whether or not the guest runs one; Ping tells when it answers.
// A socket whose backlog is full (its one client not yet let go) is tried again until ctx
// ends. A refused or missing socket is errdefs.ErrUnavailable.
func DialAgent(ctx context.Context, path string) (*Agent, error) {
	var d net.Dialer
	wait := 5 * time.Millisecond
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return &Agent{path: path, conn: conn, in: &agentStream{r: bufio.NewReaderSize(conn, 64<<10)}, dirty: true}, nil
		}
		if !errors.Is(err, syscall.EAGAIN) {
			return nil, fmt.Errorf("guest agent %s: %w: %w", path, errdefs.ErrUnavailable, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("guest agent %s: %w: %w (%w)", path, errdefs.ErrUnavailable, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Close closes the connection; a call under way fails. It is idempotent.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() { a.conn.Close() })
	return nil
}

// Ping asks the agent to answer, and returns nil once it has: the guest runs an agent and
// it is in step with kilnd.
func (a *Agent) Ping(ctx context.Context) error {
	return a.call(ctx, "guest-ping", nil, nil)
}

// AgentInfo is what the agent says of itself.
type AgentInfo struct {
	Version  string          // "7.2.22"
	Commands map[string]bool // every command it knows, and whether it is enabled
}

// Info asks the agent for its version and commands.
func (a *Agent) Info(ctx context.Context) (AgentInfo, error) {
	var ret struct {
		Version  string `json:"version"`
		Commands []struct {
			Name    string `json:"name"`
			Enabled bool   `json:"enabled"`
		} `json:"supported_commands"`
	}
	if err := a.call(ctx, "guest-info", nil, &ret); err != nil {
		return AgentInfo{}, err
	}
	info := AgentInfo{Version: ret.Version, Commands: make(map[string]bool, len(ret.Commands))}
	for _, c := range ret.Commands {
		info.Commands[c.Name] = c.Enabled
	}
	return info, nil
}

// ExecRequest is a program for Exec to run in the guest.
type ExecRequest struct {
	Path  string   // the program; a name without a slash is looked up in the agent's PATH
	Args  []string // its arguments, after argv[0] (which the agent sets to Path)
	Env   []string // "NAME=value": the whole environment; nil inherits the agent's
	Stdin []byte   // its standard input; nil gives it none
}

// ExecResult is how a program run by Exec ended and what it printed.
type ExecResult struct {
	PID      int // in the guest
	ExitCode int // -1 when a signal ended it
	Signal   int // the signal that ended it, or 0
	Stdout   []byte
	Stderr   []byte
	// The agent keeps at most 16 MiB of each stream (QEMU 7.2) and drops the rest.
	StdoutTruncated bool
	StderrTruncated bool
}

// Exec runs a program in the guest (guest-exec), waits for it to exit (polling
// guest-exec-status, from every 20 ms to every 500 ms) and returns how it ended with its
// output. A program that does not start is an *AgentError (GenericError, naming the
// program). If ctx ends before the program exits, Exec returns ctx's error and the
// program goes on running in the guest: nothing kills it.
func (a *Agent) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	if req.Path == "" {
		return ExecResult{}, fmt.Errorf("guest agent exec: no program: %w", errdefs.ErrInvalidArgument)
	}
	args := map[string]any{"path": req.Path, "capture-output": true}
	if req.Args != nil {
		args["arg"] = req.Args
	}
	if req.Env != nil {
		args["env"] = req.Env
	}
	if req.Stdin != nil {
		args["input-data"] = base64.StdEncoding.EncodeToString(req.Stdin)
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := a.call(ctx, "guest-exec", args, &started); err != nil {
		var refused *AgentError
		if errors.As(err, &refused) && !errdefs.IsNotImplemented(err) { // the program did not start
			return ExecResult{}, fmt.Errorf("run %s in the guest: %w: %w", req.Path, err, errdefs.ErrInvalidArgument)
		}
		return ExecResult{}, fmt.Errorf("run %s in the guest: %w", req.Path, err)
	}
	res := ExecResult{PID: started.PID}
	wait := execPollFirst
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return res, fmt.Errorf("run %s in the guest: process %d still runs: %w", req.Path, res.PID, ctx.Err())
		}
		var st struct {
			Exited       bool   `json:"exited"`
			ExitCode     *int   `json:"exitcode"`
			Signal       *int   `json:"signal"`
			OutData      string `json:"out-data"`
			ErrData      string `json:"err-data"`
			OutTruncated bool   `json:"out-truncated"`
			ErrTruncated bool   `json:"err-truncated"`
		}
		if err := a.call(ctx, "guest-exec-status", map[string]any{"pid": res.PID}, &st); err != nil {
			if ctx.Err() != nil {
				return res, fmt.Errorf("run %s in the guest: process %d may still run: %w", req.Path, res.PID, err)
			}
			return res, fmt.Errorf("run %s in the guest (process %d): %w", req.Path, res.PID, err)
		}
		if !st.Exited {
			t.Reset(wait)
			wait = min(2*wait, execPollMax)
			continue
		}
		var err error
		if res.Stdout, err = base64.StdEncoding.DecodeString(st.OutData); err != nil {
			return res, fmt.Errorf("run %s in the guest: its output: %w", req.Path, err)
		}
		if res.Stderr, err = base64.StdEncoding.DecodeString(st.ErrData); err != nil {
			return res, fmt.Errorf("run %s in the guest: its error output: %w", req.Path, err)
		}
		res.StdoutTruncated, res.StderrTruncated = st.OutTruncated, st.ErrTruncated
		switch {
		case st.Signal != nil:
			res.ExitCode, res.Signal = -1, *st.Signal
		case st.ExitCode != nil:
			res.ExitCode = *st.ExitCode
		default:
			return res, fmt.Errorf("run %s in the guest: process %d exited, says the agent, with neither an exit code nor a signal", req.Path, res.PID)
		}
		return res, nil
	}
}

// Shutdown asks the guest to shut down (guest-shutdown, which runs the guest's shutdown
// program): mode is ShutdownPowerdown (also when ""), ShutdownReboot or ShutdownHalt;
// another is errdefs.ErrInvalidArgument and is not sent.
//
// The agent answers guest-shutdown only when it fails (an *AgentError: the shutdown
// program failed, or the command is disabled, CommandNotFound), so Shutdown sends a
// guest-sync-delimited after it: the echo of that id means the agent took the command.
// The agent going away (the connection closed) or staying silent until ShutdownWait
// passes or ctx ends means so too: the guest's shutdown may have stopped it first. nil
// says the guest was asked, not that it went down: the caller watches the machine
// (Exited, or Watch's events) for that.
func (a *Agent) Shutdown(ctx context.Context, mode string) error {
	switch mode {
	case "":
		mode = ShutdownPowerdown
	case ShutdownPowerdown, ShutdownReboot, ShutdownHalt:
	default:
		return fmt.Errorf("guest agent %s: shutdown mode %q (want %s, %s or %s): %w",
			a.path, mode, ShutdownPowerdown, ShutdownReboot, ShutdownHalt, errdefs.ErrInvalidArgument)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.exchange(ctx, func() error { return a.sync() }); err != nil {
		return a.wrap("guest-shutdown", err)
	}
	id := rand.Int64()
	cmd, err := command("guest-shutdown", map[string]any{"mode": mode})
	if err != nil {
		return a.wrap("guest-shutdown", err)
	}
	// From here on the agent may have taken the command: what the wait ends with is the
	// answer, and the stream is left for the next exchange to resynchronise.
	cmd = append(cmd, syncCommand(id)...)
	if err := a.exchange(ctx, func() error { _, err := a.conn.Write(cmd); return err }); err != nil {
		return a.wrap("guest-shutdown", err)
	}
	a.dirty = true
	waitCtx, cancel := context.WithTimeout(ctx, ShutdownWait)
	defer cancel()
	err = a.exchange(waitCtx, func() error {
		for {
			sent, msg, err := a.in.next()
			if err != nil {
				return err
			}
			if sent {
				if n, ok := syncEcho(msg); ok && n == id {
					return nil
				}
				continue // a stale echo: cannot be, but harmless
			}
			if _, err := parseReply(msg); err != nil {
				return err // the refusal
			}
			return nil // a later agent may answer on success
		}
	})
	var refused *AgentError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		return a.wrap("guest-shutdown", err)
	case errors.Is(err, errdefs.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return nil // the agent went away, or stayed silent: it took the command
	}
	return a.wrap("guest-shutdown", err)
}

// call runs one command (args: a value that marshals to a JSON object, or nil for none)
// and decodes what it returns into ret (nil: not decoded).
func (a *Agent) call(ctx context.Context, name string, args, ret any) error {
	cmd, err := command(name, args)
	if err != nil {
		return a.wrap(name, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.exchange(ctx, func() error { return a.sync() }); err != nil {
		return a.wrap(name, err)
	}
	var out json.RawMessage
	err = a.exchange(ctx, func() error {
		if _, err := a.conn.Write(cmd); err != nil {
			return err
		}
		sent, msg, err := a.in.next()
		switch {
		case err != nil:
			return err
		case sent:
			return fmt.Errorf("%w: a sync answer %.80q where the command's was due", errProtocol, msg)
		}
		out, err = parseReply(msg)
		return err
	})
	if err != nil {
		return a.wrap(name, err)
	}
	if ret != nil {
		if err := json.Unmarshal(out, ret); err != nil {
			return a.wrap(name, fmt.Errorf("its answer %.80q: %w", out, err))
		}
	}
	return nil
}

func (a *Agent) wrap(name string, err error) error {
	return fmt.Errorf("guest agent: %s: %w", name, err)
}

// exchange runs f, which reads and writes the connection, bounded by ctx and
// AgentTimeout, and says what its failure means: ctx's error when ctx ended,
// errdefs.ErrUnavailable once the connection is gone. Any failure but the agent's own
// answer leaves the stream for the next exchange to resynchronise. The caller holds mu.
func (a *Agent) exchange(ctx context.Context, f func() error) error {
	if a.err != nil {
		return a.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bounded, cancel := context.WithTimeout(ctx, AgentTimeout)
	defer cancel()
	deadline, _ := bounded.Deadline()
	a.conn.SetDeadline(deadline)
	// A cancelled ctx has no deadline to set: wake the blocked read or write instead.
	fired := make(chan struct{})
	stop := context.AfterFunc(bounded, func() { a.conn.SetDeadline(time.Now()); close(fired) })
	err := f()
	if !stop() {
		<-fired // so that it cannot cut the next exchange short
	}
	var refused *AgentError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		return err // an answer: the stream is in step
	}
	a.dirty = true
	var syntax *json.SyntaxError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The connection's deadline may pass a moment before ctx says it ended.
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			return context.DeadlineExceeded
		}
		return fmt.Errorf("no answer within %s: %w", AgentTimeout, context.DeadlineExceeded)
	case errors.Is(err, errProtocol), errors.As(err, &syntax), errors.Is(err, errTooBig):
		return err
	}
	a.err = fmt.Errorf("connection lost: %w: %w", errdefs.ErrUnavailable, err)
	return a.err
}

// sync resynchronises the stream: it sends guest-sync-delimited with a new random id
// (after the sentinel when the agent may hold half a command, which makes it drop that)
// and discards what arrives until the sentinel followed by the echo of that id. The
// caller holds mu, within exchange.
func (a *Agent) sync() error {
	id := rand.Int64()
	var b []byte
	if a.dirty {
		b = append(b, sentinel)
	}
	if _, err := a.conn.Write(append(b, syncCommand(id)...)); err != nil {
		return err
	}
	for {
		if err := a.in.skipToSentinel(); err != nil {
			return err
		}
		msg, err := a.in.decode()
		if err != nil {
			var syntax *json.SyntaxError
			if errors.As(err, &syntax) || errors.Is(err, errTooBig) {
				continue // stale bytes, and a sentinel among them: on to the next
			}
			return err
		}
		if n, ok := syncEcho(msg); ok && n == id {
			a.dirty = false
			return nil
		}
	}
}

func syncCommand(id int64) []byte {
	return fmt.Appendf(nil, `{"execute":"guest-sync-delimited","arguments":{"id":%d}}`+"\n", id)
}

// syncEcho is the id in the answer to a guest-sync-delimited.
func syncEcho(msg json.RawMessage) (int64, bool) {
	var r struct {
		Return *int64 `json:"return"`
	}
	if json.Unmarshal(msg, &r) != nil || r.Return == nil {
		return 0, false
	}
	return *r.Return, true
}

// command is the agent's command name with its arguments, newline-terminated.
func command(name string, args any) ([]byte, error) {
	cmd := map[string]any{"execute": name}
	if args != nil {
		cmd["arguments"] = args
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// parseReply is what a command returned, or the agent's error as *AgentError.
func parseReply(msg json.RawMessage) (json.RawMessage, error) {
	var r struct {
		Return json.RawMessage `json:"return"`
		Error  *AgentError     `json:"error"`
	}
	if err := json.Unmarshal(msg, &r); err != nil {
		return nil, fmt.Errorf("%w: %.80q: %w", errProtocol, msg, err)
	}
	switch {
	case r.Error != nil:
		return nil, r.Error
	case r.Return == nil:
		return nil, fmt.Errorf("%w: %.80q has neither return nor error", errProtocol, msg)
	}
	return r.Return, nil
}

var errTooBig = fmt.Errorf("a message from the guest agent is over %d bytes", maxAgentMessage)

// agentStream reads what the agent sends: JSON messages, the answers to
// guest-sync-delimited preceded by the sentinel. Messages are read with a json.Decoder,
// so no line is too long, but none may pass maxAgentMessage.
type agentStream struct {
	r       *bufio.Reader
	pending []byte // read ahead by the last decoder and not part of its message
	budget  int    // bytes the message being decoded may still take
}

// Read gives a decoder the stream, pending bytes first, up to the budget.
func (s *agentStream) Read(p []byte) (int, error) {
	if s.budget <= 0 {
		return 0, errTooBig
	}
	if len(p) > s.budget {
		p = p[:s.budget]
	}
	var n int
	var err error
	if len(s.pending) > 0 {
		n = copy(p, s.pending)
		s.pending = s.pending[n:]
	} else {
		n, err = s.r.Read(p)
	}
	s.budget -= n
	return n, err
}

func (s *agentStream) readByte() (byte, error) {
	if len(s.pending) > 0 {
		b := s.pending[0]
		s.pending = s.pending[1:]
		return b, nil
	}
	return s.r.ReadByte()
}

// skipToSentinel discards everything up to and including the next sentinel.
func (s *agentStream) skipToSentinel() error {
	for {
		b, err := s.readByte()
		if err != nil {
			return err
		}
		if b == sentinel {
			return nil
		}
	}
}

// next reads the next message, and whether the sentinel came before it.
func (s *agentStream) next() (bool, json.RawMessage, error) {
	sent := false
	for {
		b, err := s.readByte()
		if err != nil {
			return false, nil, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case sentinel:
			sent = true
			continue
		}
		s.pending = append([]byte{b}, s.pending...)
		msg, err := s.decode()
		return sent, msg, err
	}
}

// decode reads one JSON value. What the decoder read beyond it, or of a value it could
// not decode, goes back to the stream.
func (s *agentStream) decode() (json.RawMessage, error) {
	s.budget = maxAgentMessage
	dec := json.NewDecoder(s)
	var msg json.RawMessage
	err := dec.Decode(&msg)
	rest, _ := io.ReadAll(dec.Buffered())
	s.pending = append(rest, s.pending...)
	return msg, err
}
