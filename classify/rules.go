package classify

import "strings"

// A rule is one row of a table. Reason rows match the waiting reason, in
// any case; message rows match when any of their patterns is found in the
// message. Classify lower-cases the message, so every needle below is written
// in lower case (a test holds the table to that).
type rule struct {
	id       string
	verdict  Verdict
	explain  string
	reasons  []string
	patterns []pattern
}

type patternKind uint8

const (
	// phrase: the text anywhere. Every phrase holds a space, which no image
	// reference can, so a repository or tag name cannot fake one.
	phrase patternKind = iota
	// word: the text with a boundary on both sides that an image reference
	// cannot supply (see isRefByte). Single words such as "denied",
	// "unauthorized", "toomanyrequests" or "eof" are valid repository and
	// tag names: docker.io/denied/app:eof must not read as an access denial
	// or a dropped connection.
	word
	// sequence: the parts in this order, anything between. For errors whose
	// words are only decisive in their runtime's own arrangement.
	sequence
)

type pattern struct {
	kind  patternKind
	parts []string
}

func phr(s string) pattern        { return pattern{phrase, []string{s}} }
func wrd(s string) pattern        { return pattern{word, []string{s}} }
func seq(parts ...string) pattern { return pattern{sequence, parts} }

// reasonRules decide from the waiting reason alone. kubelet sets these
// reasons itself, from the kind of failure rather than from text, so no
// message can overrule them.
var reasonRules = []rule{
	{id: "invalid-image-name", verdict: Fatal, reasons: []string{"InvalidImageName"},
		explain: "kubelet cannot parse the image reference; no retry fixes a malformed name"},
	{id: "image-never-pull", verdict: Fatal, reasons: []string{"ErrImageNeverPull"},
		explain: "imagePullPolicy is Never and the image is not on the node; kubelet will not pull it"},
	{id: "signature-validation-failed", verdict: Fatal, reasons: []string{"SignatureValidationFailed"},
		explain: "the runtime rejected the image's signature; a retry pulls the same content"},
	{id: "registry-unavailable", verdict: Transient, reasons: []string{"RegistryUnavailable"},
		explain: "the runtime reports the registry unavailable; kubelet keeps retrying"},
}

// messageRules decide from the runtime's error text, first match wins.
//
// Precedence, top to bottom, and why:
//
//  1. mirror-fallback-not-found. podman and CRI-O report every source they
//     tried: "(Mirrors also failed: [<mirror>: <err>]): <ref>: <primary err>".
//     When the registry itself, asked directly, says the manifest or the
//     repository does not exist, that is the answer even if the mirror (which
//     may be Breakwater, marker and all) could not reach it. containerd
//     reports the registry's 404 over the mirror's error in the same case.
//  2. breakwater-503. The marker is emitted by Breakwater alone and only when
//     it could not serve for a transient reason; its text also names the
//     upstream's cause and the image, so it must be decided before any rule
//     that could be fooled by them.
//  3. Fatal answers. A registry that says "manifest unknown", "denied" or
//     "unauthorized" has answered; a transient word elsewhere in the same
//     message is context (podman's mirror list, an auth endpoint's name), not
//     the cause. These patterns are anchored (phrases, bounded words,
//     runtime-specific sequences) so that an image named "notfound" or
//     "denied" cannot trigger them: the bare words "not found" and
//     "forbidden" are not patterns; containerd's ": not found" after
//     "failed to resolve" and the status line "404 Not Found" are.
//  4. Transient causes: rate limits, 5xx, timeouts, resets, refused
//     connections, truncated bodies, DNS, routing. These are causes only when
//     nothing definitive was said; their order among themselves only picks
//     the rule id.
var messageRules = []rule{
	{id: "mirror-fallback-not-found", verdict: Fatal,
		patterns: []pattern{
			seq("mirrors also failed", "]): ", "manifest unknown"),
			seq("mirrors also failed", "]): ", "name unknown"),
		},
		explain: "the registry itself, tried after the mirrors, says the image does not exist"},
	{id: "breakwater-503", verdict: Transient,
		patterns: []pattern{wrd(Marker)},
		explain:  "Breakwater could not fetch the image from its upstream just now (rate limit, 5xx, timeout or unreachable) and answered 503 with a retry hint"},

	// Fatal: the registry or the runtime's configuration has answered.
	{id: "invalid-reference", verdict: Fatal,
		patterns: []pattern{phr("invalid reference format"), phr("couldn't parse image")},
		explain:  "the image reference is malformed"},
	{id: "manifest-unknown", verdict: Fatal,
		patterns: []pattern{phr("manifest unknown"), seq("manifest for ", " not found")},
		explain:  "the registry has no manifest for this tag or digest (MANIFEST_UNKNOWN)"},
	{id: "name-unknown", verdict: Fatal,
		patterns: []pattern{wrd("name unknown")},
		explain:  "the registry does not know this repository (NAME_UNKNOWN)"},
	{id: "not-found", verdict: Fatal,
		// containerd: `failed to resolve reference "R": R: not found` (1.6,
		// 1.7) and `failed to resolve image: R: not found` (2.x).
		patterns: []pattern{seq("failed to resolve", ": not found")},
		explain:  "containerd resolved the reference and the registry answered 404: the image does not exist"},
	{id: "http-404", verdict: Fatal,
		patterns: []pattern{phr("404 not found")},
		explain:  "the registry answered 404 Not Found"},
	{id: "blob-unknown", verdict: Fatal,
		patterns: []pattern{phr("blob unknown"), seq("failed open: content at ", " not found")},
		explain:  "the registry does not have a blob the manifest names (BLOB_UNKNOWN)"},
	{id: "platform-mismatch", verdict: Fatal,
		patterns: []pattern{phr("no match for platform in manifest"), phr("no image found in manifest list for architecture")},
		explain:  "the image has no variant for this node's OS and architecture"},
	{id: "pull-access-denied", verdict: Fatal,
		patterns: []pattern{
			phr("pull access denied"),
			phr("repository does not exist"),
			phr("may require 'docker login'"),
			phr("may require authorization"),
		},
		explain: "the registry refused the pull: the repository does not exist or needs credentials the node lacks"},
	{id: "unauthorized", verdict: Fatal,
		patterns: []pattern{wrd("unauthorized"), phr("authentication required"), phr("invalid username/password"),
			// dockerd (distribution's client) when a registry asks for Basic
			// credentials and it has none: no docker login for it.
			phr("no basic auth credentials")},
		explain: "the registry wants credentials the node did not send or sent wrong (401 / UNAUTHORIZED)"},
	{id: "insufficient-scope", verdict: Fatal,
		patterns: []pattern{wrd("insufficient_scope")},
		explain:  "the registry token does not grant pull on this repository (insufficient_scope)"},
	{id: "denied", verdict: Fatal,
		patterns: []pattern{wrd("denied"), phr("403 forbidden")},
		explain:  "the registry denied access (403 / DENIED)"},
	{id: "registry-blocked", verdict: Fatal,
		patterns: []pattern{seq("registry ", " is blocked in ")},
		explain:  "registries.conf on the node blocks this registry"},
	{id: "short-name", verdict: Fatal,
		patterns: []pattern{phr("did not resolve to an alias"), phr("short-name resolution enforced")},
		explain:  "a short image name could not be resolved to a registry; name the registry in the image"},

	// Transient: nothing definitive was said and the cause passes.
	{id: "kubelet-pull-qps", verdict: Transient,
		patterns: []pattern{phr("pull qps exceeded")},
		explain:  "kubelet's own registryPullQPS limit held the pull back; a later attempt goes through"},
	{id: "http-429", verdict: Transient,
		patterns: []pattern{phr("too many requests"), wrd("toomanyrequests")},
		explain:  "the registry is rate limiting pulls (429 Too Many Requests)"},
	{id: "http-503", verdict: Transient,
		patterns: []pattern{phr("service unavailable")},
		explain:  "the registry answered 503 Service Unavailable"},
	{id: "http-502", verdict: Transient,
		patterns: []pattern{phr("bad gateway")},
		explain:  "a gateway in front of the registry answered 502 Bad Gateway"},
	{id: "http-504", verdict: Transient,
		patterns: []pattern{phr("gateway timeout")},
		explain:  "a gateway in front of the registry answered 504 Gateway Timeout"},
	{id: "http-500", verdict: Transient,
		patterns: []pattern{phr("internal server error")},
		explain:  "the registry answered 500 Internal Server Error"},
	{id: "http-408", verdict: Transient,
		patterns: []pattern{phr("408 request timeout")},
		explain:  "the registry answered 408 Request Timeout"},
	{id: "registry-unavailable-message", verdict: Transient,
		patterns: []pattern{phr("because the registry is unavailable")},
		explain:  "kubelet reports the registry unavailable"},
	{id: "timeout", verdict: Transient,
		patterns: []pattern{
			phr("i/o timeout"),
			phr("tls handshake timeout"),
			phr("client.timeout exceeded"),
			phr("timeout awaiting response headers"),
			phr("context deadline exceeded"),
			phr("code = deadlineexceeded"),
		},
		explain: "the pull timed out talking to the registry"},
	{id: "context-canceled", verdict: Transient,
		patterns: []pattern{phr("context canceled")},
		explain:  "the pull was cancelled before it finished, usually by kubelet's runtime request timeout on a slow pull"},
	{id: "connection-reset", verdict: Transient,
		patterns: []pattern{phr("connection reset"), phr("broken pipe")},
		explain:  "the connection to the registry was reset"},
	{id: "connection-refused", verdict: Transient,
		patterns: []pattern{phr("connection refused")},
		explain:  "the registry refused the connection"},
	{id: "eof", verdict: Transient,
		patterns: []pattern{wrd("eof")},
		explain:  "the registry closed the connection mid-answer (EOF)"},
	{id: "dns", verdict: Transient,
		patterns: []pattern{
			phr("no such host"),
			phr("server misbehaving"),
			phr("temporary failure in name resolution"),
			phr("name or service not known"),
		},
		explain: "the registry's name did not resolve (DNS)"},
	{id: "network-unreachable", verdict: Transient,
		patterns: []pattern{phr("network is unreachable"), phr("no route to host"), phr("host is unreachable")},
		explain:  "the node has no route to the registry"},
}

// RuleInfo describes one rule for documentation and listings.
type RuleInfo struct {
	ID      string
	Verdict Verdict
	// Reasons are the waiting reasons a reason rule matches; empty for
	// message rules.
	Reasons []string
	// Patterns are the message patterns of a message rule, in the table's
	// notation: "text" is a phrase, "<word>" a bounded word, and "a … b" a
	// sequence.
	Patterns []string
	Explain  string
}

// Rules lists the table in the order Classify consults it: the reason rules,
// then the message rules. The steps that are not rows (RuleNotImagePull,
// RuleBareBackoff, RuleBackoffPreviousError, RuleNoMessage, RuleNoMatch) are
// not listed. The result is a fresh copy.
func Rules() []RuleInfo {
	var out []RuleInfo
	for _, table := range [][]rule{reasonRules, messageRules} {
		for _, r := range table {
			info := RuleInfo{ID: r.id, Verdict: r.verdict, Explain: r.explain}
			info.Reasons = append(info.Reasons, r.reasons...)
			for _, p := range r.patterns {
				info.Patterns = append(info.Patterns, p.String())
			}
			out = append(out, info)
		}
	}
	return out
}

func (p pattern) String() string {
	switch p.kind {
	case word:
		return "<" + p.parts[0] + ">"
	case sequence:
		return `"` + strings.Join(p.parts, `" … "`) + `"`
	}
	return `"` + p.parts[0] + `"`
}

func matchReason(reason string) (Result, bool) {
	for _, r := range reasonRules {
		for _, want := range r.reasons {
			if strings.EqualFold(reason, want) {
				return r.result(), true
			}
		}
	}
	return Result{}, false
}

func matchMessage(msg string) Result {
	if msg == "" {
		return noMessage
	}
	for _, r := range messageRules {
		for _, p := range r.patterns {
			if p.match(msg) {
				return r.result()
			}
		}
	}
	return noMatch
}

func (r rule) result() Result { return Result{Verdict: r.verdict, Rule: r.id, Reason: r.explain} }

func (p pattern) match(s string) bool {
	switch p.kind {
	case word:
		return containsWord(s, p.parts[0])
	case sequence:
		// Taking each part's first occurrence after the previous one finds
		// the sequence whenever it exists.
		for _, part := range p.parts {
			i := strings.Index(s, part)
			if i < 0 {
				return false
			}
			s = s[i+len(part):]
		}
		return true
	}
	return strings.Contains(s, p.parts[0])
}

// containsWord reports whether w occurs in s with a boundary on both sides
// that could not belong to an image reference, and not where a tag is
// printed on its own. A colon may follow the word
// when a space or the end follows the colon: that is how runtimes print an
// OCI error code ("denied: requested access ...", "toomanyrequests: You have
// reached ..."), while in a reference a colon is followed by a tag.
func containsWord(s, w string) bool {
	for from := 0; ; {
		i := strings.Index(s[from:], w)
		if i < 0 {
			return false
		}
		start := from + i
		end := start + len(w)
		// containers/image prints "reading manifest <tag> in <repo>", and a
		// tag may be any word at all.
		before := (start == 0 || !isRefByte(s[start-1])) &&
			!strings.HasSuffix(s[:start], "manifest ")
		after := end == len(s) || !isRefByte(s[end]) ||
			s[end] == ':' && (end+1 == len(s) || s[end+1] == ' ')
		if before && after {
			return true
		}
		from = start + 1
	}
}

// isRefByte reports whether c can sit next to a word inside an image
// reference as runtimes print it: letters, digits, the separators of names,
// tags and digests, the quotes kubelet and containerd put around references,
// and any non-ASCII byte, to be safe.
func isRefByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("._-/:@\"'", c) >= 0
}
