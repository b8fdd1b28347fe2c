package podwatch

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Client is what the watcher asks of the API server, all in core/v1:
// list and watch pods, update a pod's status, delete a pod, create an
// Event. It is a REST client over a scheme that knows core/v1 alone,
// not client-go's clientset and informer factory: those link every API
// group's types, clients and listers into the binary that also serves
// the mirror, for one resource. Without them the binary is 88.5 MB, not
// 140, and every replica starts about 14 MiB smaller (BENCHMARKS.md).
type Client struct {
	rc rest.Interface
}

// NewClient returns a Client of the API server cfg names. cfg is not
// changed.
func NewClient(cfg *rest.Config) (*Client, error) {
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		return nil, fmt.Errorf("podwatch: core/v1 scheme: %w", err)
	}
	c := rest.CopyConfig(cfg)
	gv := corev1.SchemeGroupVersion
	c.GroupVersion = &gv
	c.APIPath = "/api"
	c.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(sch, serializer.NewCodecFactory(sch)).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("podwatch: API client: %w", err)
	}
	return &Client{rc: rc}, nil
}

// pods lists and watches the pods of namespace ("" for all).
func (c *Client) pods(namespace string) cache.ListerWatcher {
	return cache.NewListWatchFromClient(c.rc, "pods", namespace, fields.Everything())
}

func (c *Client) createEvent(ctx context.Context, ev *corev1.Event) error {
	return c.rc.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Error()
}

// updateStatus writes pod's status, as the status subresource's PUT
// does: the update is refused when pod's resourceVersion is not the
// current one.
func (c *Client) updateStatus(ctx context.Context, pod *corev1.Pod, fieldManager string) error {
	return c.rc.Put().Namespace(pod.Namespace).Resource("pods").Name(pod.Name).SubResource("status").
		Param("fieldManager", fieldManager).Body(pod).Do(ctx).Error()
}

// deletePod deletes the pod namespace/name if it is still the one with
// uid: a pod of the same name made since is left alone.
func (c *Client) deletePod(ctx context.Context, namespace, name string, uid types.UID) error {
	return c.rc.Delete().Namespace(namespace).Resource("pods").Name(name).
		Body(&metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}).Do(ctx).Error()
}
