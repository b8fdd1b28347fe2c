// Package admission is a Kubernetes validating admission webhook that
// refuses pods whose images can never be pulled. For a Pod, and for the pod
// template of a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or
// CronJob, it judges every container's, init container's and ephemeral
// container's image with imagecheck, through Breakwater's own cache and
// upstreams:
//
//   - an image missing, forbidden or not a valid reference is denied, with
//     a message naming the image and the registry's answer;
//   - an image that cannot be judged now (the registry down, rate limited,
//     or no answer within the webhook's time) is allowed, with a warning
//     saying why: a webhook must never turn an outage into refused pods;
//   - an image of a registry Breakwater does not mirror is none of its
//     business, and allowed.
//
// On UPDATE only images the old object did not have are judged, so a pod
// whose image was deleted upstream after it started can still be labelled.
// Verdicts are cached briefly: a rollout of a hundred replicas asks once.
package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/breakwater-registry/breakwater/classify"
	"github.com/breakwater-registry/breakwater/imagecheck"
)

// Defaults of Options.
const (
	// DefaultTimeout leaves the API server's default timeoutSeconds (10)
	// room for the round trip.
	DefaultTimeout  = 8 * time.Second
	DefaultCacheTTL = 30 * time.Second
	// maxBody bounds an AdmissionReview: the API server limits objects
	// to 3 MiB in etcd.
	maxBody = 8 << 20
	// maxCached bounds the verdict cache.
	maxCached = 10000
	// parallel is how many images of one object are judged at once.
	parallel = 8
)

// Checker judges one image; imagecheck.Checker is one.
type Checker interface {
	Check(ctx context.Context, image string, accept []string) imagecheck.Result
}

// Options configures a Handler.
type Options struct {
	Checker Checker
	// Accept is the manifest media types asked for.
	Accept []string
	// Timeout bounds one review; images not judged by then are allowed
	// with a warning.
	Timeout time.Duration
	// CacheTTL is how long a verdict (exists, missing, forbidden) is
	// kept; what could not be judged is never kept.
	CacheTTL time.Duration
	Logger   *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Handler serves POST with an AdmissionReview (admission.k8s.io/v1).
type Handler struct {
	o Options

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	res     imagecheck.Result
	expires time.Time
}

// New returns the webhook's handler.
func New(o Options) *Handler {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{o: o, cache: map[string]cached{}}
}

// The AdmissionReview's fields this webhook reads and writes, as
// admission.k8s.io/v1 names them.
type review struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Request    *request  `json:"request,omitempty"`
	Response   *response `json:"response,omitempty"`
}

type request struct {
	UID       string          `json:"uid"`
	Kind      groupKind       `json:"kind"`
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Operation string          `json:"operation"`
	Object    json.RawMessage `json:"object"`
	OldObject json.RawMessage `json:"oldObject"`
}

type groupKind struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
}

