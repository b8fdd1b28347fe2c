package upstream

import "time"

// Clock is the time source of the retry loop, the breaker and the
// rate-limit gate. Tests inject one so that outages take no real time.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
