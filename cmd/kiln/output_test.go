package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// hostile holds what must never reach a terminal raw: ESC (an OSC title sequence), BEL,
// NUL, C1's CSI, a newline and a tab (they would forge or shift rows), a right-to-left
// override.
const hostile = "a\x1b]0;pwned\x07b\x00c\u009b31md\ne\tf\u202eg"

// controls are the runes of hostile that an escaped output must not carry.
var controls = []string{"\x1b", "\x07", "\x00", "\u009b", "\u202e"}

func TestTableAndFieldsEscapeControls(t *testing.T) {
	var b bytes.Buffer
	if err := table(&b, []string{"A", "B"}, [][]string{{hostile, "x"}}); err != nil {
		t.Fatal(err)
	}
	if err := fields(&b, [][2]string{{"Tag " + hostile, hostile}}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, c := range controls {
		if strings.Contains(out, c) {
			t.Errorf("output carries %q raw:\n%q", c, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("%d lines; want 3 (header, row, field): a newline in a value made a line of its own:\n%s", n, out)
	}
	for _, want := range []string{`a\x1b]0;pwned\x07b\x00c\u009b31md\ne\tf\u202eg`} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not show the value escaped as %s:\n%s", want, out)
		}
	}
	if clean("plain ünïcödé (ok) [x] 'y' @z \uFFFD") != "plain ünïcödé (ok) [x] 'y' @z \uFFFD" {
		t.Errorf("clean changed printable text")
	}
	if got := clean("a\xffb"); got != `a\xffb` {
		t.Errorf("clean of an invalid byte: %q", got)
	}
}

// TestInspectEscapesOthersTags: a tag and description set through the API with control
// characters are escaped by inspect and ls, and exact in JSON.
func TestInspectEscapesOthersTags(t *testing.T) {
	socket := startDaemon(t)
	disk := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	desc := "desc \u009b31m \u202e" // a description refuses C0 controls, not C1
	im, err := client.New(socket).RegisterImage(context.Background(), api.RegisterImageRequest{Name: "esc-test",
		Description: desc, Disks: []api.Disk{{Name: disk, Format: "raw"}}, Tags: map[string]string{"k\x1b[2J": hostile}})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"image", "inspect", im.ID}, {"image", "ls"}} {
		code, out, errOut := kiln(t, socket, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		for _, c := range append(controls, "\x1b[2J") {
			if strings.Contains(out, c) {
				t.Errorf("kiln %s prints %q raw:\n%q", strings.Join(args, " "), c, out)
			}
		}
	}
	_, out, _ := kiln(t, socket, "image", "inspect", im.ID, "-o", "json")
	var got api.Image
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Tags["k\x1b[2J"] != hostile || got.Description != desc {
		t.Errorf("JSON is not exact: %v, tags %q, description %q", err, got.Tags, got.Description)
	}
}
