package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// chunks reads its strings one per Read, then its end (err, or io.EOF).
type chunks struct {
	parts []string
	err   error
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	n := copy(p, c.parts[0])
	c.parts = c.parts[1:]
	return n, nil
}

// TestCopyInput: the escape byte (Ctrl-], 0x1d) detaches wherever it comes, what came
// before it in the same read is sent and nothing after it; the input's end detaches;
// a read or write error is said as one; other control bytes (Ctrl-C, Ctrl-D) go to the
// guest as typed.
func TestCopyInput(t *testing.T) {
	broken := errors.New("pipe broke")
	for _, tc := range []struct {
		name  string
		in    io.Reader
		sent  string
		ended error
	}{
		{"escape alone", &chunks{parts: []string{"\x1d"}}, "", errEscaped},
		{"escape after a line", &chunks{parts: []string{"ls\r", "pwd\r\x1dnot this"}}, "ls\rpwd\r", errEscaped},
		{"escape first", &chunks{parts: []string{"\x1dls\r"}}, "", errEscaped},
		{"nothing after the escape is read", &chunks{parts: []string{"a\x1d", "b"}}, "a", errEscaped},
		{"control bytes pass", &chunks{parts: []string{"\x03\x04\x1b[A\x1c"}}, "\x03\x04\x1b[A\x1c", errInputEnd},
		{"input's end", strings.NewReader("echo hi\n"), "echo hi\n", errInputEnd},
		{"empty input", strings.NewReader(""), "", errInputEnd},
		{"one byte a read", iotest.OneByteReader(strings.NewReader("ab\x1dc")), "ab", errEscaped},
		{"read error", &chunks{parts: []string{"x"}, err: broken}, "x", broken},
	} {
		var out bytes.Buffer
		err := copyInput(&out, tc.in)
		if out.String() != tc.sent || !errors.Is(err, tc.ended) {
			t.Errorf("%s: sent %q, ended %v; want %q, %v", tc.name, out.String(), err, tc.sent, tc.ended)
		}
	}
	if err := copyInput(failWriter{broken}, &chunks{parts: []string{"x"}}); !errors.Is(err, broken) {
		t.Errorf("write error: %v, want %v", err, broken)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }
