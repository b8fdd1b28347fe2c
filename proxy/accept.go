package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"mime"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// clientAccept is what a client's Accept headers ask of a tag: the media
// types (acceptedTypes) and the name of that set (acceptVariant). Its
// types may be shared between requests: do not modify them.
type clientAccept struct {
	types   []string
	variant string
}

func parseAccept(h http.Header) clientAccept {
	types := acceptedTypes(h)
	return clientAccept{types: types[:len(types):len(types)], variant: acceptVariant(types)}
}

// maxAcceptSets bounds the Accept headers remembered: runtimes send a
// handful, and a client inventing a new one per request only makes its own
// requests parse theirs.
const maxAcceptSets = 256

// acceptSets remembers what each Accept header seen asks, so that the
// requests of one runtime — which send the same header every time — do not
// parse and hash it each time.
type acceptSets struct {
	m sync.Map // header value → clientAccept
	n atomic.Int64
}

func (a *acceptSets) of(h http.Header) clientAccept {
	vals := h["Accept"]
	if len(vals) != 1 {
		return parseAccept(h)
	}
	if c, ok := a.m.Load(vals[0]); ok {
		return c.(clientAccept)
	}
	c := parseAccept(h)
	if a.n.Load() < maxAcceptSets {
		if _, loaded := a.m.LoadOrStore(vals[0], c); !loaded {
			a.n.Add(1)
		}
	}
	return c
}

// acceptedTypes returns the media types a client listed in its Accept
// headers, without parameters, in order, leaving out what Breakwater does
// not ask an upstream for: wildcards (curl sends */*; an upstream that
// gets it may pick the oldest format it has) and Docker schema 1, whose
// digest is not that of its bytes, so that it cannot be served verified.
// Nothing left means "any", and the upstream is asked for every type
// Breakwater serves.
func acceptedTypes(h http.Header) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range h.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || seen[mt] || strings.HasSuffix(mt, "/*") || isSchema1(mt) {
				continue
			}
			seen[mt] = true
			out = append(out, mt)
		}
	}
	return out
}

// acceptVariant names a set of accepted media types. The upstream may
// answer a tag differently for different sets, so each set has its own tag
// record; clients of one runtime send the same set and share it.
func acceptVariant(accept []string) string {
	if len(accept) == 0 {
		return "any"
	}
	sorted := append([]string(nil), accept...)
	sort.Strings(sorted)
	sum := sha256.Sum256([]byte(strings.Join(sorted, ",")))
	return "a" + hex.EncodeToString(sum[:8])
}
