// Package podwatch watches pods through the API server and reports the
// ones waiting on an image pull that will never succeed, as classify
// judges the kubelet's waiting reason and message: a Kubernetes Event on
// the pod, once, and the gauge breakwater_pods_image_fatal{namespace,
// reason}. When configured it ends such a pod after a number of fatal
// back-offs: a pod a Job owns is first given the condition
// breakwater.dev/ImagePullFatal, which a Job's podFailurePolicy can match
// (onPodConditions) to fail the Job rather than retry it; then the pod is
// deleted.
//
// Transient pulls are never touched, and a container that is no longer
// fatal (its image appeared, it started) starts counting again from zero.
package podwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/breakwater-registry/breakwater/classify"
)

// ConditionType is the pod condition set on a Job's pod before it is
// ended, for the Job's podFailurePolicy to match.
const ConditionType corev1.PodConditionType = "breakwater.dev/ImagePullFatal"

// Event reasons.
const (
	ReasonFatal = "ImagePullFatal"
	ReasonEnded = "ImagePullFatalEnded"
)

// component names the watcher in Events.
const component = "breakwater-watch"

// Options configures a Watcher.
type Options struct {
	Client *Client
	// Namespace limits the watch to one namespace; "" watches all.
	Namespace string
	// EndAfter ends a pod after this many fatal back-offs of one of its
	// containers; 0 only reports.
	EndAfter int
	// Registerer takes the gauge; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Watcher is the pod watcher.
type Watcher struct {
	o     Options
	log   *slog.Logger
	fatal *prometheus.GaugeVec
	host  string

	mu   sync.Mutex
	pods map[types.UID]*podState
}

// podState is what the watcher has seen of one pod.
type podState struct {
	namespace, name string
	containers      map[string]*containerState
	ended           bool
}

// containerState is one container's run of fatal pulls.
type containerState struct {
	reason   string // the kubelet's waiting reason last seen
	fatal    bool
	rule     string // the classify rule of the fatal pull error
	backoffs int    // fatal back-offs seen in this run
	reported bool
}

// New returns a Watcher; Run does the watching.
func New(o Options) (*Watcher, error) {
	if o.Client == nil {
		return nil, errors.New("podwatch: no Kubernetes client")
	}
	if o.EndAfter < 0 {
		return nil, fmt.Errorf("podwatch: end after %d back-offs", o.EndAfter)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{o: o, log: o.Logger, pods: map[types.UID]*podState{},
		fatal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "breakwater_pods_image_fatal",
			Help: "Pods with a container waiting on an image pull that will never succeed, by namespace and classify rule.",
		}, []string{"namespace", "reason"}),
	}
	w.host, _ = os.Hostname()
	if o.Registerer != nil {
		if err := o.Registerer.Register(w.fatal); err != nil {
			return nil, fmt.Errorf("podwatch: %w", err)
		}
	}
	return w, nil
}

// Run watches until ctx ends; ready, when not nil, is closed once the
// first list of pods is in. It returns an error when ctx ended before
// that list came (the API server refused it, or did not answer).
func (w *Watcher) Run(ctx context.Context, ready chan<- struct{}) error {
	inf := cache.NewSharedIndexInformer(w.o.Client.pods(w.o.Namespace), &corev1.Pod{}, 10*time.Minute, cache.Indexers{})
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.handle(ctx, obj) },
		UpdateFunc: func(_, obj any) { w.handle(ctx, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				w.forget(p.UID)
			}
		},
	}); err != nil {
		return fmt.Errorf("watch pods: %w", err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		inf.RunWithContext(ctx)
	}()
	// The informer's handlers may still be running when ctx ends: wait
	// for them, so that no action outlives Run.
	defer func() { <-stopped }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("watch pods: the first list did not come in: %w", context.Cause(ctx))
	}
	w.log.Info("watching pods", "namespace", w.o.Namespace, "end_after", w.o.EndAfter)
	if ready != nil {
		close(ready)
	}
	<-ctx.Done()
	return nil
}

func (w *Watcher) handle(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	for _, a := range w.observe(pod) {
		a(ctx)
	}
}

// action is something the API server is to be told, done outside the lock.
type action func(ctx context.Context)

