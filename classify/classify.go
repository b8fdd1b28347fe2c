// Package classify decides whether a Kubernetes container that is waiting on
// an image pull will recover by itself (transient), will never start
// (fatal), or cannot be judged from what kubelet reports (unknown).
//
// The input is what kubelet puts in a container's waiting state: the reason
// (ErrImagePull, ImagePullBackOff, InvalidImageName, ...) and the message,
// which is the container runtime's error text. The decision is made by an
// ordered table of rules, first match wins, matched case-insensitively; see
// [Rules] and the package README for the table and why it is in that order.
//
// Breakwater's own 503 carries a fixed marker ([Marker]) so that it is
// recognised however a runtime wraps it; [TransientMessage] builds that text.
//
// The package imports nothing from the rest of the project so that anything,
// including other projects, can import it alone.
package classify

import (
	"fmt"
	"strings"
)

// Verdict is what a waiting container's pull failure means for whoever is
// waiting on the pod.
type Verdict int

const (
	// Unknown means the reason and message do not say enough; the caller's
	// own policy (usually a startup timeout) has to decide.
	Unknown Verdict = iota
	// Transient means kubelet's next attempt may succeed: keep waiting.
	Transient
	// Fatal means no retry will make the pull succeed: fail now.
	Fatal
)

var verdictNames = [...]string{Unknown: "unknown", Transient: "transient", Fatal: "fatal"}

// String returns "unknown", "transient" or "fatal".
func (v Verdict) String() string {
	if v < 0 || int(v) >= len(verdictNames) {
		return fmt.Sprintf("Verdict(%d)", int(v))
	}
	return verdictNames[v]
}

// MarshalText encodes the verdict as its String form, so that JSON and other
// text encodings carry "transient" rather than a number.
func (v Verdict) MarshalText() ([]byte, error) {
	if v < 0 || int(v) >= len(verdictNames) {
		return nil, fmt.Errorf("classify: invalid verdict %d", int(v))
	}
	return []byte(verdictNames[v]), nil
}

// UnmarshalText accepts the String forms, case-insensitively.
func (v *Verdict) UnmarshalText(text []byte) error {
	for i, name := range verdictNames {
		if strings.EqualFold(string(text), name) {
			*v = Verdict(i)
			return nil
		}
	}
	return fmt.Errorf("classify: unknown verdict %q (want unknown, transient or fatal)", text)
}

// Result is a verdict with the rule that produced it.
type Result struct {
	Verdict Verdict
	// Rule is the stable id of the deciding rule, e.g. "breakwater-503" or
	// "http-429". Every result has one, unknown ones included.
	Rule string
	// Reason is a one-line explanation for humans. Its wording may change;
	// match on Rule instead.
	Reason string
}

// Ids of the rules that are not rows of the table but steps of Classify.
const (
	// RuleNotImagePull: the waiting reason is not about pulling an image
	// (ContainerCreating, CreateContainerConfigError, CrashLoopBackOff...).
	RuleNotImagePull = "not-image-pull"
	// RuleBareBackoff: "Back-off pulling image X" with no previous error.
	RuleBareBackoff = "bare-backoff"
	// RuleBackoffPreviousError: kubelet >= 1.32's back-off message, decided
	// by the previous pull error it carries.
	RuleBackoffPreviousError = "backoff-previous-error"
	// RuleNoMessage: a pull reason with no message to decide by.
	RuleNoMessage = "no-message"
	// RuleNoMatch: a message that no rule recognises.
	RuleNoMatch = "no-match"
)

const backoffPrefix = "back-off pulling image "

