package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"kiln/daemon/api"
)

// decodeBody decodes a request body strictly into v: at most api.MaxBodySize bytes, one
// JSON value, no unknown fields, nothing after it. Errors are *api.Error.
func decodeBody(r io.Reader, v any) error {
	lr := &io.LimitedReader{R: r, N: api.MaxBodySize + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if lr.N <= 0 {
		return &api.Error{Code: api.CodeRequestTooLarge, Message: fmt.Sprintf("request body is over %d bytes", api.MaxBodySize)}
	}
	if err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &api.Error{Code: api.CodeInvalidRequest, Message: "request body holds more than one JSON value"}
	}
	return nil
}

func bodyError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return &api.Error{Code: api.CodeInvalidRequest, Message: "request body is empty; a JSON object is needed"}
	case errors.As(err, &syn):
		return &api.Error{Code: api.CodeInvalidRequest, Message: fmt.Sprintf("request body is not valid JSON (at byte %d): %v", syn.Offset, err)}
	case errors.As(err, &typ):
		return &api.Error{Code: api.CodeInvalidParameterValue, Message: fmt.Sprintf("field %q: want %s, got JSON %s", typ.Field, typ.Type, typ.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "): // encoding/json has no type for this one
		return &api.Error{Code: api.CodeUnknownParameter, Message: "request body has an " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	return &api.Error{Code: api.CodeInvalidRequest, Message: "request body: " + err.Error()}
}

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	writeJSONTo(w, v)
}

func writeJSONTo(w io.Writer, v any) {
	_ = json.NewEncoder(w).Encode(v) // an error means the peer has gone; nothing to do
}
