// Package access decides who may pull what from Breakwater: it
// authenticates clients against a bcrypt htpasswd file and matches the
// repository they ask for against an access list of users, groups of users
// and anonymous clients mapped to upstream/repository prefixes.
//
// It knows nothing of HTTP, of the proxy that asks it, of the cache or of
// the upstreams: a request is an Authorization header value, a client
// address and an upstream and repository name.
package access

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// DefaultRealm is the realm of the Basic challenge when Config.Realm is
// empty.
const DefaultRealm = "breakwater"

// Config is an access policy as Breakwater's configuration states it (the
// auth block); errors name its fields the same way ("access[1].users").
type Config struct {
	// Htpasswd is the path of a bcrypt htpasswd file (htpasswd -B).
	Htpasswd string
	// Realm is the realm of the Basic challenge clients are sent.
	Realm string
	// Groups maps a group name to the users in it.
	Groups map[string][]string
	// Access is the access list: every entry grants pull on its
	// repositories to whom it names; a request is allowed when any entry
	// allows it.
	Access []Grant

	// Now and CacheTTL are the verification cache's clock and lifetime,
	// and Now the failure rate limit's clock; zero values mean time.Now
	// and DefaultCacheTTL. Tests set them.
	Now      func() time.Time
	CacheTTL time.Duration
}

// Grant is one entry of the access list: who, and which repositories.
type Grant struct {
	// Users and Groups name who the entry is for; either or both.
	Users  []string
	Groups []string
	// Authenticated grants every user of the htpasswd file; Anonymous
	// grants everyone, without credentials too. Each excludes the others.
	Authenticated bool
	Anonymous     bool
	// Repositories are "upstream/repository-prefix" patterns, matched on
	// whole path segments of the normalised name: "docker.io/library"
	// (or "docker.io/library/") matches docker.io/library/alpine, not
	// docker.io/libraryx/y; "ghcr.io" matches all of ghcr.io; "*" matches
	// every repository of every upstream.
	Repositories []string
}

// FieldError is what is wrong with one field of a Config, named by its
// path in the auth block: "htpasswd", "groups.ci", "access[1].users".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// fieldErrors collects FieldErrors.
type fieldErrors []error

