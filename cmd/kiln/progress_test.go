package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

func TestProgressLine(t *testing.T) {
	const id = "ami-0f3c2a9d1e7b6c540"
	bar := func(cols int, fill string) string { return "[" + fill + strings.Repeat(" ", cols-len(fill)) + "]" }
	for _, tc := range []struct {
		name string
		s    barState
		want string
	}{
		{"moving, with rate and ETA", barState{Label: id, Done: 420 * mib, Total: 1000 * mib, Rate: 35 * mib, Elapsed: 12 * time.Second, Width: 110},
			// 580 MiB left at 35 MiB/s: 16.6 s.
			id + " " + bar(30, "===========>") + "  42% 420.0 MiB / 1000.0 MiB  35.0 MiB/s  ETA 0:17"},
		{"no rate yet: the time it has run, no ETA", barState{Label: id, Done: 0, Total: gib, Elapsed: 3 * time.Second, Width: 110},
			id + " " + bar(30, "") + "   0% 0 B / 1.0 GiB  0:03"},
		{"a little done: no head yet", barState{Label: id, Done: 20 * mib, Total: gib, Elapsed: 3 * time.Second, Width: 110},
			id + " " + bar(30, "") + "   1% 20.0 MiB / 1.0 GiB  0:03"},
		{"total not known yet", barState{Label: id, Done: 5 * mib, Rate: mib, Elapsed: 61 * time.Second, Width: 110},
			id + " 5.0 MiB  1.0 MiB/s  1:01"},
		{"total not known, nothing done", barState{Label: id, Elapsed: 2 * time.Second, Width: 110},
			id + " 0 B  0:02"},
		{"done past the estimate shows the total, no ETA", barState{Label: id, Done: 3 * gib, Total: 2 * gib, Rate: gib, Elapsed: time.Second, Width: 110},
			id + " " + bar(30, strings.Repeat("=", 30)) + " 100% 2.0 GiB / 2.0 GiB  1.0 GiB/s"},
		{"final: 100 % and the time it took", barState{Label: id, Done: 900 * mib, Total: gib, Rate: 10, Elapsed: 90 * time.Minute, Final: true, Width: 110},
			id + " " + bar(30, strings.Repeat("=", 30)) + " 100% 1.0 GiB in 1:30:00"},
		{"final past the estimate", barState{Label: id, Done: 2 * gib, Total: gib, Elapsed: 2 * time.Second, Final: true, Width: 110},
			id + " " + bar(30, strings.Repeat("=", 30)) + " 100% 2.0 GiB in 0:02"},
		{"final of nothing known", barState{Label: id, Final: true, Width: 110},
			id + " " + bar(30, strings.Repeat("=", 30)) + " 100% 0 B in 0:00"},
		{"100 columns: a shorter bar", barState{Label: id, Done: gib / 2, Total: gib, Rate: mib, Elapsed: time.Second, Width: 100},
			id + " " + bar(23, "==========>") + "  50% 512.0 MiB / 1.0 GiB  1.0 MiB/s  ETA 8:32"},
		{"80 columns: the bar without the id", barState{Label: id, Done: gib / 2, Total: gib, Rate: mib, Elapsed: time.Second, Width: 80},
			bar(25, "===========>") + "  50% 512.0 MiB / 1.0 GiB  1.0 MiB/s  ETA 8:32"},
		{"no width is 80", barState{Label: id, Done: gib / 4, Total: gib},
			bar(25, "=====>") + "  25% 256.0 MiB / 1.0 GiB  0:00"},
		{"too narrow for a bar", barState{Label: id, Done: gib / 2, Total: gib, Rate: mib, Elapsed: time.Second, Width: 64},
			" 50% 512.0 MiB / 1.0 GiB  1.0 MiB/s  ETA 8:32"},
		{"too narrow for the text: cut", barState{Label: id, Done: gib / 2, Total: gib, Width: 20},
			" 50% 512.0 MiB / 1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := progressLine(tc.s)
			if got != tc.want {
				t.Errorf("progressLine(%+v)\n got %q\nwant %q", tc.s, got, tc.want)
			}
			width := tc.s.Width
			if width == 0 {
				width = 80
			}
			if len(got) > width {
				t.Errorf("%d columns, wider than %d", len(got), width)
			}
		})
	}
}

