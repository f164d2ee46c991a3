package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
)

// Error is an API error as sent on the wire: {"code": ..., "message": ...}. Its Unwrap
// gives back the errdefs class, so errdefs.IsNotFound(err) works on the client side.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Cloud-style error codes.
const (
	CodeInvalidAMIIDNotFound    = "InvalidAMIID.NotFound"
	CodeInvalidAMINameDuplicate = "InvalidAMIName.Duplicate"
	CodeInvalidSnapshotNotFound = "InvalidSnapshot.NotFound"
	CodeInvalidParameterValue   = "InvalidParameterValue"
	CodeInvalidRequest          = "InvalidRequest"
	CodeUnknownParameter        = "UnknownParameter"
	CodeRequestTooLarge         = "RequestEntityTooLarge"
	CodeIncorrectState          = "IncorrectState"
	CodeUnauthorizedOperation   = "UnauthorizedOperation"
	CodeResourceAlreadyExists   = "ResourceAlreadyExists"
	CodeResourceNotFound        = "ResourceNotFound"
	CodeServiceUnavailable      = "ServiceUnavailable"
	CodeInternalError           = "InternalError"
	CodeInvalidAction           = "InvalidAction" // no such API call
	CodeInvalidInstanceNotFound = "InvalidInstanceID.NotFound"
	CodeInstanceNameDuplicate   = "InvalidInstanceName.Duplicate"
	CodeUnsupportedOperation    = "UnsupportedOperation"
	CodeInvalidVolumeNotFound   = "InvalidVolume.NotFound"
	CodeVolumeInUse             = "VolumeInUse"
	CodeResourceLimitExceeded   = "ResourceLimitExceeded"
	CodeQuotaExceeded           = "QuotaExceeded" // a user's quota; the message gives the limit and the use
	CodeInvalidKeyPairNotFound  = "InvalidKeyPair.NotFound"
	CodeInvalidKeyPairDuplicate = "InvalidKeyPair.Duplicate"
	// CodeRegistryDataInvalid: a registry sent bytes that are not what their digest or
	// size says (a pull or push refuses them; nothing is kept).
	CodeRegistryDataInvalid = "RegistryDataInvalid"
)

// Kind is the kind of resource an operation is about; it picks the resource-specific
// codes (InvalidAMIID.NotFound, not a bare NotFound).
type Kind int

// Resource kinds.
const (
	KindNone Kind = iota
	KindImage
	KindSnapshot
	KindInstance
	KindVolume
	KindKeyPair
	// KindRegistry: what a registry sent or answered (a push or pull); bytes that are
	// not what their digest or size says are RegistryDataInvalid.
	KindRegistry
)

// codes maps the codes to their class and HTTP status; the first code of a class is the
// one used for KindNone.
var codes = map[string]struct {
	class  error
	status int
}{
	CodeInvalidAMIIDNotFound:    {errdefs.ErrNotFound, http.StatusNotFound},
	CodeInvalidSnapshotNotFound: {errdefs.ErrNotFound, http.StatusNotFound},
	CodeResourceNotFound:        {errdefs.ErrNotFound, http.StatusNotFound},
	CodeInvalidAMINameDuplicate: {errdefs.ErrAlreadyExists, http.StatusConflict},
	CodeResourceAlreadyExists:   {errdefs.ErrAlreadyExists, http.StatusConflict},
	CodeInvalidParameterValue:   {errdefs.ErrInvalidArgument, http.StatusBadRequest},
	CodeInvalidRequest:          {errdefs.ErrInvalidArgument, http.StatusBadRequest},
	CodeUnknownParameter:        {errdefs.ErrInvalidArgument, http.StatusBadRequest},
	CodeRequestTooLarge:         {errdefs.ErrInvalidArgument, http.StatusRequestEntityTooLarge},
	CodeIncorrectState:          {errdefs.ErrFailedPrecondition, http.StatusConflict},
	CodeUnauthorizedOperation:   {errdefs.ErrPermissionDenied, http.StatusForbidden},
	CodeServiceUnavailable:      {errdefs.ErrUnavailable, http.StatusServiceUnavailable},
	CodeInternalError:           {errdefs.ErrUnknown, http.StatusInternalServerError},
	CodeInvalidAction:           {errdefs.ErrNotImplemented, http.StatusNotFound},
	CodeInvalidInstanceNotFound: {errdefs.ErrNotFound, http.StatusNotFound},
	CodeInstanceNameDuplicate:   {errdefs.ErrAlreadyExists, http.StatusConflict},
	CodeUnsupportedOperation:    {errdefs.ErrNotImplemented, http.StatusBadRequest},
	CodeInvalidVolumeNotFound:   {errdefs.ErrNotFound, http.StatusNotFound},
	CodeVolumeInUse:             {errdefs.ErrConflict, http.StatusConflict},
	CodeResourceLimitExceeded:   {errdefs.ErrResourceExhausted, http.StatusConflict},
	CodeQuotaExceeded:           {errdefs.ErrResourceExhausted, http.StatusConflict},
	CodeInvalidKeyPairNotFound:  {errdefs.ErrNotFound, http.StatusNotFound},
	CodeInvalidKeyPairDuplicate: {errdefs.ErrAlreadyExists, http.StatusConflict},
	CodeRegistryDataInvalid:     {errdefs.ErrDataLoss, http.StatusBadGateway},
}

