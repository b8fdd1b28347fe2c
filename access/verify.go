package access

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"
)

// DefaultCacheTTL is how long a verified user and password are taken
// without running bcrypt again. bcrypt costs 50-100 ms at cost 10 by
// design; a pull of an image of 20 layers sends its credentials with every
// request, and must not pay that 20 times. Short, so that a password
// changed in the file and reloaded, or a policy rebuilt, is not the only
// way an old one stops working.
const DefaultCacheTTL = 5 * time.Minute

// Bounds of the verifier's memory, whatever clients send.
const (
	maxCachedLogins = 1024
	maxFailureKeys  = 4096
)

// Failed logins are limited per user and client address with a token
// bucket: failureBurst failures at once, then failureRate a second. That
// is plenty for a person mistyping and for a node retrying (containerd
// sends a manifest request with wrong credentials several times before it
// gives up), and holds a password guesser to about 86,000 guesses a day
// per address instead of the 10-20 a second one core can make against
// bcrypt. While a bucket is empty, credentials for that user from that
// address are refused without being checked (TooManyFailuresError); a
// login cached from before still works.
const (
	failureBurst = 10
	failureRate  = 1.0 // per second
)

// ErrBadCredentials is an unknown user or a wrong password; which of the
// two is in the error's text for the log, never in what a client is told.
var ErrBadCredentials = errors.New("invalid user name or password")

// ErrUnsupportedScheme is an Authorization header that is not Basic.
var ErrUnsupportedScheme = errors.New("only Basic credentials are accepted (bearer tokens are not supported)")

// TooManyFailuresError refuses a login without checking it: too many
// failed ones for this user from this address just now.
type TooManyFailuresError struct {
	User string
	// Wait is how long until an attempt is checked again.
	Wait time.Duration
}

func (e *TooManyFailuresError) Error() string {
	return fmt.Sprintf("too many failed logins for user %q from this address; retry in %ds", e.User, int((e.Wait+time.Second-1)/time.Second))
}

// RetryAfter is Wait, for callers that do not import this package.
func (e *TooManyFailuresError) RetryAfter() time.Duration { return e.Wait }

// verifier checks passwords against the htpasswd file, caches successes
// and limits failures.
type verifier struct {
	users *Htpasswd
	now   func() time.Time
	ttl   time.Duration
	// key is a random HMAC key of this process: the cache holds HMACs of
	// user and password, so its memory reveals nothing a guesser could
	// test faster than bcrypt.
	key []byte
	// cache maps a login's HMAC to when its verification expires.
	cache *lru.Cache[[sha256.Size]byte, time.Time]
	// flights runs one bcrypt for concurrent requests with the same login.
	flights singleflight.Group
	// compare is bcrypt.CompareHashAndPassword; tests count its calls.
	compare func(hash, password []byte) error
	// dummy is compared with for unknown users, so that their refusal
	// takes as long as a wrong password's and does not tell them apart.
	dummy func() []byte

	mu       sync.Mutex
	failures *lru.Cache[string, *bucket]
}

func newVerifier(users *Htpasswd, now func() time.Time, ttl time.Duration) *verifier {
	if now == nil {
		now = time.Now
	}
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read does not fail (Go 1.24+)
	cache, _ := lru.New[[sha256.Size]byte, time.Time](maxCachedLogins)
	failures, _ := lru.New[string, *bucket](maxFailureKeys)
	cost := users.cost()
	return &verifier{
		users: users, now: now, ttl: ttl, key: key, cache: cache, failures: failures,
		compare: bcrypt.CompareHashAndPassword,
		dummy: sync.OnceValue(func() []byte {
			h, err := bcrypt.GenerateFromPassword(key, cost)
			if err != nil {
				// Only for a cost out of range, which the file cannot have.
				h, _ = bcrypt.GenerateFromPassword(key, bcrypt.DefaultCost)
			}
			return h
		}),
	}
}