// observe takes a pod's current status and returns what to do about it.
func (w *Watcher) observe(pod *corev1.Pod) []action {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.pods[pod.UID]
	if st == nil {
		st = &podState{namespace: pod.Namespace, name: pod.Name, containers: map[string]*containerState{}}
		w.pods[pod.UID] = st
	}
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		st.containers = map[string]*containerState{}
		w.recountLocked()
		return nil
	}
	var acts []action
	worst := 0
	var worstName string
	seen := map[string]bool{}
	for _, cs := range allStatuses(pod) {
		seen[cs.Name] = true
		c := st.containers[cs.Name]
		if c == nil {
			c = &containerState{}
			st.containers[cs.Name] = c
		}
		wait := cs.State.Waiting
		if wait == nil {
			*c = containerState{}
			continue
		}
		r := classify.Classify(wait.Reason, wait.Message)
		if r.Verdict != classify.Fatal {
			*c = containerState{reason: wait.Reason}
			continue
		}
		if r.Rule != classify.RuleBackoffPreviousError || c.rule == "" {
			c.rule = r.Rule
		}
		if wait.Reason == "ImagePullBackOff" && c.reason != wait.Reason {
			c.backoffs++
		}
		c.reason, c.fatal = wait.Reason, true
		if !c.reported {
			c.reported = true
			acts = append(acts, w.event(pod, corev1.EventTypeWarning, ReasonFatal,
				fmt.Sprintf("container %s: image %s will never pull (%s): %s", cs.Name, cs.Image, r.Reason, oneLine(wait.Message))))
			w.log.Warn("pod waits for an image that will never pull", "namespace", pod.Namespace, "pod", pod.Name,
				"container", cs.Name, "image", cs.Image, "rule", c.rule, "message", oneLine(wait.Message))
		}
		if c.backoffs > worst {
			worst, worstName = c.backoffs, cs.Name
		}
	}
	for name := range st.containers {
		if !seen[name] {
			delete(st.containers, name)
		}
	}
	if w.o.EndAfter > 0 && worst >= w.o.EndAfter && !st.ended {
		st.ended = true
		acts = append(acts, w.end(pod, worstName, worst))
	}
	w.recountLocked()
	return acts
}

func (w *Watcher) forget(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pods, uid)
	w.recountLocked()
}

// recountLocked sets the gauge from the pods' states.
func (w *Watcher) recountLocked() {
	counts := map[[2]string]float64{}
	for _, p := range w.pods {
		rules := map[string]bool{}
		for _, c := range p.containers {
			if c.fatal {
				rules[c.rule] = true
			}
		}
		for r := range rules {
			counts[[2]string{p.namespace, r}]++
		}
	}
	w.fatal.Reset()
	for k, n := range counts {
		w.fatal.WithLabelValues(k[0], k[1]).Set(n)
	}
}

// allStatuses is the pod's init, regular and ephemeral container
// statuses, in that order.
func allStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	out = append(out, pod.Status.InitContainerStatuses...)
	out = append(out, pod.Status.ContainerStatuses...)
	return append(out, pod.Status.EphemeralContainerStatuses...)
}

// event records an Event on the pod.
func (w *Watcher) event(pod *corev1.Pod, typ, reason, message string) action {
	ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion}
	return func(ctx context.Context) {
		now := metav1.NewTime(time.Now())
		ev := &corev1.Event{
			ObjectMeta:          metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
			InvolvedObject:      ref,
			Reason:              reason,
			Message:             truncate(message, 1024),
			Type:                typ,
			Source:              corev1.EventSource{Component: component},
			FirstTimestamp:      now,
			LastTimestamp:       now,
			Count:               1,
			ReportingController: "breakwater.dev/watch",
			ReportingInstance:   w.host,
		}
		if err := w.o.Client.createEvent(ctx, ev); err != nil {
			w.log.Warn("event not recorded", "namespace", pod.Namespace, "pod", pod.Name, "reason", reason, "err", err)
		}
	}
}

// end ends a pod whose container had fatal back-offs: a Job's pod is
// given the condition first, then any pod is deleted.
func (w *Watcher) end(pod *corev1.Pod, container string, backoffs int) action {
	pod = pod.DeepCopy()
	why := fmt.Sprintf("container %s waited %d back-offs for an image that will never pull", container, backoffs)
	return func(ctx context.Context) {
		if ownedByJob(pod) {
			pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{
				Type: ConditionType, Status: corev1.ConditionTrue, Reason: ReasonFatal, Message: why,
				LastTransitionTime: metav1.NewTime(time.Now()),
			})
			if err := w.o.Client.updateStatus(ctx, pod, component); err != nil && !apierrors.IsNotFound(err) {
				// Deleted without it, the Job would count a plain
				// failure and retry: better to leave the pod.
				w.log.Warn("pod not ended: its condition was refused", "namespace", pod.Namespace, "pod", pod.Name, "err", err)
				w.unend(pod.UID)
				return
			}
		}
		err := w.o.Client.deletePod(ctx, pod.Namespace, pod.Name, pod.UID)
		if err != nil && !apierrors.IsNotFound(err) {
			w.log.Warn("pod not ended", "namespace", pod.Namespace, "pod", pod.Name, "err", err)
			w.unend(pod.UID)
			return
		}
		w.log.Warn("pod ended: its image will never pull", "namespace", pod.Namespace, "pod", pod.Name, "why", why)
		w.event(pod, corev1.EventTypeWarning, ReasonEnded, "deleted by breakwater watch: "+why)(ctx)
	}
}

// unend lets a pod whose ending failed be ended at the next back-off.
func (w *Watcher) unend(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st := w.pods[uid]; st != nil {
		st.ended = false
	}
}

func ownedByJob(pod *corev1.Pod) bool {
	for _, o := range pod.OwnerReferences {
		if o.Kind == "Job" && strings.HasPrefix(o.APIVersion, "batch/") && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// Fatal lists the pods the watcher holds fatal now, "namespace/pod", for
// logs and tests.
func (w *Watcher) Fatal() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, p := range w.pods {
		for _, c := range p.containers {
			if c.fatal {
				out = append(out, p.namespace+"/"+p.name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