// TestBarKeepsItsWidth: on one terminal the bar has the same width whatever the text
// after it says, so it does not jump as the numbers change.
func TestBarKeepsItsWidth(t *testing.T) {
	for _, width := range []int{80, 100, 132} {
		want := -1
		for _, s := range []barState{
			{Label: "ami-1", Done: 0, Total: 1000, Elapsed: time.Second},
			{Label: "ami-1", Done: 500 * mib, Total: 1000 * gib, Rate: 999 * mib, Elapsed: time.Hour},
			{Label: "ami-1", Done: gib, Total: gib, Rate: 1, Elapsed: time.Minute},
			{Label: "ami-1", Done: gib, Total: gib, Elapsed: 3 * time.Hour, Final: true},
		} {
			s.Width = width
			line := progressLine(s)
			open, shut := strings.Index(line, "["), strings.Index(line, "]")
			if open < 0 || shut < open {
				t.Fatalf("width %d: no bar in %q", width, line)
			}
			if want == -1 {
				want = shut - open
			}
			if shut-open != want {
				t.Errorf("width %d: bar of %d columns in %q, %d before", width, shut-open-1, line, want-1)
			}
		}
	}
}

func TestMeter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := meter{window: 5 * time.Second}
	if r := m.rate(); r != 0 {
		t.Errorf("no samples: rate %v", r)
	}
	m.observe(t0, 0)
	if r := m.rate(); r != 0 {
		t.Errorf("one sample: rate %v", r)
	}
	// 10 MiB/s for 10 s, then 1 MiB/s: the rate follows within the window.
	for i := 1; i <= 40; i++ {
		m.observe(t0.Add(time.Duration(i)*250*time.Millisecond), int64(i)*10*mib/4)
	}
	if r := m.rate(); r != 10*mib {
		t.Errorf("steady 10 MiB/s: rate %.0f", r)
	}
	last := int64(40) * 10 * mib / 4
	for i := 1; i <= 20; i++ { // 5 s at 1 MiB/s: the window holds no 10 MiB/s sample
		m.observe(t0.Add(10*time.Second+time.Duration(i)*250*time.Millisecond), last+int64(i)*mib/4)
	}
	if r := m.rate(); r != mib {
		t.Errorf("after 5 s at 1 MiB/s: rate %.0f, want %d", r, mib)
	}
	if n := len(m.samples); n > 21 {
		t.Errorf("%d samples kept for a 5 s window of 4 a second", n)
	}
	// A stall: nothing done for the whole window.
	end := last + 20*mib/4
	for i := 1; i <= 21; i++ {
		m.observe(t0.Add(15*time.Second+time.Duration(i)*250*time.Millisecond), end)
	}
	if r := m.rate(); r != 0 {
		t.Errorf("stalled for a window: rate %.0f", r)
	}
}

// TestBarRedraws: a bar redraws at most every redrawEvery however often kilnd
// answers, each draw replacing the last, and ends in a line that stays (100 % when
// the image was made, the last state when not).
func TestBarRedraws(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &bar{w: &out, width: 100, label: "ami-1", start: now, meter: meter{window: rateWindow}, now: func() time.Time { return now }}
	for i := 0; i <= 100; i++ { // 100 answers over 1 s
		b.update(&api.Progress{BytesDone: int64(i) * mib, BytesTotal: 100 * mib})
		now = now.Add(10 * time.Millisecond)
	}
	if n := strings.Count(out.String(), "\r"); n != 5 { // at 0, 250, 500, 750, 1000 ms
		t.Errorf("%d draws in 1 s; want 5\n%q", n, out.String())
	}
	b.end(true)
	lines := strings.Split(out.String(), "\r")
	final := lines[len(lines)-1]
	if !strings.HasSuffix(final, "\x1b[K\n") || !strings.Contains(final, "100% 100.0 MiB in 0:01") {
		t.Errorf("final line %q: want 100%% and the time taken, kept with a newline", final)
	}
	for _, l := range lines[1:] {
		if !strings.HasSuffix(strings.TrimSuffix(l, "\n"), "\x1b[K") {
			t.Errorf("draw %q does not clear the rest of the line", l)
		}
	}

	out.Reset()
	b = &bar{w: &out, width: 100, label: "ami-2", start: now, meter: meter{window: rateWindow}, now: func() time.Time { return now }}
	b.update(&api.Progress{BytesDone: 30 * mib, BytesTotal: 100 * mib})
	b.end(false)
	if s := out.String(); !strings.Contains(s, " 30% 30.0 MiB / 100.0 MiB") || !strings.HasSuffix(s, "\n") {
		t.Errorf("a bar that ends unmade: %q; want its last state kept", s)
	}
}
