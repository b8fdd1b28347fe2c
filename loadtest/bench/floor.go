package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"
)

// The cold-path CPU floor (issue 14): what a cache that verifies what it
// stores cannot avoid spending per byte of a cold blob on this machine —
// one sha256 over it, one write of it into the page cache, and one
// loopback socket hop (in from the upstream or out to the client; on
// loopback the receiver's protocol work runs in the sender's context, so a
// hop costs its two ends together). Each is measured in the harness's own
// process as CPU time (getrusage: user + system, every thread), the best
// of three, right before the cold pulls, so the ratio of a server's CPU
// per GB to the floor holds on any machine.

// cpuFloor is the floor in ms of CPU per GB (10⁹ bytes), like every CPU
// figure of the table.
type cpuFloor struct {
	Bytes  int64   `json:"bytes_per_run"`
	SHA256 float64 `json:"sha256_ms_per_gb"`
	Write  float64 `json:"page_cache_write_ms_per_gb"`
	Hop    float64 `json:"loopback_hop_ms_per_gb"`
	Total  float64 `json:"total_ms_per_gb"`
	// Runs are the three runs of each, ms per GB, in order.
	Runs map[string][]float64 `json:"runs_ms_per_gb"`
}

// floorRuns is how many times each part is measured; the floor takes the
// least.
const floorRuns = 3

// selfCPU is the CPU time the harness process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is the CPU time the process used while f ran.
func cpuOf(f func() error) (time.Duration, error) {
	before := selfCPU()
	err := f()
	return selfCPU() - before, err
}

// best runs f runs times and returns the least CPU time per GB of size
// bytes, in ms, and every run's figure.
func best(runs int, size int64, f func() (time.Duration, error)) (float64, []float64, error) {
	var all []float64
	least := 0.0
	for i := range runs {
		d, err := f()
		if err != nil {
			return 0, all, err
		}
		v := ms(d) / (float64(size) / 1e9)
		all = append(all, v)
		if i == 0 || v < least {
			least = v
		}
	}
	return least, all, nil
}

// floorBuffers are four pooled 256 KiB buffers of pseudo-random bytes, a
// stream's worth in flight as in Breakwater's ingest.
func floorBuffers() (bufs [][]byte, put func()) {
	r := mrand.NewChaCha8([32]byte{4})
	var ps []*[]byte
	for range 4 {
		bp := bufPool.Get().(*[]byte)
		_, _ = r.Read(*bp)
		ps, bufs = append(ps, bp), append(bufs, *bp)
	}
	return bufs, func() {
		for _, bp := range ps {
			bufPool.Put(bp)
		}
	}
}

// each calls f with the buffers in turn until size bytes were given.
func each(bufs [][]byte, size int64, f func([]byte) error) error {
	for n, i := int64(0), 0; n < size; i++ {
		b := bufs[i%len(bufs)]
		if rest := size - n; rest < int64(len(b)) {
			b = b[:rest]
		}
		if err := f(b); err != nil {
			return err
		}
		n += int64(len(b))
	}
	return nil
}

// floorSHA256 hashes size bytes of pooled buffers.
func floorSHA256(bufs [][]byte, size int64) (time.Duration, error) {
	return cpuOf(func() error {
		h := sha256.New()
		_ = each(bufs, size, func(b []byte) error { h.Write(b); return nil })
		h.Sum(nil)
		return nil
	})
}

// floorWrite writes size bytes into a new file in dir (the page cache: no
// fsync) and removes it; the removal is not counted.
func floorWrite(dir string, bufs [][]byte, size int64) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "floor-write-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	d, err := cpuOf(func() error {
		if err := each(bufs, size, func(b []byte) error { _, err := f.Write(b); return err }); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	return d, err
}

// floorHop writes size bytes into a loopback TCP connection and reads
// them at its other end, both in this process.
func floorHop(bufs [][]byte, size int64) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	out, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer out.Close()
	in, ok := <-accepted
	if !ok {
		return 0, errors.New("floor: loopback accept failed")
	}
	defer in.Close()
	rbp := bufPool.Get().(*[]byte)
	defer bufPool.Put(rbp)
	return cpuOf(func() error {
		sent := make(chan error, 1)
		go func() {
			err := each(bufs, size, func(b []byte) error { _, err := out.Write(b); return err })
			if err == nil {
				err = out.(*net.TCPConn).CloseWrite()
			}
			sent <- err
		}()
		var n int64
		for {
			k, err := in.Read(*rbp)
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if err := <-sent; err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("floor: loopback hop carried %d bytes of %d", n, size)
		}
		return nil
	})
}

// measureFloor measures the three parts of the floor, each the best of
// floorRuns runs over size bytes, in the harness's process; dir is where
// the page-cache write goes (the work directory, where the caches are).
func measureFloor(dir string, size int64) (*cpuFloor, error) {
	bufs, put := floorBuffers()
	defer put()
	fl := &cpuFloor{Bytes: size, Runs: map[string][]float64{}}
	for _, part := range []struct {
		key string
		dst *float64
		f   func() (time.Duration, error)
	}{
		{"sha256", &fl.SHA256, func() (time.Duration, error) { return floorSHA256(bufs, size) }},
		{"page_cache_write", &fl.Write, func() (time.Duration, error) { return floorWrite(dir, bufs, size) }},
		{"loopback_hop", &fl.Hop, func() (time.Duration, error) { return floorHop(bufs, size) }},
	} {
		v, runs, err := best(floorRuns, size, part.f)
		fl.Runs[part.key] = runs
		if err != nil {
			return nil, fmt.Errorf("CPU floor, %s: %w", part.key, err)
		}
		*part.dst = v
	}
	fl.Total = fl.SHA256 + fl.Write + fl.Hop
	return fl, nil
}
