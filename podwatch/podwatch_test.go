package podwatch

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// The kubelet's words, as containerd 1.6 and kubelet 1.34 put them.
const (
	notFound     = `rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nope:v1": failed to resolve reference "docker.io/library/nope:v1": docker.io/library/nope:v1: not found`
	notFoundBack = `Back-off pulling image "nope:v1": ErrImagePull: ` + notFound
	outage       = `failed to pull and unpack image "docker.io/library/app:v1": failed to resolve reference "docker.io/library/app:v1": pulling from host 127.0.0.1:5000 failed with status code [manifests v1]: 503 Service Unavailable (breakwater-transient: upstream docker.io answered 503 Service Unavailable; retry after 10s)`
)

func waiting(reason, message string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: "app", Image: "nope:v1", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}}
}

func podWith(uid string, owner string, statuses ...corev1.ContainerStatus) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-" + uid, Namespace: "team", UID: types.UID(uid)}}
	p.Status.ContainerStatuses = statuses
	if owner != "" {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: owner, Name: "j", Controller: &yes}}
	}
	return p
}

// TestObserve follows pods through the kubelet's states: a fatal pull is
// reported once and counted in the gauge; each fatal back-off counts, and
// at EndAfter the pod is ended once; a pull that turns transient, or a
// container that starts, counts from zero again and is never ended; a
// pod that goes leaves the gauge.
func TestObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := &Watcher{o: Options{EndAfter: 2}, log: slog.New(slog.DiscardHandler), pods: map[types.UID]*podState{},
		fatal: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "breakwater_pods_image_fatal"}, []string{"namespace", "reason"})}
	reg.MustRegister(w.fatal)

	steps := []struct {
		name   string
		pod    *corev1.Pod
		acts   int // actions: events, and the ending
		fatal  []string
		gauge  float64
		ending bool
	}{
		{"pulling", podWith("a", "", waiting("ContainerCreating", "")), 0, nil, 0, false},
		{"the first fatal pull: reported", podWith("a", "", waiting("ErrImagePull", notFound)), 1, []string{"team/p-a"}, 1, false},
		{"again: not again", podWith("a", "", waiting("ErrImagePull", notFound)), 0, []string{"team/p-a"}, 1, false},
		{"the first back-off", podWith("a", "", waiting("ImagePullBackOff", notFoundBack)), 0, []string{"team/p-a"}, 1, false},
		{"the same back-off, seen again", podWith("a", "", waiting("ImagePullBackOff", notFoundBack)), 0, []string{"team/p-a"}, 1, false},
		{"pulling again", podWith("a", "", waiting("ErrImagePull", notFound)), 0, []string{"team/p-a"}, 1, false},
		{"the second back-off: ended", podWith("a", "", waiting("ImagePullBackOff", notFoundBack)), 1, []string{"team/p-a"}, 1, true},
		{"a third: ended once", podWith("a", "", waiting("ErrImagePull", notFound)), 0, []string{"team/p-a"}, 1, false},
		{"a Job's pod", podWith("b", "Job", waiting("ErrImagePull", notFound)), 1, []string{"team/p-a", "team/p-b"}, 2, false},
		{"an outage: never touched", podWith("c", "", waiting("ImagePullBackOff", outage)), 0, []string{"team/p-a", "team/p-b"}, 2, false},
	}
	for _, s := range steps {
		acts := w.observe(s.pod)
		if len(acts) != s.acts {
			t.Errorf("%s: %d actions, want %d", s.name, len(acts), s.acts)
		}
		if got := w.Fatal(); strings.Join(got, ",") != strings.Join(s.fatal, ",") {
			t.Errorf("%s: fatal %v, want %v", s.name, got, s.fatal)
		}
		if got := testutil.ToFloat64(w.fatal.WithLabelValues("team", "not-found")); got != s.gauge {
			t.Errorf("%s: gauge %v, want %v", s.name, got, s.gauge)
		}
		if st := w.pods[s.pod.UID]; s.ending && !st.ended {
			t.Errorf("%s: not ended", s.name)
		}
	}

	// Transient after fatal: counting starts over.
	for range 3 {
		w.observe(podWith("c", "", waiting("ErrImagePull", notFound)))
		w.observe(podWith("c", "", waiting("ImagePullBackOff", notFoundBack)))
		w.observe(podWith("c", "", waiting("ImagePullBackOff", outage)))
	}
	if st := w.pods["c"]; st.ended {
		t.Error("a pod whose back-offs were broken by transient ones was ended")
	}
	// Running: not fatal any more.
	running := podWith("b", "Job")
	running.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	w.observe(running)
	w.forget("a")
	if got := w.Fatal(); len(got) != 0 {
		t.Errorf("after the pod started and the other went: fatal %v", got)
	}
	if n := testutil.CollectAndCount(w.fatal); n != 0 {
		t.Errorf("%d gauge series left", n)
	}
}

func TestOwnedByJob(t *testing.T) {
	for _, tc := range []struct {
		owner string
		want  bool
	}{{"Job", true}, {"ReplicaSet", false}, {"", false}} {
		if got := ownedByJob(podWith("x", tc.owner)); got != tc.want {
			t.Errorf("owner %q: %v, want %v", tc.owner, got, tc.want)
		}
	}
}
