package loadtest

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws one line on a terminal, redrawn in place a few times a
// second: a bar for the measured part of the run, the phase, the target
// and its rate. It writes nothing when the run is not on a terminal (the
// caller passes a nil writer then).
type progress struct {
	w      io.Writer
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
	p := &progress{w: w, stopCh: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
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
	close(p.stopCh)
	<-p.done
}

// phase starts a phase: an unmeasured one with a label (calibration,
// warm-up), or with an empty label the measured rounds, lasting d.
func (p *progress) phase(label string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label = label
	p.phaseEnd = time.Now().Add(d)
	if label == "" {
		p.total, p.began = d, time.Now()
	}
}

func (p *progress) round(target string, i, rounds int, rec *Recorder) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
