package access

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, upstream, repo string
		want                    bool
	}{
		{"docker.io/library/", "docker.io", "library/alpine", true},
		{"docker.io/library", "docker.io", "library/alpine", true},
		{"docker.io/library/", "docker.io", "library/sub/dir", true},
		// Segments, not characters.
		{"docker.io/lib", "docker.io", "library/x", false},
		{"docker.io/library/", "docker.io", "libraryx/y", false},
		{"docker.io/library/alp", "docker.io", "library/alpine", false},
		// The prefix itself is a repository too.
		{"ghcr.io/acme/app", "ghcr.io", "acme/app", true},
		{"ghcr.io/acme/app", "ghcr.io", "acme/app/sub", true},
		{"ghcr.io/acme/app", "ghcr.io", "acme/apps", false},
		// The upstream: whole, case-insensitive, and nothing else.
		{"ghcr.io/acme/", "docker.io", "acme/app", false},
		{"ghcr.io", "ghcr.io", "anyone/anything", true},
		{"ghcr.io/", "ghcr.io", "anyone/anything", true},
		{"ghcr.io", "ghcr.io.evil", "x/y", false},
		{"GHCR.io/acme/", "ghcr.io", "acme/app", true},
		{"registry.example.com:5000/team/", "registry.example.com:5000", "team/app", true},
		{"registry.example.com:5000/team/", "registry.example.com", "team/app", false},
		// Everything.
		{"*", "quay.io", "x/y", true},
		{"", "registry.k8s.io", "pause", true},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Errorf("ParsePattern(%q): %v", tc.pattern, err)
			continue
		}
		if got := p.Match(tc.upstream, tc.repo); got != tc.want {
			t.Errorf("%q matches %s/%s: %v, want %v", tc.pattern, tc.upstream, tc.repo, got, tc.want)
		}
	}
}

func TestParsePatternRefuses(t *testing.T) {
	for _, tc := range []struct{ pattern, err string }{
		{"docker.io/library/*", `"docker.io/library/*": a pattern is a prefix of whole path segments; "*" only stands alone, for everything`},
		{"*/library/", `"*/library/": a pattern is a prefix of whole path segments; "*" only stands alone, for everything`},
		{"/library/", `"/library/": want upstream/repository-prefix, e.g. docker.io/library/`},
		{"docker.io//x", `"docker.io//x": "" is not a repository path segment (lower-case letters, digits, '.', '_', '-'; no empty segments)`},
		{"docker.io/Library/", `"docker.io/Library/": "Library" is not a repository path segment (lower-case letters, digits, '.', '_', '-'; no empty segments)`},
		{"docker io/x", `"docker io/x": want upstream/repository-prefix, e.g. docker.io/library/`},
	} {
		_, err := ParsePattern(tc.pattern)
		if err == nil || err.Error() != tc.err {
			t.Errorf("ParsePattern(%q) = %v\nwant %s", tc.pattern, err, tc.err)
		}
	}
}