func (fe *fieldErrors) add(field, format string, args ...any) {
	*fe = append(*fe, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
}

// Validate checks what can be checked without reading the htpasswd file:
// the shape of every entry and pattern, and that every group an entry
// names exists. The errors are FieldErrors, joined.
func (c Config) Validate() error {
	var fe fieldErrors
	c.validate(&fe, nil)
	return errors.Join(fe...)
}

// validate adds the problems of c; with users, it also checks that every
// user named is one of them.
func (c Config) validate(fe *fieldErrors, users *Htpasswd) {
	if c.Htpasswd == "" {
		if len(c.Access) > 0 || len(c.Groups) > 0 {
			fe.add("htpasswd", "required with an access list or groups: without it Breakwater is open to everyone")
		}
		return
	}
	if strings.ContainsAny(c.Realm, "\"\\") || strings.ContainsFunc(c.Realm, isControl) {
		fe.add("realm", "%q: no quotes, backslashes or control characters (it is sent in a quoted header value)", c.Realm)
	}
	unknownUser := func(field, user string) {
		if users != nil && !users.Has(user) {
			fe.add(field, "user %q is not in %s", user, users.Path)
		}
	}
	for _, g := range slices.Sorted(maps.Keys(c.Groups)) {
		field := "groups." + g
		if !nameRE.MatchString(g) {
			fe.add(field, "%q: a group name is letters, digits, '.', '_' and '-'", g)
		}
		if len(c.Groups[g]) == 0 {
			fe.add(field, "no users")
		}
		for i, u := range c.Groups[g] {
			unknownUser(fmt.Sprintf("%s[%d]", field, i), u)
		}
	}
	if len(c.Access) == 0 {
		fe.add("access", "empty: with htpasswd set and no access list nobody may pull anything; "+
			"to let every user pull everything, add {authenticated: true, repositories: [\"*\"]}")
	}
	for i, g := range c.Access {
		field := fmt.Sprintf("access[%d]", i)
		whom := 0
		if len(g.Users)+len(g.Groups) > 0 {
			whom++
		}
		if g.Authenticated {
			whom++
		}
		if g.Anonymous {
			whom++
		}
		switch {
		case whom == 0:
			fe.add(field, "says for whom: users, groups, authenticated: true or anonymous: true")
		case whom > 1:
			fe.add(field, "users/groups, authenticated and anonymous exclude each other: anonymous is everyone, authenticated every user of the htpasswd file")
		}
		for j, u := range g.Users {
			unknownUser(fmt.Sprintf("%s.users[%d]", field, j), u)
		}
		for j, name := range g.Groups {
			if _, ok := c.Groups[name]; !ok {
				fe.add(fmt.Sprintf("%s.groups[%d]", field, j), "group %q is not one of groups (%s)", name, strings.Join(slices.Sorted(maps.Keys(c.Groups)), ", "))
			}
		}
		if len(g.Repositories) == 0 {
			fe.add(field+".repositories", "empty: list upstream/repository prefixes, or \"*\" for everything")
		}
		for j, p := range g.Repositories {
			if _, err := ParsePattern(p); err != nil {
				fe.add(fmt.Sprintf("%s.repositories[%d]", field, j), "%v", err)
			}
		}
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// pathComponent is one segment of a repository name in the distribution
// grammar; a pattern's segments must be whole ones.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)

// Pattern is a parsed repository pattern.
type Pattern struct {
	// Upstream is the registry as configured ("docker.io"), lower case;
	// empty for "*".
	Upstream string
	// Prefix is the repository prefix, whole segments without a trailing
	// slash ("library"); empty for all of Upstream.
	Prefix string
}

// ParsePattern parses "upstream/repository-prefix", "upstream" or "*" (""
// is "*").
func ParsePattern(s string) (Pattern, error) {
	if s == "" || s == "*" {
		return Pattern{}, nil
	}
	if strings.Contains(s, "*") {
		return Pattern{}, fmt.Errorf("%q: a pattern is a prefix of whole path segments; \"*\" only stands alone, for everything", s)
	}
	host, rest, _ := strings.Cut(strings.TrimSuffix(s, "/"), "/")
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return r == ' ' || isControl(r) }) {
		return Pattern{}, fmt.Errorf("%q: want upstream/repository-prefix, e.g. docker.io/library/", s)
	}
	if rest != "" {
		for _, seg := range strings.Split(rest, "/") {
			if !pathComponent.MatchString(seg) {
				return Pattern{}, fmt.Errorf("%q: %q is not a repository path segment (lower-case letters, digits, '.', '_', '-'; no empty segments)", s, seg)
			}
		}
	}
	return Pattern{Upstream: strings.ToLower(host), Prefix: rest}, nil
}

// Match reports whether the pattern covers repo of upstream: the same
// upstream and repo equal to the prefix or under it.
func (p Pattern) Match(upstream, repo string) bool {
	if p.Upstream == "" {
		return true
	}
	if !strings.EqualFold(p.Upstream, upstream) {
		return false
	}
	return p.Prefix == "" || repo == p.Prefix || strings.HasPrefix(repo, p.Prefix+"/")
}

// Policy authenticates clients and decides what each may pull. It is safe
// for concurrent use. A Policy is built for one configuration: a new one
// (on reload) starts with an empty verification cache, so a password
// removed from the file stops working then.
type Policy struct {
	realm string
	users *Htpasswd
	// anonymous and authenticated are the patterns granted to everyone
	// and to every user; byUser those granted to one user by name or
	// through a group.
	anonymous     []Pattern
	authenticated []Pattern
	byUser        map[string][]Pattern
	verifier      *verifier
}

// New reads the htpasswd file and builds the policy, checking that every
// user the groups and the access list name is in the file. The errors are
// FieldErrors, joined.
func New(c Config) (*Policy, error) {
	var fe fieldErrors
	if c.Htpasswd == "" {
		fe.add("htpasswd", "required: the policy authenticates against it")
		return nil, errors.Join(fe...)
	}
	users, err := LoadHtpasswd(c.Htpasswd)
	if err != nil {
		fe = append(fe, &FieldError{Field: "htpasswd", Err: err})
		return nil, errors.Join(fe...)
	}
	c.validate(&fe, users)
	if len(fe) > 0 {
		return nil, errors.Join(fe...)
	}
	p := &Policy{realm: c.Realm, users: users, byUser: map[string][]Pattern{}}
	if p.realm == "" {
		p.realm = DefaultRealm
	}
	for _, g := range c.Access {
		pats := make([]Pattern, 0, len(g.Repositories))
		for _, s := range g.Repositories {
			pat, _ := ParsePattern(s) // validated
			pats = append(pats, pat)
		}
		switch {
		case g.Anonymous:
			p.anonymous = append(p.anonymous, pats...)
		case g.Authenticated:
			p.authenticated = append(p.authenticated, pats...)
		}
		for _, u := range g.Users {
			p.byUser[u] = append(p.byUser[u], pats...)
		}
		for _, name := range g.Groups {
			for _, u := range c.Groups[name] {
				p.byUser[u] = append(p.byUser[u], pats...)
			}
		}
	}
	p.verifier = newVerifier(users, c.Now, c.CacheTTL)
	return p, nil
}

// Realm is the realm of the Basic challenge.
func (p *Policy) Realm() string { return p.realm }

// Users is how many users the htpasswd file has.
func (p *Policy) Users() int { return len(p.users.order) }

// AllowsAnonymous reports whether any entry grants anonymous pulls. When
// none does, a request without credentials can be refused before anything
// about it is looked at.
func (p *Policy) AllowsAnonymous() bool { return len(p.anonymous) > 0 }

// Allowed reports whether user ("" for anonymous) may pull repo
// ("library/alpine", normalised) from upstream (the configured name,
// "docker.io"). Anonymous entries apply to everyone.
func (p *Policy) Allowed(user, upstream, repo string) bool {
	match := func(pats []Pattern) bool {
		return slices.ContainsFunc(pats, func(pat Pattern) bool { return pat.Match(upstream, repo) })
	}
	if match(p.anonymous) {
		return true
	}
	if user == "" || !p.users.Has(user) {
		return false
	}
	return match(p.authenticated) || match(p.byUser[user])
}
