// Package coord coordinates the replicas of a fleet through Redis: a lease
// per fetch, so that one replica fetches from the upstream and the others
// stream from it, and the lease's holder is found by its address.
//
// A lease lives in Redis as "<token> <address>" under its key, with an
// expiry the holder renews while it works; a holder that dies stops
// renewing, and the lease is free again after its TTL. Redis that cannot be
// asked is never fatal: Acquire says so, and the caller acts alone.
package coord

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLeaseTTL is how long a lease outlives its holder's last renewal.
const DefaultLeaseTTL = 10 * time.Second

// Options configures a Fleet.
type Options struct {
	Addr     string
	Password string
	DB       int
	// TLS, when set, speaks TLS to Redis.
	TLS *tls.Config
	// Self is this replica's address as the others reach it
	// (cluster.advertise), e.g. http://10.0.0.5:5000.
	Self string
	// LeaseTTL is DefaultLeaseTTL when 0.
	LeaseTTL time.Duration
	// Prefix is put before every key; "bw:" when empty.
	Prefix string
	Logger *slog.Logger
}

// Fleet is one replica's view of the fleet.
type Fleet struct {
	rdb    *redis.Client
	self   string
	ttl    time.Duration
	prefix string
	log    *slog.Logger
}

// New connects lazily: nothing is asked of Redis until a lease is.
func New(o Options) (*Fleet, error) {
	if o.Addr == "" {
		return nil, errors.New("coord: no Redis address")
	}
	if o.Self == "" {
		return nil, errors.New("coord: no address of this replica (cluster.advertise)")
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Prefix == "" {
		o.Prefix = "bw:"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: o.Addr, Password: o.Password, DB: o.DB, TLSConfig: o.TLS,
		// A Redis that does not answer costs a pull little: the caller
		// then fetches alone.
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: 1,
	})
	return &Fleet{rdb: rdb, self: o.Self, ttl: o.LeaseTTL, prefix: o.Prefix, log: o.Logger}, nil
}

// Self is this replica's address.
func (f *Fleet) Self() string { return f.self }

// Redis is the connection the fleet's other shared state (the shared
// store's LRU index) keeps its keys with, under Key's names.
func (f *Fleet) Redis() *redis.Client { return f.rdb }

// Key is name under the fleet's prefix.
func (f *Fleet) Key(name string) string { return f.prefix + name }

// Close closes the connections to Redis.
func (f *Fleet) Close() error { return f.rdb.Close() }

// Ping asks Redis whether it answers, for the status page.
func (f *Fleet) Ping(ctx context.Context) error { return f.rdb.Ping(ctx).Err() }

// Lease is a key this replica holds fleet-wide until Release.
type Lease struct {
	f        *Fleet
	key, val string
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// renewScript extends the lease only while it is still this holder's.
var renewScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)

// releaseScript deletes the lease only while it is still this holder's.
var releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// Acquire takes the lease on key for this replica and keeps it alive until
// Release. When another replica holds it, the lease is nil and owner is
// that replica's address. An error means Redis could not be asked.
func (f *Fleet) Acquire(ctx context.Context, key string) (l *Lease, owner string, err error) {
	full := f.prefix + key
	val := rand.Text() + " " + f.self
	for try := 0; try < 2; try++ {
		ok, err := f.rdb.SetNX(ctx, full, val, f.ttl).Result()
		if err != nil {
			return nil, "", fmt.Errorf("lease %s: %w", key, err)
		}
		if ok {
			l := &Lease{f: f, key: full, val: val, stop: make(chan struct{}), done: make(chan struct{})}
			go l.keep()
			return l, "", nil
		}
		cur, err := f.rdb.Get(ctx, full).Result()
		if errors.Is(err, redis.Nil) {
			continue // released between the two questions
		}
		if err != nil {
			return nil, "", fmt.Errorf("lease %s: %w", key, err)
		}
		_, addr, _ := strings.Cut(cur, " ")
		if addr != f.self {
			return nil, addr, nil
		}
		// Held under this replica's own address by an earlier process
		// (a restart): nothing of it is left to stream from.
		if err := releaseScript.Run(ctx, f.rdb, []string{full}, cur).Err(); err != nil {
			return nil, "", fmt.Errorf("lease %s: %w", key, err)
		}
	}
	return nil, "", fmt.Errorf("lease %s: changing hands too fast", key)
}

// keep renews the lease every third of its TTL until Release.
func (l *Lease) keep() {
	defer close(l.done)
	t := time.NewTicker(l.f.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.f.ttl/3)
			n, err := renewScript.Run(ctx, l.f.rdb, []string{l.key}, l.val, l.f.ttl.Milliseconds()).Int()
			cancel()
			if err != nil {
				l.f.log.Warn("fleet: lease not renewed", "key", l.key, "err", err)
			} else if n == 0 {
				l.f.log.Warn("fleet: lease lost to another replica", "key", l.key)
				return
			}
		}
	}
}

// finishScript leaves the lease to expire after ARGV[2] ms, while it is
// still this holder's.
var finishScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)

// Finish ends the work but keeps the lease for keep, unrenewed: replicas
// that come late learn from it who has the result, and ask that replica
// rather than the upstream. A replica that can no longer serve it (it
// died, it evicted the result) is taken over as after Release.
func (l *Lease) Finish(keep time.Duration) {
	l.end(finishScript, "kept", keep.Milliseconds())
}

