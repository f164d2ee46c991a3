package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"kiln/daemon/api"
)

// Progress bars: how an image being made (register, create) comes along, drawn on
// stderr when it is a terminal, as
//
//	ami-0f3c2a9d1e7b6c540 [=====>            ]  42% 120.0 MiB / 1.0 GiB  35.2 MiB/s  ETA 0:24
//
// (on a terminal narrower than about 100 columns, without the image's id) and, once
// the image is available, a line that stays:
//
//	ami-0f3c2a9d1e7b6c540 [==================] 100% 1.0 GiB in 0:31

// redrawEvery is the least time between two draws of a bar.
const redrawEvery = 250 * time.Millisecond

// rateWindow is how far back the rate of a bar looks: long enough to smooth the
// bursts of a copy, short enough to follow a change of pace.
const rateWindow = 5 * time.Second

// meter measures a rate over a sliding window of samples of a growing count.
type meter struct {
	window  time.Duration
	samples []sample
}

type sample struct {
	at   time.Time
	done int64
}

// observe records that done bytes were done at t (t never goes back).
func (m *meter) observe(t time.Time, done int64) {
	m.samples = append(m.samples, sample{t, done})
	// Keep the newest sample at or before the window's start, so the rate spans the
	// whole window once it is full.
	cut := 0
	for i, s := range m.samples {
		if t.Sub(s.at) >= m.window {
			cut = i
		}
	}
	m.samples = m.samples[cut:]
}

// rate is the bytes per second over the window: 0 with fewer than two samples, or
// when nothing was done (or the count went back).
func (m *meter) rate() float64 {
	if len(m.samples) < 2 {
		return 0
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	secs := last.at.Sub(first.at).Seconds()
	if secs <= 0 || last.done <= first.done {
		return 0
	}
	return float64(last.done-first.done) / secs
}

// barState is what one progress line shows.
type barState struct {
	Label       string // the image's id
	Done, Total int64  // bytes; a Total of 0 is not known (yet)
	Rate        float64
	Elapsed     time.Duration
	// Final: the image is made. The line shows 100 % and the time it took.
	Final bool
	Width int // the terminal's columns; the line is never longer (0: 80)
}

// textCols is the columns kept for the text after a bar, the widest it usually is:
// "100% 1023.9 MiB / 1023.9 MiB  999.9 MiB/s  ETA 59:59". The bar's width depends on
// the terminal's alone, so it does not jump as the text changes.
const textCols = 52

// layout is the columns of a bar on a terminal of width columns (30 at most; 0: no
// bar) and whether the label goes before it: the text first, then a bar of 10 columns
// or more, then the label.
func layout(width int, label string) (bar int, withLabel bool) {
	room := width - textCols - 3 // "[", "] "
	switch {
	case room-len(label)-1 >= 10:
		return min(room-len(label)-1, 30), true
	case room >= 10:
		return min(room, 30), false
	}
	return 0, len(label)+1+textCols <= width
}

// progressLine draws s as one line of at most s.Width columns, without a newline. A
// done larger than the total (the total is an estimate) shows as the total.
func progressLine(s barState) string {
	width := s.Width
	if width <= 0 {
		width = 80
	}
	done, total := max(s.Done, 0), s.Total
	var text string
	switch {
	case s.Final:
		total = max(total, done)
		text = fmt.Sprintf("100%% %s in %s", humanBytes(total), clock(s.Elapsed))
	case total <= 0: // nothing to measure against: what is done, and for how long
		text = humanBytes(done)
		if s.Rate > 0 {
			text += fmt.Sprintf("  %s/s", humanBytes(int64(s.Rate)))
		}
		return fit(s.Label+" "+text+"  "+clock(s.Elapsed), width)
	default:
		done = min(done, total)
		text = fmt.Sprintf("%3d%% %s / %s", int(100*done/total), humanBytes(done), humanBytes(total))
		switch left := total - done; {
		case s.Rate > 0 && left > 0:
			text += fmt.Sprintf("  %s/s  ETA %s", humanBytes(int64(s.Rate)), clock(time.Duration(float64(left)/s.Rate*float64(time.Second))))
		case s.Rate > 0:
			text += fmt.Sprintf("  %s/s", humanBytes(int64(s.Rate)))
		default: // no rate yet (or none now): how long it has run instead of a guess
			text += "  " + clock(s.Elapsed)
		}
	}
	bar, withLabel := layout(width, s.Label)
	prefix := ""
	if withLabel {
		prefix = s.Label + " "
	}
	if bar == 0 {
		return fit(prefix+text, width)
	}
	fill := bar
	if !s.Final {
		fill = int(int64(bar) * done / total)
	}
	head := ""
	if fill > 0 && fill < bar {
		fill, head = fill-1, ">"
	}
	return fit(fmt.Sprintf("%s[%s%s%s] %s", prefix, strings.Repeat("=", fill), head, strings.Repeat(" ", bar-fill-len(head)), text), width)
}

// fit cuts a line (ASCII) to width columns.
func fit(line string, width int) string {
	if len(line) > width {
		return line[:width]
	}
	return line
}

// clock formats a duration as m:ss, or h:mm:ss from an hour on.
func clock(d time.Duration) string {
	secs := int64(max(d, 0).Round(time.Second) / time.Second)
	if secs >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", secs/3600, secs/60%60, secs%60)
	}
	return fmt.Sprintf("%d:%02d", secs/60, secs%60)
}

