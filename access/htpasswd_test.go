package access

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// testdata/htpasswd was written by Debian's apache2-utils:
//
//	htpasswd -B -C 4 -b -c htpasswd alice alice-pw
//	htpasswd -B -C 4 -b htpasswd jenkins jenkins-pw
//	htpasswd -B -C 4 -b htpasswd gitlab gitlab-pw
const testHtpasswd = "testdata/htpasswd"

func TestLoadHtpasswdFromHtpasswdB(t *testing.T) {
	h, err := LoadHtpasswd(testHtpasswd)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := h.Users(), []string{"alice", "jenkins", "gitlab"}; !reflect.DeepEqual(got, want) {
		t.Errorf("users %v, want %v", got, want)
	}
	if !h.Has("alice") || h.Has("bob") {
		t.Errorf("Has(alice) %v, Has(bob) %v", h.Has("alice"), h.Has("bob"))
	}
	if h.cost() != 4 {
		t.Errorf("cost %d, want the file's 4", h.cost())
	}
}

func TestLoadHtpasswdMissing(t *testing.T) {
	_, err := LoadHtpasswd(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %v, want the path and no such file", err)
	}
}

func TestParseHtpasswd(t *testing.T) {
	good, err := os.ReadFile(testHtpasswd)
	if err != nil {
		t.Fatal(err)
	}
	alice := strings.SplitN(string(good), "\n", 2)[0]
	hash := strings.TrimPrefix(alice, "alice:")
	for _, tc := range []struct {
		name, text string
		users      []string
		err        string // the whole error; "" when accepted
	}{
		{"htpasswd -B", string(good), []string{"alice", "jenkins", "gitlab"}, ""},
		{"comments, blank lines, CRLF", "# ci users\n\n" + alice + "\r\n   \n", []string{"alice"}, ""},
		{"$2a$ and $2b$", "a:$2a$" + hash[4:] + "\nb:$2b$" + hash[4:] + "\n", []string{"a", "b"}, ""},
		{"empty file", "", nil, ""},
		// What htpasswd writes without -B, each refused with its line.
		{"MD5 (htpasswd -m, the default)", alice + "\nbob:$apr1$BwlsnnSA$IXNemWNEa5SrPydnYv0pV/\n", nil,
			`htpasswd f: line 2: user "bob": an MD5 hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B`},
		{"SHA-1 (htpasswd -s)", "bob:{SHA}bOWgjgJew8XNjPXTyFghAc+ha1M=\n", nil,
			`htpasswd f: line 1: user "bob": a SHA-1 hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B`},
		{"plain text (htpasswd -p)", "\n\nbob:bob-pw\n", nil,
			`htpasswd f: line 3: user "bob": a plain-text password or a crypt(3) DES hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B`},
		{"crypt (htpasswd -d)", "bob:jPQCva6B7YRl6\n", nil,
			`htpasswd f: line 1: user "bob": a plain-text password or a crypt(3) DES hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B`},
		{"SHA-512 crypt (htpasswd -5)", "bob:$6$mXWzNx3iVJGfQxls$929.f2toH3Fz.wWAUVBRfQCr/rUhMMGY9CX5pj5q4ORQ0VtQgSw0Y8lFjVYNJ4v3KStxpPcTxdAw/Cu2WD4Xr1\n", nil,
			`htpasswd f: line 1: user "bob": a SHA-crypt hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B`},
		{"no hash", "bob:\n", nil,
			`htpasswd f: line 1: user "bob": no password hash; only bcrypt hashes are accepted: create the entry with htpasswd -B`},
		{"truncated bcrypt", "bob:$2y$04$KzglnWf\n", nil,
			`htpasswd f: line 1: user "bob": not a valid bcrypt hash: crypto/bcrypt: hashedSecret too short to be a bcrypted password`},
		{"no colon", alice + "\nbob\n", nil, `htpasswd f: line 2: want user:hash, as htpasswd -B writes it`},
		{"empty user", ":" + hash + "\n", nil, `htpasswd f: line 1: user "": a user name must be non-empty and have no spaces`},
		{"user with a space", "bo b:" + hash + "\n", nil, `htpasswd f: line 1: user "bo b": a user name must be non-empty and have no spaces`},
		{"duplicate", alice + "\n# again\n" + alice + "\n", nil, `htpasswd f: line 3: user "alice" is already on line 1`},
		{"binary", strings.Repeat("x", maxHtpasswdLine+1), nil, `htpasswd f: line 1: longer than 4096 bytes: not an htpasswd file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHtpasswd(strings.NewReader(tc.text), "f")
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error\n  %v\nwant\n  %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := h.Users(); !reflect.DeepEqual(got, tc.users) && len(got)+len(tc.users) > 0 {
				t.Errorf("users %v, want %v", got, tc.users)
			}
		})
	}
}
