package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testcerts"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
)

// admissionAnswer is what the webhook answered one AdmissionReview.
type admissionAnswer struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Response   struct {
		UID     string `json:"uid"`
		Allowed bool   `json:"allowed"`
		Status  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"status"`
		Warnings []string `json:"warnings"`
	} `json:"response"`
}

// TestAdmission runs serve with TLS, client authentication (nobody
// anonymous may pull) and the webhook on, in front of a real registry, and
// posts AdmissionReviews as the API server does: a pod whose image is
// missing is denied with the registry's answer, one whose image exists is
// allowed, a Deployment's missing init container image and an invalid
// reference are denied, an UPDATE keeping an image that vanished is
// allowed, an image of a registry not mirrored is none of Breakwater's
// business, and with the upstream down the pod is allowed with a warning
// naming the cause. A verdict is cached: a second review asks nobody.
func TestAdmission(t *testing.T) {
	up := testupstream.Start(t)
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.PushImage(t, "library/app:v1", img)
	up.PushImage(t, "library/ghost:other", img)

	dir := t.TempDir()
	ca := testcerts.NewCA(t, "admission-test-ca")
	certFile, keyFile := ca.WriteServer(t, dir, 2)
	htpasswd := writeAlice(t, dir)
	cfg, err := loadConfig("", "127.0.0.1:0", filepath.Join(dir, "cache"), "1h", []string{"docker.io=" + up.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = config.TLS{CertFile: certFile, KeyFile: keyFile}
	cfg.Auth = config.Auth{Htpasswd: htpasswd, Realm: "bw", Access: []config.AccessEntry{
		{Users: []string{"alice"}, Repositories: []string{"docker.io/library/"}},
	}}
	cfg.Admission = config.Admission{Enabled: true, Timeout: config.Duration(5 * time.Second), CacheTTL: config.Duration(time.Minute)}
	// The upstream's outage is answered within the webhook's time.
	cfg.Resilience.Retry.Deadline = config.Duration(500 * time.Millisecond)
	cfg.Resilience.Breaker.MinRequests = 1 << 20
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	addr, stop := startServeLoop(t, cfg, slog.New(slog.DiscardHandler), nil)
	t.Cleanup(func() { _ = stop() })
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	url := "https://" + addr + "/_breakwater/v1/admission"

	review := func(t *testing.T, kind, op, object, old string) admissionAnswer {
		t.Helper()
		body := fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"","version":"v1","kind":%q},`+
			`"namespace":"team","name":"x","operation":%q,"object":%s`, kind, op, object)
		if old != "" {
			body += `,"oldObject":` + old
		}
		body += "}}"
		resp, err := client.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var a admissionAnswer
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &a) != nil || a.APIVersion != "admission.k8s.io/v1" || a.Kind != "AdmissionReview" || a.Response.UID != "u-1" {
			t.Fatalf("%s %s", resp.Status, raw)
		}
		return a
	}
	pod := func(containers ...string) string {
		var cs []string
		for i, image := range containers {
			cs = append(cs, fmt.Sprintf(`{"name":"c%d","image":%q}`, i, image))
		}
		return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":[` + strings.Join(cs, ",") + `]}}`
	}

	ghost := "docker.io/library/ghost:v1"
	for _, tc := range []struct {
		name, kind, op, object, old string
		allowed                     bool
		// message is the denial's; warning a warning's, when allowed.
		message, warning string
	}{
		{name: "a missing image", kind: "Pod", op: "CREATE", object: pod(ghost),
			message: "image docker.io/library/ghost:v1 does not exist: docker.io answered 404 MANIFEST_UNKNOWN (container c0)"},
		{name: "a missing repository, short name", kind: "Pod", op: "CREATE", object: pod("nosuch/app:v1"),
			message: "image docker.io/nosuch/app:v1 does not exist: docker.io answered 404 MANIFEST_UNKNOWN (container c0)"},
		{name: "an existing image", kind: "Pod", op: "CREATE", object: pod("library/app:v1"), allowed: true},
		{name: "an existing image among missing ones", kind: "Pod", op: "CREATE", object: pod("app:v1", ghost),
			message: "image docker.io/library/ghost:v1 does not exist"},
		{name: "a Deployment's init container", kind: "Deployment", op: "CREATE",
			object:  `{"spec":{"template":{"spec":{"initContainers":[{"name":"setup","image":"` + ghost + `"}],"containers":[{"name":"web","image":"app:v1"}]}}}}`,
			message: "does not exist: docker.io answered 404 MANIFEST_UNKNOWN (init container setup)"},
		{name: "a CronJob", kind: "CronJob", op: "CREATE",
			object:  `{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"job","image":"` + ghost + `"}]}}}}}}`,
			message: "(container job)"},
		{name: "an invalid reference", kind: "Pod", op: "CREATE", object: pod("docker.io/Library/App:v1"),
			message: `image "docker.io/Library/App:v1" is not a valid image reference: could not parse reference: docker.io/Library/App:v1 (container c0)`},
		{name: "an update keeping an image gone", kind: "Pod", op: "UPDATE", object: pod(ghost), old: pod(ghost), allowed: true},
		{name: "an update adding one", kind: "Pod", op: "UPDATE", object: pod("app:v1", ghost), old: pod("app:v1"),
			message: "image docker.io/library/ghost:v1 does not exist"},
		{name: "a registry not mirrored", kind: "Pod", op: "CREATE", object: pod("registry.example.com/team/app:v1"), allowed: true},
		{name: "a kind without pods", kind: "ConfigMap", op: "CREATE", object: `{"data":{"image":"` + ghost + `"}}`, allowed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := review(t, tc.kind, tc.op, tc.object, tc.old)
			if a.Response.Allowed != tc.allowed {
				t.Fatalf("allowed %v, want %v: %+v", a.Response.Allowed, tc.allowed, a.Response)
			}
			if !tc.allowed && (a.Response.Status == nil || a.Response.Status.Code != http.StatusForbidden || !strings.Contains(a.Response.Status.Message, tc.message)) {
				t.Errorf("denial %+v, want 403 with %q", a.Response.Status, tc.message)
			}
			if tc.allowed && len(a.Response.Warnings) != 0 {
				t.Errorf("warnings %q, want none", a.Response.Warnings)
			}
		})
	}

	t.Run("a verdict is kept", func(t *testing.T) {
		before := len(up.Requests("", "/library/ghost/manifests/v1"))
		if a := review(t, "Pod", "CREATE", pod(ghost), ""); a.Response.Allowed {
			t.Fatal("allowed")
		}
		if n := len(up.Requests("", "/library/ghost/manifests/v1")) - before; n != 0 {
			t.Errorf("%d upstream requests for a verdict given a moment ago", n)
		}
	})

	t.Run("the upstream down", func(t *testing.T) {
		up.Play("", "/library/new/", testupstream.Status(http.StatusServiceUnavailable)).Forever()
		a := review(t, "Pod", "CREATE", pod("library/new:v1"), "")
		if !a.Response.Allowed || len(a.Response.Warnings) != 1 ||
			!strings.Contains(a.Response.Warnings[0], "docker.io/library/new:v1 could not be checked") || !strings.Contains(a.Response.Warnings[0], "503") {
			t.Fatalf("%+v, want allowed with a warning naming the upstream's 503", a.Response)
		}
		// Not kept: the next review asks again.
		before := len(up.Requests("", "/library/new/"))
		review(t, "Pod", "CREATE", pod("library/new:v1"), "")
		if len(up.Requests("", "/library/new/")) == before {
			t.Error("a verdict of an outage was kept")
		}
	})

	t.Run("not an AdmissionReview", func(t *testing.T) {
		for _, body := range []string{`{"apiVersion":"v1","kind":"Pod"}`, `not json`} {
			resp, err := client.Post(url, "application/json", bytes.NewReader([]byte(body)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%q: %s, want 400", body, resp.Status)
			}
		}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET: %s, want 405", resp.Status)
		}
	})
}
