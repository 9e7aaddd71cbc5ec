package loadtest

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws one line on a terminal, redrawn in place a few times a
// second: a bar for the measured part of the run, the phase, the target
// and its rate. Elsewhere (a pipe, a CI log) it writes a plain line when a
// phase starts and when a round ends, with the round's rate, so that a
// long run never looks hung and a log file holds no control characters.
type progress struct {
	w      io.Writer
	plain  bool
	mu     sync.Mutex
	stopCh chan struct{}
	done   chan struct{}

	label    string
	phaseEnd time.Time
	total    time.Duration // the measured part
	began    time.Time     // when the measured part began
	target   string
	roundNo  int
	rounds   int
	rec      *Recorder
	lastOK   int64
	lastAt   time.Time
	rate     float64
}

const barWidth = 24

func startProgress(w io.Writer) *progress {
	p := &progress{w: w, plain: !isTerminal(w), stopCh: make(chan struct{}), done: make(chan struct{})}
	if p.plain {
		close(p.done)
		return p
	}
	go p.loop()
	return p
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *progress) loop() {
	defer close(p.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stopCh:
			fmt.Fprint(p.w, "\r\033[K")
			return
		case <-tick.C:
			fmt.Fprint(p.w, "\r\033[K"+p.line(time.Now()))
		}
	}
}

func (p *progress) stop() {
	if p.plain {
		p.mu.Lock()
		p.endRoundLocked(time.Now())
		p.mu.Unlock()
		return
	}
	close(p.stopCh)
	<-p.done
}

// endRoundLocked writes the plain line of the round that is ending.
func (p *progress) endRoundLocked(now time.Time) {
	if !p.plain || p.rec == nil {
		return
	}
	ok, _ := p.rec.Counts()
	rate := 0.0
	if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
		rate = float64(ok-p.lastOK) / dt
	}
	left := max(0, p.began.Add(p.total).Sub(now)).Round(time.Second)
	fmt.Fprintf(p.w, "loadtest: round %d/%d  %-22s %8.0f req/s  %s left\n", p.roundNo, p.rounds, p.target, rate, left)
	p.rec = nil
}

// phase starts a phase: an unmeasured one with a label (calibration,
// warm-up), or with an empty label the measured rounds, lasting d.
func (p *progress) phase(label string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endRoundLocked(time.Now())
	p.label = label
	p.phaseEnd = time.Now().Add(d)
	if label == "" {
		p.total, p.began = d, time.Now()
	}
	if p.plain {
		if label == "" {
			label = "measuring"
		}
		fmt.Fprintf(p.w, "loadtest: %s (%s)\n", label, d.Round(time.Second))
	}
}

func (p *progress) round(target string, i, rounds int, rec *Recorder) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endRoundLocked(time.Now())
	p.target, p.roundNo, p.rounds, p.rec = target, i+1, rounds, rec
	p.lastOK, _ = rec.Counts()
	p.lastAt = time.Now()
	p.rate = 0
}

// line renders the display at now.
func (p *progress) line(now time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.label != "" {
		left := max(0, p.phaseEnd.Sub(now))
		return fmt.Sprintf("%s … %s", p.label, left.Round(time.Second))
	}
	frac := 0.0
	if p.total > 0 {
		frac = min(1, float64(now.Sub(p.began))/float64(p.total))
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", barWidth-filled)
	if p.rec != nil {
		ok, _ := p.rec.Counts()
		if dt := now.Sub(p.lastAt).Seconds(); dt >= 0.5 {
			p.rate = float64(ok-p.lastOK) / dt
			p.lastOK, p.lastAt = ok, now
		}
	}
	left := max(0, p.began.Add(p.total).Sub(now)).Round(time.Second)
	return fmt.Sprintf("%s %3.0f%%  round %d/%d  %-22s %8.0f req/s  %s left", bar, frac*100, p.roundNo, p.rounds, p.target, p.rate, left)
}
