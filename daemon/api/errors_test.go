package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/containerd/errdefs"
)

func TestFromError(t *testing.T) {
	for _, tc := range []struct {
		err    error
		kind   Kind
		code   string
		status int
	}{
		{errdefs.ErrNotFound, KindImage, CodeInvalidAMIIDNotFound, http.StatusNotFound},
		{errdefs.ErrNotFound, KindSnapshot, CodeInvalidSnapshotNotFound, http.StatusNotFound},
		{errdefs.ErrNotFound, KindNone, CodeResourceNotFound, http.StatusNotFound},
		{errdefs.ErrAlreadyExists, KindImage, CodeInvalidAMINameDuplicate, http.StatusConflict},
		{errdefs.ErrInvalidArgument, KindImage, CodeInvalidParameterValue, http.StatusBadRequest},
		{errdefs.ErrFailedPrecondition, KindImage, CodeIncorrectState, http.StatusConflict},
		{errdefs.ErrPermissionDenied, KindNone, CodeUnauthorizedOperation, http.StatusForbidden},
		{errdefs.ErrUnavailable, KindNone, CodeServiceUnavailable, http.StatusServiceUnavailable},
		{errors.New("disk full"), KindImage, CodeInternalError, http.StatusInternalServerError},
	} {
		wrapped := fmt.Errorf("image ami-0123456789abcdef0: %w", tc.err)
		ae := FromError(wrapped, tc.kind)
		if ae.Code != tc.code || ae.Status() != tc.status {
			t.Errorf("%v (kind %d): %s %d, want %s %d", tc.err, tc.kind, ae.Code, ae.Status(), tc.code, tc.status)
		}
		// The class comes back on the client side, and its words are not said twice.
		if tc.code != CodeInternalError && !errors.Is(ae, tc.err) {
			t.Errorf("%s does not unwrap to %v", ae.Code, tc.err)
		}
		if tc.code != CodeInternalError && ae.Message != "image ami-0123456789abcdef0" {
			t.Errorf("message %q", ae.Message)
		}
	}
	pass := &Error{Code: CodeUnknownParameter, Message: "x"}
	if FromError(fmt.Errorf("wrapped: %w", pass), KindImage) != pass {
		t.Error("an *Error does not pass through")
	}
	if !errdefs.IsInvalidArgument(&Error{Code: CodeRequestTooLarge}) || (&Error{Code: CodeRequestTooLarge}).Status() != http.StatusRequestEntityTooLarge {
		t.Error("RequestEntityTooLarge")
	}
}

// quotaErr is a domain quota error as the daemon makes them: its Quota method marks it.
type quotaErr struct{}

func (quotaErr) Error() string                  { return "bob's quota of volumes is 2, 2 in use, and this needs 1 more" }
func (quotaErr) Unwrap() error                  { return errdefs.ErrResourceExhausted }
func (quotaErr) Quota() (limit, use, asked int) { return 2, 2, 1 }

func TestFromErrorTyped(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code string
		msg  string
	}{
		{fmt.Errorf("volume: %w", quotaErr{}), CodeQuotaExceeded, "volume: bob's quota of volumes is 2, 2 in use, and this needs 1 more"},
		{fmt.Errorf("no room for a 4th machine: %w", errdefs.ErrResourceExhausted), CodeResourceLimitExceeded, "no room for a 4th machine"},
		{fmt.Errorf("no instance action %q: %w", "jump", ErrUnknownAction), CodeInvalidAction, `no instance action "jump"`},
		{fmt.Errorf("volume vol-1 is attached; detach it first: %w", errdefs.ErrConflict), CodeVolumeInUse, "volume vol-1 is attached; detach it first"},
	} {
		kind := KindInstance
		if tc.code == CodeVolumeInUse {
			kind = KindVolume
		}
		ae := FromError(tc.err, kind)
		if ae.Code != tc.code || ae.Message != tc.msg {
			t.Errorf("%v: %s %q, want %s %q", tc.err, ae.Code, ae.Message, tc.code, tc.msg)
		}
	}
}
