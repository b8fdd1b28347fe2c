package access

import (
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// clock is a settable time for the cache and the rate limit.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countedPolicy is a policy over testdata/htpasswd whose bcrypt
// comparisons are counted.
func countedPolicy(t *testing.T) (*Policy, *clock, *atomic.Int64) {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	p := policy(t, Config{Now: clk.now, Access: []Grant{{Authenticated: true, Repositories: []string{"*"}}}})
	var n atomic.Int64
	real := p.verifier.compare
	p.verifier.compare = func(hash, pw []byte) error {
		n.Add(1)
		return real(hash, pw)
	}
	return p, clk, &n
}

func TestAuthenticate(t *testing.T) {
	p, _, _ := countedPolicy(t)
	for _, tc := range []struct {
		name, header, user string
		err                error
	}{
		{"anonymous", "", "", nil},
		{"alice", basic("alice", "alice-pw"), "alice", nil},
		{"scheme in lower case", "basic " + base64.StdEncoding.EncodeToString([]byte("gitlab:gitlab-pw")), "gitlab", nil},
		{"wrong password", basic("alice", "alice-pW"), "alice", ErrBadCredentials},
		{"another user's password", basic("alice", "jenkins-pw"), "alice", ErrBadCredentials},
		{"unknown user", basic("mallory", "alice-pw"), "mallory", ErrBadCredentials},
		{"empty password", basic("alice", ""), "alice", ErrBadCredentials},
		// containers/image sends these when it has no credentials.
		{"empty Basic credentials", basic("", ""), "", nil},
		{"a password without a user", basic("", "alice-pw"), "", ErrBadCredentials},
		{"no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), "", ErrBadCredentials},
		{"not base64", "Basic !!!", "", ErrBadCredentials},
		{"bearer", "Bearer abc.def", "", ErrUnsupportedScheme},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every case from an address of its own: the rate limit is
			// tested below.
			user, err := p.Authenticate(tc.header, "10.0.0."+tc.name)
			if user != tc.user || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Errorf("Authenticate = %q, %v; want %q, %v", user, err, tc.user, tc.err)
			}
		})
	}
}

// A pull sends its credentials with every request: one bcrypt for all of
// them within the TTL, concurrent ones included.
func TestVerificationCache(t *testing.T) {
	p, clk, compares := countedPolicy(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.1")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := compares.Load(); n != 1 {
		t.Errorf("20 requests, %d bcrypt comparisons; want 1", n)
	}
	// Another address or another user is another login; the same one from
	// another address is the same login.
	for _, login := range [][3]string{{"jenkins", "jenkins-pw", "10.0.0.1"}, {"alice", "alice-pw", "10.0.0.2"}} {
		if _, err := p.Authenticate(basic(login[0], login[1]), login[2]); err != nil {
			t.Fatal(err)
		}
	}
	if n := compares.Load(); n != 2 {
		t.Errorf("%d comparisons after a second user, want 2", n)
	}

	clk.advance(DefaultCacheTTL - time.Second)
	if _, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.1"); err != nil || compares.Load() != 2 {
		t.Errorf("within the TTL: %v, %d comparisons, want still 2", err, compares.Load())
	}
	clk.advance(2 * time.Second)
	if _, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.1"); err != nil || compares.Load() != 3 {
		t.Errorf("past the TTL: %v, %d comparisons, want 3 (checked again)", err, compares.Load())
	}

	// A cached login does not make another password good.
	if _, err := p.Authenticate(basic("alice", "alice-pw2"), "10.0.0.1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("another password after a cached login: %v", err)
	}
}

// Failures are never cached: each is checked, until the rate limit refuses
// them without checking; the allowance comes back with time.
func TestFailureRateLimit(t *testing.T) {
	p, clk, compares := countedPolicy(t)
	// A login cached before the guessing starts keeps working.
	if _, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.9"); err != nil {
		t.Fatal(err)
	}
	compares.Store(0)
	for i := range failureBurst {
		if _, err := p.Authenticate(basic("alice", "guess"), "10.0.0.9"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("guess %d: %v, want ErrBadCredentials", i+1, err)
		}
	}
	if n := compares.Load(); n != failureBurst {
		t.Errorf("%d guesses, %d comparisons: every failure must be checked", failureBurst, n)
	}
	_, err := p.Authenticate(basic("alice", "guess"), "10.0.0.9")
	var tm *TooManyFailuresError
	if !errors.As(err, &tm) || tm.User != "alice" || tm.Wait <= 0 || tm.Wait > time.Second {
		t.Fatalf("guess %d: %v, want TooManyFailuresError within a second", failureBurst+1, err)
	}
	if err.Error() != `too many failed logins for user "alice" from this address; retry in 1s` {
		t.Errorf("message %q", err)
	}
	// The right password, not cached, is refused too while the limit
	// holds (a guess cannot be told from it without checking it)...
	if _, err := p.Authenticate(basic("alice", "alice-pw2"), "10.0.0.9"); !errors.As(err, &tm) {
		t.Errorf("an uncached login while limited: %v", err)
	}
	if n := compares.Load(); n != failureBurst {
		t.Errorf("%d comparisons: refused logins must not be checked", n)
	}
	// ... but the cached one works, and other addresses and users are
	// not affected.
	if _, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.9"); err != nil {
		t.Errorf("cached login while limited: %v", err)
	}
	if _, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.10"); err != nil {
		t.Errorf("another address: %v", err)
	}
	if _, err := p.Authenticate(basic("jenkins", "jenkins-pw"), "10.0.0.9"); err != nil {
		t.Errorf("another user from the address: %v", err)
	}

	// One failure a second comes back.
	clk.advance(time.Second)
	if _, err := p.Authenticate(basic("alice", "guess"), "10.0.0.9"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("a second later: %v, want the guess checked (and wrong)", err)
	}
	if _, err := p.Authenticate(basic("alice", "guess"), "10.0.0.9"); !errors.As(err, &tm) {
		t.Errorf("right after: %v, want limited again", err)
	}
	// Successes do not spend the allowance.
	clk.advance(time.Minute)
	for i := range 3 * failureBurst {
		clk.advance(DefaultCacheTTL) // never from the cache
		if _, err := p.Authenticate(basic("alice", "alice-pw"), "10.0.0.9"); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}

	// Unknown users are limited the same way, each name by itself.
	for range failureBurst {
		_, _ = p.Authenticate(basic("mallory", "x"), "10.0.0.9")
	}
	if _, err := p.Authenticate(basic("mallory", "x"), "10.0.0.9"); !errors.As(err, &tm) {
		t.Errorf("unknown user past the burst: %v", err)
	}
}