// Release gives the lease up. It is safe to call on a nil Lease and more
// than once.
func (l *Lease) Release() {
	// A lease not released expires on its own.
	l.end(releaseScript, "released")
}

// end stops the renewals and runs script on the lease, once, whichever of
// Finish and Release comes first.
func (l *Lease) end(script *redis.Script, what string, args ...any) {
	if l == nil {
		return
	}
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := script.Run(ctx, l.f.rdb, []string{l.key}, append([]any{l.val}, args...)...).Err(); err != nil {
			l.f.log.Warn("fleet: lease not "+what, "key", l.key, "err", err)
		}
	})
}

// holdsChannel carries the holds replicas hear of.
const holdsChannel = "holds"

// HoldKinds are the kinds of hold a fleet shares: the upstream's rate
// limit and the circuit opened on a down upstream; and "count", no hold
// but the pulls an upstream said are left, which every replica takes as
// its own.
var holdKinds = []string{"ratelimit", "circuit", "count"}

// Hold is a reason one replica holds requests to an upstream back: the
// fleet holds with it, so that the upstream hears from the fleet once it
// allows, or once it may be back, not once per replica. A hold whose Until
// has passed ends it: the replica found the upstream answering again.
type Hold struct {
	// Kind is "ratelimit", "circuit" or "count".
	Kind     string
	Upstream string
	Until    time.Time
	Cause    string
	// Remaining and Limit are a count's pulls left and limit, At when
	// the upstream said them; Until is when the count is no news.
	Remaining, Limit int64
	At               time.Time
}

// message is the hold as Redis carries it.
func (h Hold) message() string {
	if h.Kind == "count" {
		return fmt.Sprintf("%s %s %d %d %d %d", h.Kind, h.Upstream, h.Until.UnixMilli(), h.Remaining, h.Limit, h.At.UnixNano())
	}
	return fmt.Sprintf("%s %s %d %s", h.Kind, h.Upstream, h.Until.UnixMilli(), h.Cause)
}

func (h Hold) key() string { return "hold:" + h.Kind + ":" + h.Upstream }

// PublishHold tells the fleet of a hold, and keeps it in Redis until it
// ends for replicas that start meanwhile; a hold already over is told and
// forgotten.
func (f *Fleet) PublishHold(ctx context.Context, h Hold) error {
	if !slices.Contains(holdKinds, h.Kind) || h.Upstream == "" || strings.Contains(h.Upstream, " ") {
		return fmt.Errorf("publish a hold: kind %q of upstream %q is not one the fleet knows", h.Kind, h.Upstream)
	}
	msg := h.message()
	pipe := f.rdb.TxPipeline()
	if left := time.Until(h.Until); left > 0 {
		pipe.Set(ctx, f.prefix+h.key(), msg, left)
	} else {
		pipe.Del(ctx, f.prefix+h.key())
	}
	pipe.Publish(ctx, f.prefix+holdsChannel, msg)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("publish the %s hold on %s: %w", h.Kind, h.Upstream, err)
	}
	return nil
}

// Holds returns the holds in force now, for a replica that starts.
func (f *Fleet) Holds(ctx context.Context, upstreams []string) ([]Hold, error) {
	var out []Hold
	for _, u := range upstreams {
		for _, k := range holdKinds {
			msg, err := f.rdb.Get(ctx, f.prefix+Hold{Kind: k, Upstream: u}.key()).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return out, fmt.Errorf("holds: %w", err)
			}
			if h, ok := parseHold(msg); ok {
				out = append(out, h)
			}
		}
	}
	return out, nil
}

// HoldWatch is a subscription to the holds the fleet's replicas publish.
type HoldWatch struct {
	ps *redis.PubSub
}

// SubscribeHolds subscribes to the fleet's holds and waits, within ctx,
// until Redis confirms the subscription. Holds read with Holds after it
// returns and those its Run delivers then miss nothing between them: a
// replica that read first and subscribed after could miss a hold
// published in between, and break it. When the confirmation does not come
// (Redis down), the watch still works once Redis answers: it reconnects by
// itself.
func (f *Fleet) SubscribeHolds(ctx context.Context) (*HoldWatch, error) {
	ps := f.rdb.Subscribe(context.WithoutCancel(ctx), f.prefix+holdsChannel)
	if _, err := ps.Receive(ctx); err != nil {
		return &HoldWatch{ps: ps}, fmt.Errorf("subscribe to the fleet's holds: %w", err)
	}
	return &HoldWatch{ps: ps}, nil
}

// Run calls fn with every hold a replica publishes, this one's included,
// until ctx ends, and then closes the subscription.
func (w *HoldWatch) Run(ctx context.Context, fn func(Hold)) {
	defer w.ps.Close()
	ch := w.ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			if h, ok := parseHold(m.Payload); ok {
				fn(h)
			}
		}
	}
}

func parseHold(msg string) (Hold, bool) {
	f := strings.SplitN(msg, " ", 4)
	if len(f) < 3 || !slices.Contains(holdKinds, f[0]) || f[1] == "" {
		return Hold{}, false
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Hold{}, false
	}
	h := Hold{Kind: f[0], Upstream: f[1], Until: time.UnixMilli(n)}
	if len(f) == 4 {
		h.Cause = f[3]
	}
	if h.Kind == "count" {
		var at int64
		if _, err := fmt.Sscanf(h.Cause, "%d %d %d", &h.Remaining, &h.Limit, &at); err != nil {
			return Hold{}, false
		}
		h.Cause, h.At = "", time.Unix(0, at)
	}
	return h, true
}
