package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Decode decodes a request body strictly into v: at most MaxBodySize bytes, one JSON
// value, no unknown fields, nothing after it. Errors are *Error, saying what was wrong.
func Decode(r io.Reader, v any) error {
	lr := &io.LimitedReader{R: r, N: MaxBodySize + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if lr.N <= 0 {
		return &Error{Code: CodeRequestTooLarge, Message: fmt.Sprintf("request body is over %d bytes", MaxBodySize)}
	}
	if err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Code: CodeInvalidRequest, Message: "request body holds more than one JSON value"}
	}
	return nil
}

func bodyError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return &Error{Code: CodeInvalidRequest, Message: "request body is empty; a JSON object is needed"}
	case errors.As(err, &syn):
		return &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf("request body is not valid JSON (at byte %d): %v", syn.Offset, err)}
	case errors.As(err, &typ):
		return &Error{Code: CodeInvalidParameterValue, Message: fmt.Sprintf("field %q: want %s, got JSON %s", typ.Field, typ.Type, typ.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "): // encoding/json has no type for this one
		return &Error{Code: CodeUnknownParameter, Message: "request body has an " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	return &Error{Code: CodeInvalidRequest, Message: "request body: " + err.Error()}
}