// ErrUnknownAction marks a request for an API call, or an action of one, that does not
// exist (InvalidAction).
var ErrUnknownAction = errors.New("unknown action")

// FromError maps an error from kiln's packages to the API error for a resource kind.
// An *Error passes through unchanged.
func FromError(err error, kind Kind) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	c := code(err, kind)
	// The class's own words ("not found") end the message; the code says that already.
	msg := strings.TrimSuffix(err.Error(), ": "+codes[c].class.Error())
	msg = strings.TrimSuffix(msg, ": "+ErrUnknownAction.Error())
	return &Error{Code: c, Message: msg}
}

func code(err error, kind Kind) string {
	switch {
	case errors.Is(err, ErrUnknownAction):
		return CodeInvalidAction
	case errdefs.IsDataLoss(err) && kind == KindRegistry:
		return CodeRegistryDataInvalid
	case errdefs.IsNotFound(err):
		switch kind {
		case KindImage:
			return CodeInvalidAMIIDNotFound
		case KindSnapshot:
			return CodeInvalidSnapshotNotFound
		case KindInstance:
			return CodeInvalidInstanceNotFound
		case KindVolume:
			return CodeInvalidVolumeNotFound
		case KindKeyPair:
			return CodeInvalidKeyPairNotFound
		}
		return CodeResourceNotFound
	case errdefs.IsAlreadyExists(err):
		switch kind {
		case KindImage, KindRegistry: // a pull's: the image's name
			return CodeInvalidAMINameDuplicate
		case KindInstance:
			return CodeInstanceNameDuplicate
		case KindKeyPair:
			return CodeInvalidKeyPairDuplicate
		}
		return CodeResourceAlreadyExists
	case errdefs.IsNotImplemented(err):
		return CodeUnsupportedOperation
	case errdefs.IsInvalidArgument(err):
		return CodeInvalidParameterValue
	case errdefs.IsConflict(err) && kind == KindVolume: // another request or instance has it
		return CodeVolumeInUse
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		return CodeIncorrectState
	case errdefs.IsResourceExhausted(err):
		var q interface {
			Quota() (limit, use, asked int)
		}
		if errors.As(err, &q) { // a user's quota, not a limit of the host's
			return CodeQuotaExceeded
		}
		return CodeResourceLimitExceeded
	case errdefs.IsPermissionDenied(err):
		return CodeUnauthorizedOperation
	case errdefs.IsUnavailable(err):
		return CodeServiceUnavailable
	}
	return CodeInternalError
}

// Status is the HTTP status that carries the error.
func (e *Error) Status() int {
	if c, ok := codes[e.Code]; ok {
		return c.status
	}
	return http.StatusInternalServerError
}

// Unwrap gives the errdefs class of the error's code.
func (e *Error) Unwrap() error {
	if c, ok := codes[e.Code]; ok {
		return c.class
	}
	return errdefs.ErrUnknown
}