// Authenticate checks the credentials of an Authorization header value.
// An empty header is anonymous: user "" and no error; so are Basic
// credentials with neither user nor password, which podman and skopeo
// (containers/image) send when they have none. client is the
// client's address (an IP, without the port): failures are limited per
// user and client. The errors are ErrBadCredentials, ErrUnsupportedScheme
// (wrapped with detail for the log) or a *TooManyFailuresError.
func (p *Policy) Authenticate(authorization, client string) (string, error) {
	if authorization == "" {
		return "", nil
	}
	user, pass, err := parseBasic(authorization)
	if err != nil || user == "" && pass == "" {
		return "", err
	}
	return user, p.verifier.verify(user, pass, client)
}

// parseBasic reads "Basic base64(user:password)".
func parseBasic(h string) (user, pass string, err error) {
	scheme, cred, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", fmt.Errorf("%w: got %.20q", ErrUnsupportedScheme, scheme)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", fmt.Errorf("%w: Basic credentials are not base64", ErrBadCredentials)
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok || user == "" && pass != "" {
		return "", "", fmt.Errorf("%w: Basic credentials without user:password", ErrBadCredentials)
	}
	return user, pass, nil
}

func (v *verifier) verify(user, pass, client string) error {
	mac := hmac.New(sha256.New, v.key)
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write([]byte(pass))
	var login [sha256.Size]byte
	copy(login[:], mac.Sum(nil))

	now := v.now()
	if exp, ok := v.cache.Get(login); ok {
		if now.Before(exp) {
			return nil
		}
		v.cache.Remove(login)
	}
	// Keyed by the name claimed, known or not, so that the limit does not
	// tell users that exist from others. The map is bounded: a guesser
	// cycling through names to evict a user's bucket pays one bcrypt per
	// name, thousands for five more guesses.
	fkey := client + "\x00" + user
	hash, known := v.users.users[user]
	// One check for concurrent requests with the same login (a client's
	// parallel blob requests); each distinct password checked takes its
	// failure token first, so that guesses sent at once are bounded too.
	res, _, _ := v.flights.Do(fkey+"\x00"+string(login[:]), func() (any, error) {
		// A flight that ended between the lookup above and this one
		// cached its success.
		if exp, ok := v.cache.Get(login); ok && now.Before(exp) {
			return time.Duration(0), nil
		}
		if wait := v.take(fkey, now); wait > 0 {
			return wait, nil
		}
		var ok bool
		if known {
			// bcrypt compares in constant time.
			ok = v.compare(hash, []byte(pass)) == nil
		} else {
			_ = v.compare(v.dummy(), []byte(pass))
		}
		if ok {
			v.refund(fkey)
			v.cache.Add(login, v.now().Add(v.ttl))
			return time.Duration(0), nil
		}
		return time.Duration(-1), nil
	})
	switch wait := res.(time.Duration); {
	case wait == 0:
		return nil
	case wait > 0:
		return &TooManyFailuresError{User: user, Wait: wait}
	case !known:
		return fmt.Errorf("%w: user %q is not in %s", ErrBadCredentials, user, v.users.Path)
	default:
		return fmt.Errorf("%w: wrong password for user %q", ErrBadCredentials, user)
	}
}

// bucket is one key's failure allowance: tokens left at time at.
type bucket struct {
	tokens float64
	at     time.Time
}

func (b *bucket) refill(now time.Time) {
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(failureBurst, b.tokens+el*failureRate)
	}
	b.at = now
}

// take spends one of key's failure tokens before a check, and says how
// long until one is left when none is (0 when one was taken).
func (v *verifier) take(key string, now time.Time) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	b, ok := v.failures.Get(key)
	if !ok {
		b = &bucket{tokens: failureBurst, at: now}
		v.failures.Add(key, b)
	}
	b.refill(now)
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / failureRate * float64(time.Second))
	}
	b.tokens--
	return 0
}

// refund gives back the token of a check that succeeded.
func (v *verifier) refund(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b, ok := v.failures.Get(key); ok {
		b.tokens = min(failureBurst, b.tokens+1)
	}
}