// policy builds a Policy over testdata/htpasswd (alice, jenkins, gitlab).
func policy(t *testing.T, c Config) *Policy {
	t.Helper()
	c.Htpasswd = testHtpasswd
	p, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAllowed(t *testing.T) {
	p := policy(t, Config{
		Groups: map[string][]string{"ci": {"jenkins", "gitlab"}},
		Access: []Grant{
			{Users: []string{"alice"}, Repositories: []string{"docker.io/library/", "ghcr.io/acme/"}},
			{Groups: []string{"ci"}, Repositories: []string{"ghcr.io/acme/ci-tools"}},
			{Users: []string{"gitlab"}, Repositories: []string{"quay.io"}},
			{Anonymous: true, Repositories: []string{"registry.k8s.io/"}},
		},
	})
	for _, tc := range []struct {
		user, upstream, repo string
		want                 bool
	}{
		{"alice", "docker.io", "library/alpine", true},
		{"alice", "ghcr.io", "acme/app", true},
		{"alice", "docker.io", "acme/app", false},
		{"alice", "quay.io", "x/y", false},
		// Through the group, and a user's own entry adds to it.
		{"jenkins", "ghcr.io", "acme/ci-tools", true},
		{"jenkins", "ghcr.io", "acme/ci-tools/sub", true},
		{"jenkins", "ghcr.io", "acme/app", false},
		{"jenkins", "quay.io", "x/y", false},
		{"gitlab", "ghcr.io", "acme/ci-tools", true},
		{"gitlab", "quay.io", "x/y", true},
		// Anonymous entries are everyone's.
		{"", "registry.k8s.io", "pause", true},
		{"alice", "registry.k8s.io", "pause", true},
		{"", "docker.io", "library/alpine", false},
		// A name that is not a user gets only what anonymous gets.
		{"mallory", "docker.io", "library/alpine", false},
		{"mallory", "registry.k8s.io", "pause", true},
	} {
		if got := p.Allowed(tc.user, tc.upstream, tc.repo); got != tc.want {
			t.Errorf("Allowed(%q, %s, %s) = %v, want %v", tc.user, tc.upstream, tc.repo, got, tc.want)
		}
	}
	if !p.AllowsAnonymous() {
		t.Error("AllowsAnonymous() false with an anonymous entry")
	}
	if p.Realm() != DefaultRealm || p.Users() != 3 {
		t.Errorf("realm %q, %d users", p.Realm(), p.Users())
	}
}

func TestAuthenticatedAndNoAnonymous(t *testing.T) {
	p := policy(t, Config{Realm: "mirror", Access: []Grant{{Authenticated: true, Repositories: []string{"*"}}}})
	for _, tc := range []struct {
		user string
		want bool
	}{{"alice", true}, {"gitlab", true}, {"", false}, {"mallory", false}} {
		if got := p.Allowed(tc.user, "quay.io", "org/app"); got != tc.want {
			t.Errorf("Allowed(%q) = %v, want %v", tc.user, got, tc.want)
		}
	}
	if p.AllowsAnonymous() || p.Realm() != "mirror" {
		t.Errorf("AllowsAnonymous %v, realm %q", p.AllowsAnonymous(), p.Realm())
	}
}

// fieldErrs returns "field: message" of each FieldError in err.
func fieldErrs(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var out []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("%v is not a FieldError", e)
		}
		out = append(out, e.Error())
	}
	return out
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want []string
	}{
		{"access without htpasswd", Config{Access: []Grant{{Anonymous: true, Repositories: []string{"*"}}}},
			[]string{"htpasswd: required with an access list or groups: without it Breakwater is open to everyone"}},
		{"no access list", Config{Htpasswd: "x"}, []string{
			`access: empty: with htpasswd set and no access list nobody may pull anything; to let every user pull everything, add {authenticated: true, repositories: ["*"]}`}},
		{"entries", Config{Htpasswd: "x", Realm: `a"b`,
			Groups: map[string][]string{"ci": {"jenkins"}, "empty": nil, "bad name": {"alice"}},
			Access: []Grant{
				{Repositories: []string{"*"}},
				{Users: []string{"alice"}, Anonymous: true, Repositories: []string{"*"}},
				{Groups: []string{"ci", "cd"}},
				{Authenticated: true, Repositories: []string{"docker.io/lib*"}},
			}}, []string{
			`realm: "a\"b": no quotes, backslashes or control characters (it is sent in a quoted header value)`,
			`groups.bad name: "bad name": a group name is letters, digits, '.', '_' and '-'`,
			`groups.empty: no users`,
			`access[0]: says for whom: users, groups, authenticated: true or anonymous: true`,
			`access[1]: users/groups, authenticated and anonymous exclude each other: anonymous is everyone, authenticated every user of the htpasswd file`,
			`access[2].groups[1]: group "cd" is not one of groups (bad name, ci, empty)`,
			`access[2].repositories: empty: list upstream/repository prefixes, or "*" for everything`,
			`access[3].repositories[0]: "docker.io/lib*": a pattern is a prefix of whole path segments; "*" only stands alone, for everything`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldErrs(t, tc.c.Validate())
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("Validate:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// New reads the file and checks the users against it; Validate cannot.
func TestNewChecksUsers(t *testing.T) {
	c := Config{
		Htpasswd: testHtpasswd,
		Groups:   map[string][]string{"ci": {"jenkins", "hudson"}},
		Access:   []Grant{{Users: []string{"alice", "bob"}, Groups: []string{"ci"}, Repositories: []string{"*"}}},
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	_, err := New(c)
	want := []string{
		`groups.ci[1]: user "hudson" is not in testdata/htpasswd`,
		`access[0].users[1]: user "bob" is not in testdata/htpasswd`,
	}
	if got := fieldErrs(t, err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("New:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	missing := filepath.Join(t.TempDir(), "htpasswd")
	_, err = New(Config{Htpasswd: missing, Access: c.Access})
	if got := fieldErrs(t, err); len(got) != 1 || !strings.HasPrefix(got[0], "htpasswd: htpasswd file: open "+missing+": no such file") {
		t.Errorf("missing file: %v", got)
	}
	if _, err := New(Config{Access: c.Access}); err == nil {
		t.Error("New without htpasswd: no error")
	}
}
