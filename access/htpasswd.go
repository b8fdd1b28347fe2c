package access

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Htpasswd is a parsed htpasswd file: user names and their bcrypt hashes.
type Htpasswd struct {
	// Path is where the file was read from, for messages.
	Path  string
	users map[string][]byte
	// order is the users in the file's order.
	order []string
}

// LoadHtpasswd reads a bcrypt htpasswd file, as `htpasswd -B` writes it.
func LoadHtpasswd(path string) (*Htpasswd, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	defer f.Close()
	h, err := ParseHtpasswd(f, path)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// maxHtpasswdLine bounds one line: a bcrypt hash is 60 bytes, user names
// are short; a longer line is not an htpasswd file.
const maxHtpasswdLine = 4096

// ParseHtpasswd parses htpasswd lines "user:hash" from r; name is the file
// as errors call it. Blank lines and lines starting with # are skipped.
// Only bcrypt hashes ($2y$, $2a$, $2b$) are accepted: htpasswd's other
// schemes (plain text, crypt, MD5 $apr1$, SHA-1 {SHA}) are fast to brute
// force from a leaked file, and a file that has any is refused whole, at
// start, with the line that has it.
func ParseHtpasswd(r io.Reader, name string) (*Htpasswd, error) {
	h := &Htpasswd{Path: name, users: map[string][]byte{}}
	first := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxHtpasswdLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		where := func(format string, args ...any) error {
			return fmt.Errorf("htpasswd %s: line %d: %s", name, n, fmt.Sprintf(format, args...))
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, where("want user:hash, as htpasswd -B writes it")
		}
		if user == "" || strings.TrimSpace(user) != user || strings.ContainsAny(user, " \t") {
			return nil, where("user %q: a user name must be non-empty and have no spaces", user)
		}
		if err := checkBcrypt(hash); err != nil {
			return nil, where("user %q: %v", user, err)
		}
		if l, dup := first[user]; dup {
			return nil, where("user %q is already on line %d", user, l)
		}
		first[user] = n
		h.users[user] = []byte(hash)
		h.order = append(h.order, user)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("htpasswd %s: line %d: longer than %d bytes: not an htpasswd file", name, n+1, maxHtpasswdLine)
		}
		return nil, fmt.Errorf("htpasswd %s: %w", name, err)
	}
	return h, nil
}

// checkBcrypt accepts a bcrypt hash and names the scheme of anything else.
func checkBcrypt(hash string) error {
	const hint = "only bcrypt hashes are accepted: create the entry with htpasswd -B"
	var scheme string
	switch {
	case hash == "":
		return fmt.Errorf("no password hash; %s", hint)
	case strings.HasPrefix(hash, "$2y$"), strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("not a valid bcrypt hash: %v", err)
		}
		return nil
	case strings.HasPrefix(hash, "$apr1$"), strings.HasPrefix(hash, "$1$"):
		scheme = "an MD5 hash"
	case strings.HasPrefix(hash, "{SHA}"):
		scheme = "a SHA-1 hash"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		scheme = "a SHA-crypt hash"
	case strings.HasPrefix(hash, "$"):
		scheme = "a hash of an unknown scheme"
	default:
		// htpasswd -p stores the password itself, -d a 13-character DES
		// crypt; neither is distinguishable from the other for sure.
		scheme = "a plain-text password or a crypt(3) DES hash"
	}
	return fmt.Errorf("%s is refused; %s", scheme, hint)
}

// Users is the user names in the file's order.
func (h *Htpasswd) Users() []string { return append([]string(nil), h.order...) }

// Has reports whether the file has user.
func (h *Htpasswd) Has(user string) bool {
	_, ok := h.users[user]
	return ok
}

// cost is the bcrypt cost of the file's first hash, or bcrypt's default.
func (h *Htpasswd) cost() int {
	for _, u := range h.order {
		if c, err := bcrypt.Cost(h.users[u]); err == nil {
			return c
		}
	}
	return bcrypt.DefaultCost
}
