package warm

import "time"

// SetIdleTimeout changes how long a body may stall, until the returned
// function restores it.
func SetIdleTimeout(d time.Duration) (restore func()) {
	old := idleTimeout
	idleTimeout = d
	return func() { idleTimeout = old }
}
