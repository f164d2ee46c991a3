package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"kiln/daemon/api"
)

// RunInstances launches instances of an image and returns them, running.
func (c *Client) RunInstances(ctx context.Context, req api.RunInstancesRequest) ([]api.Instance, error) {
	var out []api.Instance
	err := c.do(ctx, http.MethodPost, "/instances", nil, req, &out)
	return out, err
}

// Instances lists the caller's instances that pass the filters (KEY=PATTERN);
// terminated ones only with all (or a filter on instance-state-name).
func (c *Client) Instances(ctx context.Context, all bool, filters ...string) ([]api.Instance, error) {
	q := filterQuery(filters)
	if all {
		q.Set("all", "true")
	}
	var out []api.Instance
	err := c.do(ctx, http.MethodGet, "/instances", q, nil, &out)
	return out, err
}

// Instance returns the instance ref names: an i- id or a name.
func (c *Client) Instance(ctx context.Context, ref string) (api.Instance, error) {
	var inst api.Instance
	err := c.do(ctx, http.MethodGet, "/instances/"+url.PathEscape(ref), nil, nil, &inst)
	return inst, err
}

// WaitInstance waits until the instance is in state want ("running", "stopped",
// "terminated") or, for "ready", running with its guest saying it is ready (see
// api.Instance.Ready). It fails when the instance ends in a state that does not lead
// there: terminated, or stopped with no image creation that starts it again. It ends
// with ctx; the instance goes on.
func (c *Client) WaitInstance(ctx context.Context, ref, want string) (api.Instance, error) {
	return c.WaitInstanceProgress(ctx, ref, want, nil)
}

// ErrInstanceSettled is returned by WaitInstance when the instance settles in a state
// other than the one waited for.
var ErrInstanceSettled = errors.New("instance settled elsewhere")

// WaitInstanceProgress is WaitInstance calling progress (when not nil) with the
// instance as it is, at least once a second.
func (c *Client) WaitInstanceProgress(ctx context.Context, ref, want string, progress func(api.Instance)) (api.Instance, error) {
	q := url.Values{"wait": {want}}
	if progress != nil {
		q.Set("timeout", "1s")
	}
	for {
		var inst api.Instance
		err := c.do(ctx, http.MethodGet, "/instances/"+url.PathEscape(ref), q, nil, &inst)
		if err != nil {
			return inst, err
		}
		if progress != nil {
			progress(inst)
		}
		switch {
		case inst.State == want || want == "ready" && inst.Ready:
			return inst, nil
		case inst.State == "terminated" || inst.State == "stopped" && want != "stopped" && inst.CreatingImage == "":
			return inst, fmt.Errorf("%w: instance %s is %s (%s), not %s", ErrInstanceSettled, inst.ID, inst.State, inst.StateReason, want)
		}
		if err := ctx.Err(); err != nil {
			return inst, err
		}
	}
}

// InstanceAction asks for stop, start, reboot or terminate.
func (c *Client) InstanceAction(ctx context.Context, ref, action string, force bool) (api.Instance, error) {
	var inst api.Instance
	var body any
	if force {
		body = api.StopRequest{Force: true}
	}
	err := c.do(ctx, http.MethodPost, "/instances/"+url.PathEscape(ref)+"/"+action, nil, body, &inst)
	return inst, err
}

// Exec runs a program in the instance's guest through its agent and returns how it
// ended; it waits until then, or until ctx ends.
func (c *Client) Exec(ctx context.Context, ref string, req api.ExecRequest) (api.ExecResult, error) {
	var res api.ExecResult
	err := c.do(ctx, http.MethodPost, "/instances/"+url.PathEscape(ref)+"/exec", nil, req, &res)
	return res, err
}

// Console copies the instance's serial console log to w; with follow it goes on
// copying what comes until the instance stops or ctx ends.
func (c *Client) Console(ctx context.Context, ref string, follow bool, w io.Writer) error {
	return c.ConsoleTail(ctx, ref, follow, -1, w)
}

// ConsoleTail is Console from the log's last lines lines on (kilnd finds them; all of
// the log when lines is negative).
func (c *Client) ConsoleTail(ctx context.Context, ref string, follow bool, lines int, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	if lines >= 0 {
		q.Set("tail", strconv.Itoa(lines))
	}
	u := "http://kilnd/" + api.Version + "/instances/" + url.PathEscape(ref) + "/console"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.unreachable(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// AttachConsole attaches to a running instance's serial console: what is written to the
// connection the guest reads as typed, and the guest's output comes out of it, live,
// until either side closes it (kilnd does when the instance's QEMU exits: reads then end
// with io.EOF). It returns the instance's id too. One client at a time per instance:
// another one attached (still so after up to 7 s) fails with an IncorrectState error, as
// does an instance that is not running. The caller closes the connection; ctx bounds
// only the attach itself.
func (c *Client) AttachConsole(ctx context.Context, ref string) (io.ReadWriteCloser, string, error) {
	u := "http://kilnd/" + api.Version + "/instances/" + url.PathEscape(ref) + "/console/attach"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", api.ConsoleProtocol)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, "", c.unreachable(ctx, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			return nil, "", decodeError(resp)
		}
		return nil, "", fmt.Errorf("attach: kilnd answered %s, not a switch to the console", resp.Status)
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok { // net/http gives a switched connection's body as one since Go 1.12
		resp.Body.Close()
		return nil, "", errors.New("attach: the switched connection cannot be written")
	}
	return conn, resp.Header.Get(api.ConsoleInstanceHeader), nil
}

// ConsoleText returns the console log as text, with the guest's \r\n made \n.
func (c *Client) ConsoleText(ctx context.Context, ref string) (string, error) {
	var b strings.Builder
	err := c.Console(ctx, ref, false, &b)
	return strings.ReplaceAll(b.String(), "\r", ""), err
}
