package daemon

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"time"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
)

// readyMarker matches the console lines by which a guest says it is ready: the test
// guest's, and cloud-init's last line ("Cloud-init v. 24.1 finished at …"; its earlier
// lines, "Cloud-init v. 24.1 running 'init' at …", do not count).
var readyMarker = regexp.MustCompile(`KILN-GUEST ready|Cloud-init v\. \S+ finished at `)

// viewer says which owners' instances the caller may see: its own, or all for an
// administrator.
func (s *server) viewer(c Caller) func(owner string) bool {
	return func(owner string) bool { return s.admin(c) || owner == c.User }
}

func (s *server) runInstances(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.RunInstancesRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	im, err := s.lookupImage(c, req.Image)
	if err != nil {
		return api.FromError(err, api.KindImage) // an image's error, not an instance's
	}
	insts, err := s.inst.run(r.Context(), c.User, im, req)
	out := make([]api.Instance, 0, len(insts))
	for _, inst := range insts {
		out = append(out, s.inst.toAPI(s.inst.record(inst)))
		noteCreated(r.Context(), "instance", out[len(out)-1].ID)
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

func (s *server) listInstances(w http.ResponseWriter, r *http.Request, c Caller) error {
	recs := s.inst.list(r.URL.Query().Get("all") == "true", s.viewer(c))
	out := make([]api.Instance, len(recs))
	for i, rec := range recs {
		out[i] = s.inst.toAPI(rec)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// inspectInstance answers GET /v1/instances/{instance}; with ?wait=running|ready|stopped|terminated
// it first waits (at most maxWait, or ?timeout=DURATION when that is shorter) for that,
// or for a state that will not lead there: terminated, or stopped when no image
// creation is going to start it again.
func (s *server) inspectInstance(w http.ResponseWriter, r *http.Request, c Caller) error {
	inst, err := s.inst.get(r.PathValue("instance"), s.viewer(c))
	if err != nil {
		return err
	}
	q := r.URL.Query()
	want := q.Get("wait")
	switch want {
	case "", stateRunning, "ready", stateStopped, stateTerminated:
	default:
		return fmt.Errorf("wait %q: want running, ready, stopped or terminated: %w", want, errdefs.ErrInvalidArgument)
	}
	limit := maxWait
	if t := q.Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d < 0 {
			return fmt.Errorf("timeout %q: want a duration such as 5s: %w", t, errdefs.ErrInvalidArgument)
		}
		limit = min(d, maxWait)
	}
	deadline := time.Now().Add(limit)
	for {
		view, rec := s.instanceView(inst)
		done := want == "" || rec.State == want || want == "ready" && view.Ready || rec.State == stateTerminated ||
			(want == stateRunning || want == "ready") && rec.State == stateStopped && view.CreatingImage == ""
		if done || time.Now().After(deadline) || r.Context().Err() != nil {
			writeJSON(w, http.StatusOK, view)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// instanceView is the API's view of an instance: its record, whether its guest is
// ready, and the image being created of it.
func (s *server) instanceView(inst *instance) (api.Instance, instanceRecord) {
	rec := s.inst.record(inst)
	view := s.inst.toAPI(rec)
	if rec.State == stateRunning {
		view.Ready = s.guestReady(rec)
	}
	view.CreatingImage = s.creatingImage(rec.ID)
	return view, rec
}

// instanceAction handles POST /v1/instances/{instance}/{action}.
func (s *server) instanceAction(w http.ResponseWriter, r *http.Request, c Caller) error {
	var req api.StopRequest
	if r.ContentLength != 0 {
		if err := api.Decode(r.Body, &req); err != nil {
			return err
		}
	}
	inst, err := s.inst.get(r.PathValue("instance"), s.viewer(c))
	if err != nil {
		return err
	}
	switch action := r.PathValue("action"); action {
	case "stop":
		err = s.inst.stop(inst, c.User, req.Force)
	case "start":
		err = s.inst.start(r.Context(), inst)
	case "reboot":
		err = s.inst.reboot(inst)
	case "terminate":
		err = s.inst.terminate(inst, c.User, req.Force)
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

// console answers GET /v1/instances/{instance}/console: the serial console log (what its
// ring keeps: the last consoleLimitMiB), and with ?follow=true what it gets next, until
// the instance stops or the caller goes.
func (s *server) console(w http.ResponseWriter, r *http.Request, c Caller) error {
	inst, err := s.inst.get(r.PathValue("instance"), s.viewer(c))
	if err != nil {
		return err
	}
	f, err := os.Open(s.consolePath(inst.rec.ID)) // ids never change
	if os.IsNotExist(err) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	cr := newConsoleReader(f, func() int64 { return s.settings.Load().consoleLimit() })
	if err := cr.copyTo(w); err != nil || r.URL.Query().Get("follow") != "true" {
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
		if err := cr.copyTo(w); err != nil {
			return nil
		}
		if st := s.inst.record(inst).State; st == stateStopped || st == stateTerminated {
			cr.copyTo(w)
			return nil
		}
	}
}
