package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/console"
	"kiln/daemon/imaging"
	"kiln/daemon/instances"
	"kiln/daemon/peer"
	"kiln/daemon/record"
	"kiln/hypervisor"
	"kiln/images"
)

// viewer says which owners' instances the caller may see: its own, or all for an
// administrator.
func (s *server) viewer(c peer.Caller) func(owner string) bool {
	return func(owner string) bool { return s.admin(c) || owner == c.User }
}

func (s *server) runInstances(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.RunInstancesRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	im, err := s.img.Lookup(c, req.Image)
	if err != nil {
		return api.FromError(err, api.KindImage) // an image's error, not an instance's
	}
	var key instances.Key
	if req.KeyName != "" {
		kp, err := s.keys.Get(req.KeyName, c.User, func(owner string) bool { return owner == c.User })
		if err != nil {
			return api.FromError(err, api.KindKeyPair)
		}
		key = instances.Key{Name: kp.Name, PublicKey: kp.PublicKey}
	}
	insts, err := s.inst.Run(r.Context(), c.User, im, req, key)
	out := make([]api.Instance, 0, len(insts))
	for _, inst := range insts {
		out = append(out, instanceAPI(s.inst.Record(inst)))
		audit.NoteCreated(r.Context(), "instance", out[len(out)-1].ID)
	}
	if len(out) > 0 {
		s.launchedFrom(r.Context(), im.ID, out[len(out)-1].LaunchTime)
	}
	if err != nil {
		if len(out) > 0 { // some started: say which, and what stopped the rest
			return fmt.Errorf("%d of %d instances started (%s …): %w", len(out), max(req.Count, 1), out[0].ID, err)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// listInstances answers GET /v1/instances: those not terminated (?all=true: also
// those terminated within the hour, as does a filter on instance-state-name, as the
// cloud lists them), filtered (?filter=).
func (s *server) listInstances(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	q := r.URL.Query()
	f, err := instanceFields.Parse(q["filter"])
	if err != nil {
		return err
	}
	recs := s.inst.List(q.Get("all") == "true" || f.Has("instance-state-name"), s.viewer(c))
	out := make([]api.Instance, 0, len(recs))
	for _, rec := range recs {
		if v := instanceAPI(rec); f.Match(&v) {
			out = append(out, v)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// inspectInstance answers GET /v1/instances/{instance}; with ?wait=running|ready|stopped|terminated
// it first waits (at most imaging.MaxWait, or ?timeout=DURATION when that is shorter) for that,
// or for a state that will not lead there: terminated, or stopped when no image
// creation is going to start it again.
func (s *server) inspectInstance(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	want := q.Get("wait")
	switch want {
	case "", record.StateRunning, "ready", record.StateStopped, record.StateTerminated:
	default:
		return fmt.Errorf("wait %q: want running, ready, stopped or terminated: %w", want, errdefs.ErrInvalidArgument)
	}
	limit := imaging.MaxWait
	if t := q.Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d < 0 {
			return fmt.Errorf("timeout %q: want a duration such as 5s: %w", t, errdefs.ErrInvalidArgument)
		}
		limit = min(d, imaging.MaxWait)
	}
	deadline := time.Now().Add(limit)
	for {
		view, rec := s.instanceView(inst)
		done := want == "" || rec.State == want || want == "ready" && view.Ready || rec.State == record.StateTerminated ||
			(want == record.StateRunning || want == "ready") && rec.State == record.StateStopped && view.CreatingImage == ""
		if done || time.Now().After(deadline) || r.Context().Err() != nil {
			writeJSON(w, http.StatusOK, view)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// instanceView is the API's view of an instance: its record, whether its guest is
// ready, and the image being created of it.
func (s *server) instanceView(inst *instances.Instance) (api.Instance, record.Instance) {
	rec := s.inst.Record(inst)
	view := instanceAPI(rec)
	c := s.inst.Console(rec)
	if rec.State == record.StateRunning {
		view.Ready = s.consoles.Ready(c)
	}
	g := console.GuestOf(c)
	view.SSHHostKeys, view.SSHUser = g.SSHHostKeys, cmp.Or(rec.SSHUser, g.SSHUser)
	view.CreatingImage = s.img.Creating(rec.ID)
	return view, rec
}

// instanceAction handles POST /v1/instances/{instance}/{action}.
func (s *server) instanceAction(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.StopRequest
	if r.ContentLength != 0 {
		if err := api.Decode(r.Body, &req); err != nil {
			return err
		}
	}
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	switch action := r.PathValue("action"); action {
	case "stop":
		err = s.inst.Stop(inst, c.User, req.Force)
	case "start":
		err = s.inst.Start(r.Context(), inst)
	case "reboot":
		err = s.inst.Reboot(inst)
	case "terminate":
		err = s.inst.Terminate(inst, c.User, req.Force)
	default:
		return fmt.Errorf("no instance action %q (stop, start, reboot, terminate): %w", action, api.ErrUnknownAction)
	}
	if err != nil {
		return err
	}
	view, _ := s.instanceView(inst)
	writeJSON(w, http.StatusOK, view)
	return nil
}

// exec answers POST /v1/instances/{instance}/exec: runs a program in the guest through
// its agent and answers once it has exited (or the timeout passed, or the caller went).
func (s *server) exec(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	var req api.ExecRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	switch {
	case len(req.Command) == 0 || req.Command[0] == "":
		return fmt.Errorf("exec: no command: %w", errdefs.ErrInvalidArgument)
	case len(req.Stdin) > api.MaxExecInput:
		return fmt.Errorf("exec: standard input of %d bytes is over %d: %w", len(req.Stdin), api.MaxExecInput, errdefs.ErrInvalidArgument)
	case req.TimeoutSeconds < 0 || req.TimeoutSeconds > api.MaxExecTimeoutSeconds:
		return fmt.Errorf("exec: timeout %d s: want 0 (none) to %d: %w", req.TimeoutSeconds, api.MaxExecTimeoutSeconds, errdefs.ErrInvalidArgument)
	}
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	ctx := r.Context()
	if req.TimeoutSeconds > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutSeconds)*time.Second)
		defer cancel()
	}
	res, err := s.inst.Exec(ctx, inst, hypervisor.ExecRequest{Path: req.Command[0], Args: req.Command[1:], Env: req.Env, Stdin: req.Stdin})
	if err != nil && req.TimeoutSeconds > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
		if res.PID == 0 {
			return fmt.Errorf("exec: the guest agent did not start %s within %d s: %w", req.Command[0], req.TimeoutSeconds, errdefs.ErrUnavailable)
		}
		writeJSON(w, http.StatusOK, api.ExecResult{PID: res.PID, TimedOut: true, ExitCode: -1})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ExecResult{PID: res.PID, ExitCode: res.ExitCode, Signal: res.Signal, Stdout: res.Stdout, Stderr: res.Stderr,
		StdoutTruncated: res.StdoutTruncated, StderrTruncated: res.StderrTruncated})
	return nil
}

// console answers GET /v1/instances/{instance}/console: the serial console log (what its
// ring keeps: the last consoleLimitMiB; with ?tail=N only its last N lines), and with
// ?follow=true what it gets next, until the instance stops or the caller goes.
func (s *server) console(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	q := r.URL.Query()
	tail := -1 // all
	if t := q.Get("tail"); q.Has("tail") {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return fmt.Errorf("tail %q: want a number of lines, 0 or more: %w", t, errdefs.ErrInvalidArgument)
		}
		tail = n
	}
	switch f := q.Get("follow"); f {
	case "", "true", "false":
	default:
		return fmt.Errorf("follow %q: want true or false: %w", f, errdefs.ErrInvalidArgument)
	}
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	f, err := os.Open(s.inst.Console(s.inst.Record(inst)).Path)
	if os.IsNotExist(err) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	cr := console.NewReader(f, func() int64 { return s.settings.Load().ConsoleLimit() })
	if tail >= 0 {
		if err := cr.Tail(tail); err != nil {
			return fmt.Errorf("console of %s: %w", r.PathValue("instance"), err)
		}
	}
	if err := cr.CopyTo(w); err != nil || q.Get("follow") != "true" {
		return nil
	}
	flusher, _ := w.(http.Flusher)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		if err := cr.CopyTo(w); err != nil {
			return nil
		}
		if st := s.inst.Record(inst).State; st == record.StateStopped || st == record.StateTerminated {
			cr.CopyTo(w)
			return nil
		}
	}
}

// launchedFrom records on an image when an instance was last launched from it
// (lastLaunchedTime).
func (s *server) launchedFrom(ctx context.Context, image string, at time.Time) {
	_, err := s.store.UpdateImage(image, func(im *images.Image) error {
		if at.After(im.LastLaunchedTime) {
			im.LastLaunchedTime = at
		}
		return nil
	})
	if err != nil { // deregistered meanwhile, or the DB failed: the launch stands
		log.G(ctx).WithError(err).WithField("image", image).Warn("record the image's last launch")
	}
}

// instanceAPI is the API's view of an instance record.
func instanceAPI(rec record.Instance) api.Instance {
	out := api.Instance{
		ID: rec.ID, Name: rec.Name, ImageID: rec.ImageID, OwnerID: rec.OwnerID, State: rec.State, StateReason: rec.StateReason,
		InstanceType: rec.InstanceType, CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB, Accelerator: rec.Accel,
		RootDeviceType: rec.RootDeviceType, RootDeviceName: rec.RootDeviceName, LaunchTime: rec.LaunchTime, PID: rec.PID,
		BlockDeviceMappings: []api.InstanceBlockDeviceMapping{},
	}
	if !rec.ForceOffAt.IsZero() && (rec.State == record.StateStopping || rec.State == record.StateShuttingDown) {
		t := rec.ForceOffAt
		out.ForceOffAt = &t
	}
	for _, mp := range rec.Mappings {
		out.BlockDeviceMappings = append(out.BlockDeviceMappings, api.InstanceBlockDeviceMapping(mp))
	}
	out.KeyName = rec.KeyName
	out.BootMode, out.SecureBoot, out.TPM = rec.BootMode, rec.SecureBoot, rec.TPM
	if out.BootMode == "" {
		out.BootMode = "legacy-bios" // launched before kiln had UEFI
	}
	out.MetadataTokens = api.MetadataTokensOptional
	if rec.MetadataTokensRequired {
		out.MetadataTokens = api.MetadataTokensRequired
	}
	if out.SSHPort = rec.SSHPort; rec.SSHPort != 0 {
		out.Ports = append(out.Ports, api.Port{Protocol: "tcp", HostIP: "127.0.0.1", HostPort: rec.SSHPort, GuestPort: 22})
	}
	for _, p := range rec.Ports {
		out.Ports = append(out.Ports, api.Port(p))
	}
	if out.Tags = rec.Tags; out.Tags == nil {
		out.Tags = map[string]string{}
	}
	return out
}
