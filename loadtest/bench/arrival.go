package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// On this 2-core machine the harness hashes every byte of up to hundreds
// of concurrent streams on the same cores as the servers it measures. The
// goroutine that reads a response may then wait a long time for a core
// after the bytes arrived, and time to first byte measured when the read
// returns is the harness's queueing as much as the server's latency. So
// the harness also asks the kernel when the bytes arrived: each
// connection's socket has SO_TIMESTAMPNS set and is read with recvmsg,
// which hands back the receive time of the last segment it consumed.
//
// That time is an upper bound on when the first body byte arrived (a read
// may consume later segments too) and the request's start is taken before
// the request is sent, so the "arrival" first byte is never optimistic;
// it only leaves out the harness's delay in getting to bytes already
// there. Where the kernel gives no stamp, the read time stands.

// keepRxTimestampsOn makes the kernel stamp every packet it receives from
// now on, and returns what undoes it. Linux stamps packets only while some
// socket asks for stamps, and turns stamping on a moment after the first
// one does (and off a moment after the last one closes): without this the
// first segments of a connection could come unstamped.
func keepRxTimestampsOn() (func(), error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("receive timestamps: %w", err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("receive timestamps: SO_TIMESTAMPNS: %w", err)
	}
	time.Sleep(50 * time.Millisecond) // the switch is deferred to a kernel worker
	return func() { syscall.Close(fd) }, nil
}

// stampConn is a TCP connection read with recvmsg, keeping the kernel's
// receive timestamp of the last read that returned data.
type stampConn struct {
	net.Conn // only net.Conn's methods: reads must all come through Read
	raw      syscall.RawConn
	oob      []byte
	last     atomic.Int64 // unix nanoseconds; 0 until a stamped read
}

// stampDialer dials like net.Dialer and turns on receive timestamps, and,
// when rcvbuf is positive, sets a receive buffer of rcvbuf bytes
// (SO_RCVBUF, which the kernel doubles and which turns its autotuning off).
type stampDialer struct{ rcvbuf int }

func (d stampDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
		if serr == nil && d.rcvbuf > 0 {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, d.rcvbuf)
		}
	}); err != nil || serr != nil {
		c.Close()
		return nil, fmt.Errorf("SO_TIMESTAMPNS, SO_RCVBUF %d on %s: %w", d.rcvbuf, addr, errors.Join(err, serr))
	}
	return &stampConn{Conn: tc, raw: raw, oob: make([]byte, syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))))}, nil
}

func (c *stampConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, c.oob, syscall.MSG_DONTWAIT)
		return rerr != syscall.EAGAIN
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	if n == 0 {
		return 0, io.EOF
	}
	if ts, ok := rxTimestamp(c.oob[:oobn]); ok {
		c.last.Store(ts.UnixNano())
	}
	return n, nil
}

// lastArrival is the kernel's receive time of the data returned by the
// most recent read, and false when the kernel gave none.
func (c *stampConn) lastArrival() (time.Time, bool) {
	ns := c.last.Load()
	return time.Unix(0, ns), ns != 0
}

// rxTimestamp finds SCM_TIMESTAMPNS among control messages.
func rxTimestamp(oob []byte) (time.Time, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS &&
			len(m.Data) >= int(unsafe.Sizeof(syscall.Timespec{})) {
			ts := (*syscall.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Sec, ts.Nsec), true
		}
	}
	return time.Time{}, false
}
