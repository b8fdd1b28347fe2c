package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/breakwater-registry/breakwater/podwatch"
)

const watchUsage = `usage: breakwater watch [--kubeconfig FILE] [--namespace NS] [--end-after N] [--listen ADDR]

Watches pods through the API server and reports those waiting on an image
pull that will never succeed (as breakwater classify judges the kubelet's
waiting reason and message): an Event on the pod (reason ImagePullFatal)
and the gauge breakwater_pods_image_fatal{namespace,reason} on
http://ADDR/metrics. With --end-after N it ends such a pod after N fatal
back-offs: deleted, and a Job's pod first given the condition
breakwater.dev/ImagePullFatal for the Job's podFailurePolicy. Transient
pulls are never touched.

Runs in the cluster with its ServiceAccount, or outside it with --kubeconfig
(default: $KUBECONFIG, then ~/.kube/config).
Exit status: 0 stopped by SIGTERM or SIGINT once watching; 1 stopped before the
first list of pods came in (the API server refused it or did not answer), or
--listen failed; 2 bad usage.`

// runWatch is the pod watcher: a command of its own, not a mode of serve,
// because it needs to watch and delete pods cluster-wide, a privilege the
// mirror's pods (which any node reaches) should not hold, and it runs as
// one replica where the mirror runs as many.
func runWatch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)")
	namespace := fs.String("namespace", "", "watch this namespace only (default: all)")
	endAfter := fs.Int("end-after", 0, "end a pod after this many fatal back-offs of one container (0: only report)")
	listen := fs.String("listen", ":9090", "address of /metrics and /healthz")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() { printHelp(stderr, fs, watchUsage) }
	if wantsHelp(args) {
		printHelp(stdout, fs, watchUsage)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "watch: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *endAfter < 0 {
		fmt.Fprintf(stderr, "watch: --end-after %d: want 0 (only report) or more\n", *endAfter)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "watch: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	rc, err := kubeConfig(*kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "watch: %v\n", err)
		return 2
	}
	rc.UserAgent = "breakwater-watch/" + stamp()
	client, err := podwatch.NewClient(rc)
	if err != nil {
		fmt.Fprintf(stderr, "watch: %v\n", err)
		return 2
	}
	reg := prometheus.NewRegistry()
	w, err := podwatch.New(podwatch.Options{Client: client, Namespace: *namespace, EndAfter: *endAfter, Registerer: reg, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "watch: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := watch(ctx, w, reg, *listen, log); err != nil {
		log.Error("watch", "err", err)
		return 1
	}
	return 0
}

// watch serves /metrics and /healthz (ok once the first list of pods is
// in) while w runs, until ctx ends.
func watch(ctx context.Context, w *podwatch.Watcher, reg *prometheus.Registry, listen string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", listen, err)
	}
	ready := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
			_, _ = io.WriteString(rw, "ok\n")
		default:
			http.Error(rw, "the first list of pods is not in yet", http.StatusServiceUnavailable)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("watch listening", "addr", ln.Addr().String())
	err = w.Run(ctx, ready)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return err
}

// kubeConfig is the API server's address and credentials: the file given,
// else in the cluster its ServiceAccount's, else $KUBECONFIG or
// ~/.kube/config.
func kubeConfig(file string) (*rest.Config, error) {
	if file != "" {
		c, err := clientcmd.BuildConfigFromFlags("", file)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", file, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("in-cluster configuration: %w", err)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	c, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("not in a cluster, and no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config): %w", err)
	}
	return c, nil
}
