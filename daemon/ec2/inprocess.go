package ec2

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// inProcess is a RoundTripper that hands requests to kiln's API handler in this
// process: the door calls the same routes the socket serves, with the same rules.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	t.h.ServeHTTP(rec, r)
	var body io.ReadCloser = io.NopCloser(&rec.body)
	if rec.hasValue {
		body = &valueBody{v: rec.value}
	}
	return &http.Response{
		StatusCode:    rec.status,
		Status:        http.StatusText(rec.status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          body,
		ContentLength: -1,
		Request:       r,
	}, nil
}

// recorder keeps an answer: its bytes, or (api.ValueWriter) its value unencoded.
type recorder struct {
	header   http.Header
	status   int
	wrote    bool
	body     bytes.Buffer
	value    any
	hasValue bool
}

func (r *recorder) WriteValue(status int, v any) {
	r.WriteHeader(status)
	r.value, r.hasValue = v, true
}

// valueBody is an answer's value (api.ValueBody); read, it is the value's JSON. The value
// may share memory with kilnd's own state (a list a handler answered with as it is): the
// door reads it and never changes it in place.
type valueBody struct {
	v   any
	buf *bytes.Reader
}

func (b *valueBody) Value() any { return b.v }

func (b *valueBody) Read(p []byte) (int, error) {
	if b.buf == nil {
		j, err := json.Marshal(b.v)
		if err != nil {
			return 0, err
		}
		b.buf = bytes.NewReader(j)
	}
	return b.buf.Read(p)
}

func (b *valueBody) Close() error { return nil }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
