package events

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
)

// FilterNames are the names ParseFilter knows: type (image, instance, volume,
// snapshot), detail-type (EventBridge's name), resource (an id: ami-…, i-…, vol-…,
// snap-…) and state (the state entered, or the result: available, running, attached…).
var FilterNames = []string{"type", "detail-type", "resource", "state"}

// ParseFilter parses NAME=VALUE filters into the test an event must pass: the values of
// one name are alternatives, different names must all match (as EC2's filters). A
// lost-events notice passes every filter: a reader is told of what it missed whatever
// it asked for. A filter of another name, or without =, is an error wrapping
// errdefs.ErrInvalidArgument.
func ParseFilter(filters []string) (func(*api.Event) bool, error) {
	want := map[string][]string{}
	for _, f := range filters {
		name, value, ok := strings.Cut(f, "=")
		if !ok || value == "" {
			return nil, fmt.Errorf("filter %q: want NAME=VALUE, such as type=image: %w", f, errdefs.ErrInvalidArgument)
		}
		if !slices.Contains(FilterNames, name) {
			return nil, fmt.Errorf("filter %q: unknown name %q; the events' filters are %s: %w", f, name, strings.Join(FilterNames, ", "), errdefs.ErrInvalidArgument)
		}
		if name == "type" && !slices.Contains([]string{api.EventKindImage, api.EventKindInstance, api.EventKindVolume, api.EventKindSnapshot}, value) {
			return nil, fmt.Errorf("filter %q: want type=image, instance, volume or snapshot: %w", f, errdefs.ErrInvalidArgument)
		}
		want[name] = append(want[name], value)
	}
	return func(ev *api.Event) bool {
		if ev.DetailType == api.DetailTypeLost {
			return true
		}
		kind, resource, state := ev.Summary()
		have := map[string]string{"type": kind, "detail-type": ev.DetailType, "resource": resource, "state": state}
		for name, values := range want {
			if !slices.Contains(values, have[name]) {
				return false
			}
		}
		return true
	}, nil
}