type response struct {
	UID      string   `json:"uid"`
	Allowed  bool     `json:"allowed"`
	Status   *status  `json:"status,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

type status struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "admission: POST an AdmissionReview (admission.k8s.io/v1)", http.StatusMethodNotAllowed)
		return
	}
	var rv review
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	switch {
	case err != nil:
		http.Error(w, fmt.Sprintf("admission: reading the request: %v", err), http.StatusBadRequest)
		return
	case len(body) > maxBody:
		http.Error(w, fmt.Sprintf("admission: an AdmissionReview over %d bytes", maxBody), http.StatusRequestEntityTooLarge)
		return
	}
	if err := json.Unmarshal(body, &rv); err != nil {
		http.Error(w, fmt.Sprintf("admission: not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	if rv.APIVersion != "admission.k8s.io/v1" || rv.Kind != "AdmissionReview" || rv.Request == nil || rv.Request.UID == "" {
		http.Error(w, fmt.Sprintf("admission: want an AdmissionReview of admission.k8s.io/v1 with a request and its uid, got apiVersion %q kind %q",
			rv.APIVersion, rv.Kind), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.Timeout)
	defer cancel()
	resp := h.review(ctx, rv.Request)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview", Response: resp})
}

// review decides one request.
func (h *Handler) review(ctx context.Context, req *request) *response {
	resp := &response{UID: req.UID, Allowed: true}
	images, err := imagesOf(req.Kind.Kind, req.Object)
	if err != nil {
		// Not ours to refuse: the API server validates objects itself.
		resp.Warnings = []string{"breakwater: images not checked: " + err.Error()}
		return resp
	}
	if req.Operation == "UPDATE" && len(req.OldObject) > 0 {
		if old, err := imagesOf(req.Kind.Kind, req.OldObject); err == nil {
			images = newImages(images, old)
		}
	}
	if len(images) == 0 {
		return resp
	}
	results := h.judge(ctx, images)
	var denials []string
	for _, c := range images {
		res := results[c.image]
		switch {
		case res.Unmirrored || res.Verdict == imagecheck.Exists:
		case res.Verdict.Fatal():
			denials = append(denials, denial(res, c))
		default:
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("breakwater: %s could not be checked (%s); allowed, since that says nothing of the image",
				display(res), why(res)))
		}
	}
	who := req.Kind.Kind + " " + req.Namespace + "/" + req.Name
	if len(denials) > 0 {
		resp.Allowed = false
		resp.Status = &status{Code: http.StatusForbidden, Reason: "Forbidden", Message: strings.Join(denials, "; ")}
		h.o.Logger.Info("admission: denied", "object", who, "operation", req.Operation, "message", resp.Status.Message)
	} else if len(resp.Warnings) > 0 {
		h.o.Logger.Info("admission: allowed with warnings", "object", who, "operation", req.Operation, "warnings", resp.Warnings)
	}
	return resp
}

// judge checks each distinct image, from the cache where it can, a few at
// a time, within ctx.
func (h *Handler) judge(ctx context.Context, images []containerImage) map[string]imagecheck.Result {
	out := make(map[string]imagecheck.Result, len(images))
	var ask []string
	for _, c := range images {
		if _, seen := out[c.image]; seen {
			continue
		}
		if res, ok := h.cached(c.image); ok {
			out[c.image] = res
			continue
		}
		// What ctx ends before is judged as not answered in time.
		out[c.image] = imagecheck.Result{Image: c.image, Verdict: imagecheck.Unavailable, Detail: imagecheck.TimedOut}
		ask = append(ask, c.image)
	}
	results := make([]*imagecheck.Result, len(ask))
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallel)
	for i, image := range ask {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return
			}
			res := h.o.Checker.Check(ctx, image, h.o.Accept)
			h.keep(image, res)
			results[i] = &res
		}()
	}
	wg.Wait()
	for i, res := range results {
		if res != nil {
			out[ask[i]] = *res
		}
	}
	return out
}

func (h *Handler) cached(image string) (imagecheck.Result, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.cache[image]
	if !ok || !h.o.Now().Before(c.expires) {
		return imagecheck.Result{}, false
	}
	return c.res, true
}

// keep caches a verdict; what could not be judged is asked again next
// time.
func (h *Handler) keep(image string, res imagecheck.Result) {
	if res.Verdict == imagecheck.Unavailable {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.o.Now()
	if len(h.cache) >= maxCached {
		for k, c := range h.cache {
			if !now.Before(c.expires) {
				delete(h.cache, k)
			}
		}
		if len(h.cache) >= maxCached {
			clear(h.cache)
		}
	}
	h.cache[image] = cached{res: res, expires: now.Add(h.o.CacheTTL)}
}

// denial is the message of one fatal image:
//
//	image docker.io/library/ghost:v1 does not exist: docker.io answered 404 MANIFEST_UNKNOWN (container ghost)
func denial(res imagecheck.Result, c containerImage) string {
	var what string
	switch res.Verdict {
	case imagecheck.Missing:
		what = "does not exist"
	case imagecheck.Denied:
		what = "may not be pulled"
	default:
		what = "is not a valid image reference"
	}
	return fmt.Sprintf("image %s %s: %s (%s)", display(res), what, why(res), c.where)
}

// why is the registry's answer, in its words, or the checker's detail.
func why(res imagecheck.Result) string {
	if res.Status == 0 {
		return res.Detail
	}
	// Breakwater's own 503 is no answer of the registry's: its crafted
	// text says what the registry did (unreachable, 429, 503...).
	if _, cause, ok := strings.Cut(res.Message, classify.Marker+": "); ok && res.Verdict == imagecheck.Unavailable {
		return strings.TrimSuffix(cause, ")")
	}
	s := fmt.Sprintf("%s answered %d", res.Host, res.Status)
	if res.Code != "" {
		s += " " + res.Code
	}
	// "manifest unknown" says again what MANIFEST_UNKNOWN said.
	if m := res.Message; m != "" && !strings.EqualFold(m, strings.ReplaceAll(res.Code, "_", " ")) {
		s += ": " + m
	}
	return s
}

// display names the image as a user writes it: docker.io/library/ghost:v1,
// not go-containerregistry's index.docker.io.
func display(res imagecheck.Result) string {
	ref, err := name.ParseReference(res.Image)
	if err != nil || res.Host == "" {
		return fmt.Sprintf("%q", res.Image)
	}
	repo := res.Host + "/" + ref.Context().RepositoryStr()
	if d, ok := ref.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + ref.Identifier()
}

// containerImage is one container's image and where it is in the object.
type containerImage struct {
	image string
	where string // "container web", "init container setup"
}

type podSpec struct {
	Containers          []container `json:"containers"`
	InitContainers      []container `json:"initContainers"`
	EphemeralContainers []container `json:"ephemeralContainers"`
}

type container struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

type template struct {
	Spec podSpec `json:"spec"`
}

// imagesOf returns the images of kind's object, where that kind holds a pod
// or a pod template, nil for any other kind.
func imagesOf(kind string, object json.RawMessage) ([]containerImage, error) {
	if len(object) == 0 {
		return nil, nil
	}
	var spec *podSpec
	switch kind {
	case "Pod":
		var o struct {
			Spec podSpec `json:"spec"`
		}
		if err := json.Unmarshal(object, &o); err != nil {
			return nil, fmt.Errorf("a %s that does not decode: %w", kind, err)
		}
		spec = &o.Spec
	case "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController", "PodTemplate":
		var o struct {
			Spec     struct{ Template template } `json:"spec"`
			Template template                    `json:"template"` // a PodTemplate's
		}
		if err := json.Unmarshal(object, &o); err != nil {
			return nil, fmt.Errorf("a %s that does not decode: %w", kind, err)
		}
		spec = &o.Spec.Template.Spec
		if kind == "PodTemplate" {
			spec = &o.Template.Spec
		}
	case "CronJob":
		var o struct {
			Spec struct {
				JobTemplate struct {
					Spec struct{ Template template } `json:"spec"`
				} `json:"jobTemplate"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(object, &o); err != nil {
			return nil, fmt.Errorf("a %s that does not decode: %w", kind, err)
		}
		spec = &o.Spec.JobTemplate.Spec.Template.Spec
	default:
		return nil, nil
	}
	var out []containerImage
	for _, group := range []struct {
		what string
		cs   []container
	}{{"container", spec.Containers}, {"init container", spec.InitContainers}, {"ephemeral container", spec.EphemeralContainers}} {
		for _, c := range group.cs {
			if c.Image == "" {
				continue // the API server refuses it, with its own message
			}
			out = append(out, containerImage{image: c.Image, where: group.what + " " + c.Name})
		}
	}
	return out, nil
}

// newImages is the images of now that old did not have.
func newImages(now, old []containerImage) []containerImage {
	had := map[string]bool{}
	for _, c := range old {
		had[c.image] = true
	}
	var out []containerImage
	for _, c := range now {
		if !had[c.image] {
			out = append(out, c)
		}
	}
	return out
}
