package upstream

import "time"

// window counts request outcomes over the breaker's window in buckets, so
// that its memory stays the same however many requests a second arrive.
type window struct {
	width   time.Duration
	buckets [windowBuckets]bucket
}

const windowBuckets = 10

type bucket struct {
	slot       int64 // which width-long stretch of time it counts
	ok, failed int
}

func newWindow(length time.Duration) window {
	return window{width: max(length/windowBuckets, time.Millisecond)}
}

func (w *window) add(now time.Time, failed bool) {
	slot := now.UnixNano() / int64(w.width)
	b := &w.buckets[slot%windowBuckets]
	if b.slot != slot {
		*b = bucket{slot: slot}
	}
	if failed {
		b.failed++
	} else {
		b.ok++
	}
}

// counts returns the outcomes within the window ending now.
func (w *window) counts(now time.Time) (ok, failed int) {
	slot := now.UnixNano() / int64(w.width)
	for _, b := range w.buckets {
		if b.slot > slot-windowBuckets && b.slot <= slot {
			ok += b.ok
			failed += b.failed
		}
	}
	return ok, failed
}

func (w *window) reset() { w.buckets = [windowBuckets]bucket{} }