// bar draws the progress of one image on a terminal: at most every redrawEvery, each
// draw replacing the last (\r, then the rest of the line cleared), until end leaves a
// line that stays.
type bar struct {
	w      io.Writer
	width  int
	label  string
	start  time.Time
	meter  meter
	last   time.Time // of the last draw
	done   int64
	total  int64
	drawn  bool
	now    func() time.Time
	closed bool
}

func newBar(w io.Writer, label string) *bar {
	return &bar{w: w, width: termWidth(w), label: label, start: time.Now(), meter: meter{window: rateWindow}, now: time.Now}
}

// update takes the image as kilnd answered and redraws when it is time.
func (b *bar) update(p *api.Progress) {
	now := b.now()
	if p != nil {
		b.done, b.total = max(b.done, p.BytesDone), p.BytesTotal
		b.meter.observe(now, b.done)
	}
	if b.drawn && now.Sub(b.last) < redrawEvery {
		return
	}
	b.draw(false)
}

func (b *bar) draw(final bool) {
	now := b.now()
	line := progressLine(barState{Label: b.label, Done: b.done, Total: b.total, Rate: b.meter.rate(),
		Elapsed: now.Sub(b.start), Final: final, Width: b.width - 1}) // the last column would wrap on some terminals
	fmt.Fprintf(b.w, "\r%s\x1b[K", line)
	b.drawn, b.last = true, now
}

// end leaves the line: 100 % and the time taken when the image was made, else the
// bar as it was last (a failure, a timeout, an interrupt).
func (b *bar) end(made bool) {
	if b.closed {
		return
	}
	b.closed = true
	b.draw(made)
	fmt.Fprintln(b.w)
}

// transferBar is the progress bar of a push or pull, labelled label, on a terminal
// (not with -q): the function to hand the client (nil off a terminal, so the request
// is a plain one) and the end to call with whether it succeeded, which leaves the line
// when one was drawn (a push or pull that moved nothing draws none).
func transferBar(e *env, label string) (func(api.Progress), func(ok bool)) {
	if !isTerminal(e.stderr) || e.quiet {
		return nil, func(bool) {}
	}
	b := newBar(e.stderr, label)
	return func(p api.Progress) { b.update(&p) }, func(ok bool) {
		if b.drawn {
			b.end(ok)
		}
	}
}

// termWidth is the columns of the terminal w is, 80 when it cannot say.
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 80
}
