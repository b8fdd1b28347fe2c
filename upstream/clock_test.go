package upstream

import (
	"sync"
	"time"
)

// manualClock moves only when a test advances it; for tests where several
// goroutines wait on the gate.
type manualClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// started counts the timers ever started, so a test can wait until
	// the goroutine it just started is parked on one.
	started int
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	c.started++
	return ch
}

// Advance moves the clock and fires every timer that is due.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// timersStarted is how many timers have been started so far.
func (c *manualClock) timersStarted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started
}

// awaitTimers blocks until at least n timers have been started in all:
// with n = timersStarted() before some goroutines were started, plus
// one per goroutine, they are all parked.
func (c *manualClock) awaitTimers(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for c.timersStarted() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// autoClock jumps forward whenever anyone waits: a single request's retry
// loop runs through a whole outage in no real time, and the upstream's
// script follows the same clock.
type autoClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func newAutoClock() *autoClock {
	return &autoClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *autoClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *autoClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
		c.slept += d
	}
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *autoClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