// Classify judges one waiting container from its kubelet reason and message.
// It never panics and its result depends on its arguments alone.
//
// The steps, in order:
//  1. A reason that decides by itself (InvalidImageName, ErrImageNeverPull,
//     SignatureValidationFailed: fatal; RegistryUnavailable: transient).
//  2. A reason that is not about an image pull: unknown. The message rules
//     are written for pull errors; "secret \"x\" not found" under
//     CreateContainerConfigError must not read as a missing image.
//  3. kubelet's back-off message. Since kubelet 1.32 it is
//     `Back-off pulling image "X": <Reason>: <previous error>` and the
//     previous error decides, as if it were the waiting state itself. Older
//     kubelets say only `Back-off pulling image "X"`; that is unknown, not
//     transient: kubelet backs off after every failed pull, missing images
//     included, and calling it transient would make a pod wait minutes for
//     an image that will never exist (the Airflow KPO change, #65490, keeps
//     it fail-fast for the same reason).
//  4. The message table (see Rules): the first rule with a matching pattern
//     decides. Nothing matching is unknown.
func Classify(reason, message string) Result {
	reason = strings.ToLower(strings.TrimSpace(reason))
	msg := strings.ToLower(strings.TrimSpace(message))

	// A loop rather than recursion: a hostile message can nest the back-off
	// prefix many times, and each pass only walks forward through msg.
	backoff := false
	for {
		if r, ok := matchReason(reason); ok {
			return wrapBackoff(r, backoff)
		}
		if !isPullReason(reason) {
			return wrapBackoff(notImagePull, backoff)
		}
		prev, ok := cutBackoff(msg)
		if !ok {
			break
		}
		if prev == "" {
			return bareBackoff
		}
		backoff = true
		reason, msg = splitPreviousReason(prev)
	}
	return wrapBackoff(matchMessage(msg), backoff)
}

var (
	notImagePull = Result{Verdict: Unknown, Rule: RuleNotImagePull,
		Reason: "the container is not waiting on an image pull; classify judges image pulls only"}
	bareBackoff = Result{Verdict: Unknown, Rule: RuleBareBackoff,
		Reason: "kubelet is backing off but, before 1.32, does not say why; back-off alone is not transient, or a missing image would wait minutes"}
	noMessage = Result{Verdict: Unknown, Rule: RuleNoMessage,
		Reason: "no message to judge: the reason alone does not say why the pull failed"}
	noMatch = Result{Verdict: Unknown, Rule: RuleNoMatch,
		Reason: "no rule recognises this message"}
)

func wrapBackoff(r Result, backoff bool) Result {
	if !backoff {
		return r
	}
	return Result{
		Verdict: r.Verdict,
		Rule:    RuleBackoffPreviousError,
		Reason:  "kubelet is backing off; the previous pull error decides: " + r.Reason + " [" + r.Rule + "]",
	}
}

// isPullReason reports whether the message table applies under reason. The
// empty reason is included so that a bare message can be classified.
func isPullReason(reason string) bool {
	switch reason {
	case "", "errimagepull", "imagepullbackoff":
		return true
	}
	return false
}

// cutBackoff recognises kubelet's back-off message at the start of msg
// (already lower case). It returns the previous error it carries, "" for the
// bare form, and ok=false when msg is not a back-off message at all.
func cutBackoff(msg string) (prev string, ok bool) {
	rest, ok := strings.CutPrefix(msg, backoffPrefix)
	if !ok {
		return "", false
	}
	// kubelet writes the image with %q, so it may hold escaped quotes.
	if strings.HasPrefix(rest, `"`) {
		end := closingQuote(rest)
		if end < 0 {
			return "", true
		}
		rest = rest[end+1:]
	} else {
		// Not a kubelet we know; the previous error, if any, follows ": ".
		i := strings.Index(rest, ": ")
		if i < 0 {
			return "", true
		}
		rest = rest[i:]
	}
	rest = strings.TrimSpace(rest)
	rest = strings.TrimSpace(strings.TrimPrefix(rest, ":"))
	return rest, true
}

// closingQuote returns the index of the quote that ends the Go-quoted string
// starting at s[0], or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// splitPreviousReason splits kubelet's "<Reason>: <message>" (how it stores
// the previous pull error) when the first word is a waiting reason kubelet
// uses for pulls; otherwise the whole text is the message.
func splitPreviousReason(prev string) (reason, msg string) {
	head, tail, ok := strings.Cut(prev, ":")
	if ok {
		switch head {
		case "errimagepull", "imagepullbackoff", "registryunavailable",
			"signaturevalidationfailed", "invalidimagename", "errimageneverpull":
			return head, strings.TrimSpace(tail)
		}
	}
	return "", prev
}
