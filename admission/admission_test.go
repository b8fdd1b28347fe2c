package admission

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/imagecheck"
)

// TestImagesOf: every kind that holds a pod or a pod template gives the
// images of its containers, init containers and ephemeral containers, each
// named where it is; other kinds give none, and an object that does not
// decode is an error.
func TestImagesOf(t *testing.T) {
	spec := `{"containers":[{"name":"web","image":"nginx:1"}],"initContainers":[{"name":"setup","image":"busybox"}],` +
		`"ephemeralContainers":[{"name":"debug","image":"alpine"},{"name":"blank"}]}`
	all := []containerImage{{"nginx:1", "container web"}, {"busybox", "init container setup"}, {"alpine", "ephemeral container debug"}}
	templated := `{"spec":{"template":{"spec":` + spec + `}}}`
	for _, tc := range []struct {
		kind, object string
		want         []containerImage
		err          bool
	}{
		{"Pod", `{"spec":` + spec + `}`, all, false},
		{"Deployment", templated, all, false},
		{"ReplicaSet", templated, all, false},
		{"StatefulSet", templated, all, false},
		{"DaemonSet", templated, all, false},
		{"Job", templated, all, false},
		{"ReplicationController", templated, all, false},
		{"PodTemplate", `{"template":{"spec":` + spec + `}}`, all, false},
		{"CronJob", `{"spec":{"jobTemplate":{"spec":{"template":{"spec":` + spec + `}}}}}`, all, false},
		{"Service", `{"spec":{"ports":[]}}`, nil, false},
		{"Pod", `{"spec":{"containers":"nginx"}}`, nil, true},
		{"Pod", ``, nil, false},
	} {
		got, err := imagesOf(tc.kind, json.RawMessage(tc.object))
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("imagesOf(%s, %s) = %v, %v; want %v (error: %v)", tc.kind, tc.object, got, err, tc.want, tc.err)
		}
	}
}

// TestNewImages: an UPDATE judges only the images the old object lacked.
func TestNewImages(t *testing.T) {
	old := []containerImage{{"nginx:1", "container web"}}
	now := []containerImage{{"nginx:1", "container web"}, {"nginx:1", "container sidecar"}, {"alpine", "ephemeral container debug"}}
	want := []containerImage{{"alpine", "ephemeral container debug"}}
	if got := newImages(now, old); !reflect.DeepEqual(got, want) {
		t.Errorf("newImages = %v, want %v", got, want)
	}
}

// hangingChecker answers no image before its context ends, as a registry
// that accepts the connection and says nothing.
type hangingChecker struct{}

func (hangingChecker) Check(ctx context.Context, image string, _ []string) imagecheck.Result {
	<-ctx.Done()
	return imagecheck.Result{Image: image, Verdict: imagecheck.Unavailable, Detail: imagecheck.TimedOut}
}

// TestTimeoutAllows: images not judged within the webhook's time are
// allowed with a warning saying so, in time for the API server; what was
// not judged is not kept.
func TestTimeoutAllows(t *testing.T) {
	h := New(Options{Checker: hangingChecker{}, Timeout: 100 * time.Millisecond})
	body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"CREATE",` +
		`"object":{"spec":{"containers":[{"name":"a","image":"nginx:1"},{"name":"b","image":"alpine:3"}]}}}}`
	start := time.Now()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/_breakwater/v1/admission", strings.NewReader(body)))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("answered after %v with a 100ms timeout", took)
	}
	var rv review
	if err := json.Unmarshal(w.Body.Bytes(), &rv); err != nil || rv.Response == nil {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if !rv.Response.Allowed || len(rv.Response.Warnings) != 2 || !strings.Contains(rv.Response.Warnings[0], imagecheck.TimedOut) {
		t.Errorf("%+v, want allowed with a warning per image", rv.Response)
	}
	if len(h.cache) != 0 {
		t.Errorf("kept %d verdicts of images not judged", len(h.cache))
	}
}
