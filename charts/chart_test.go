// Package charts_test checks the Helm chart in charts/breakwater: it lints
// it, renders it with helm template and decodes every object strictly into
// its Kubernetes type, so a misspelt field, a config Breakwater would refuse,
// a probe on the wrong path or an alert on a metric that does not exist fails
// here and not in a cluster.
//
// helm comes from scripts/helm.sh, which installs it with go install when it
// is missing; if that fails the tests fail (CI relies on the script).
package charts_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/breakwater-registry/breakwater/access"
	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/imagebuild"
)

const (
	chartDir    = "breakwater"
	release     = "bw"
	namespace   = "mirror"
	kubeVersion = "1.30.0"
	fullname    = "bw-breakwater"
)

// monitoringValues turns on everything optional.
var monitoringValues = []string{
	"--set", "serviceMonitor.enabled=true",
	"--set", "prometheusRule.enabled=true",
	"--set", "dashboard.enabled=true",
}

// The metric names the alerts must use (docs/architecture.md, "Telemetry").
var alertMetrics = []string{
	"breakwater_upstream_breaker_state",
	"breakwater_requests_total",
	"breakwater_cache_size_bytes",
	"breakwater_cache_max_size_bytes",
	"breakwater_upstream_requests_total",
}

var (
	helmOnce sync.Once
	helmBin  string
	helmErr  error
)

// helm returns the helm binary from scripts/helm.sh, installing it if need be.
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("bash", filepath.Join("..", "scripts", "helm.sh"))
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			helmErr = fmt.Errorf("scripts/helm.sh: %v\n%s", err, stderr.String())
			return
		}
		helmBin = strings.TrimSpace(stdout.String())
		if helmBin == "" {
			helmErr = fmt.Errorf("scripts/helm.sh printed no path\n%s", stderr.String())
		}
	})
	if helmErr != nil {
		t.Fatalf("no helm (CI installs it with scripts/helm.sh): %v", helmErr)
	}
	return helmBin
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helm(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// No kubeconfig, no cache or config of the user's: the tests are offline.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+filepath.Join(home, "kubeconfig"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func template(t *testing.T, dir string, values ...string) string {
	t.Helper()
	args := append([]string{"template", release, dir, "--namespace", namespace, "--kube-version", kubeVersion}, values...)
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Local types for the prometheus-operator CRDs: only the fields the chart
// uses, decoded with DisallowUnknownFields like the rest.
type serviceMonitor struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port          string         `json:"port"`
			Path          string         `json:"path"`
			Interval      string         `json:"interval"`
			ScrapeTimeout string         `json:"scrapeTimeout"`
			Scheme        string         `json:"scheme"`
			TLSConfig     map[string]any `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// rendered holds the objects of one helm template run, by kind.
type rendered struct {
	statefulSets    []appsv1.StatefulSet
	deployments     []appsv1.Deployment
	daemonSets      []appsv1.DaemonSet
	services        []corev1.Service
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	pvcs            []corev1.PersistentVolumeClaim
	serviceAccounts []corev1.ServiceAccount
	pdbs            []policyv1.PodDisruptionBudget
	networkPolicies []networkingv1.NetworkPolicy
	webhooks        []admissionregistrationv1.ValidatingWebhookConfiguration
	// watchDeployments are breakwater watch's, apart from the mirror's.
	watchDeployments []appsv1.Deployment
	roles            []rbacv1.Role
	clusterRoles     []rbacv1.ClusterRole
	roleBindings     []rbacv1.RoleBinding
	clusterBindings  []rbacv1.ClusterRoleBinding
	serviceMonitors  []serviceMonitor
	prometheusRules  []prometheusRule
}

var apiVersions = map[string]string{
	"StatefulSet":                    "apps/v1",
	"Deployment":                     "apps/v1",
	"DaemonSet":                      "apps/v1",
	"Service":                        "v1",
	"ConfigMap":                      "v1",
	"Secret":                         "v1",
	"PersistentVolumeClaim":          "v1",
	"ServiceAccount":                 "v1",
	"PodDisruptionBudget":            "policy/v1",
	"NetworkPolicy":                  "networking.k8s.io/v1",
	"ValidatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
	"Role":                           "rbac.authorization.k8s.io/v1",
	"ClusterRole":                    "rbac.authorization.k8s.io/v1",
	"RoleBinding":                    "rbac.authorization.k8s.io/v1",
	"ClusterRoleBinding":             "rbac.authorization.k8s.io/v1",
	"ServiceMonitor":                 "monitoring.coreos.com/v1",
	"PrometheusRule":                 "monitoring.coreos.com/v1",
}

// splitDocuments splits a multi-document YAML stream at its "---" lines.
func splitDocuments(s string) []string {
	var docs []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, cur.String())
}

// strictDecode converts a YAML document to JSON and decodes it refusing any
// field the type does not have. encoding/json matches field names without
// regard to case (readOnlyRootFileSystem would fill readOnlyRootFilesystem),
// while the API server does not; so the JSON is checked a second time the
// way the API server reads it, case-sensitively and refusing duplicates.
func strictDecode(doc []byte, into any) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	fresh := reflect.New(reflect.TypeOf(into).Elem()).Interface()
	strictErrs, err := kjson.UnmarshalStrict(j, fresh, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		return errors.Join(strictErrs...)
	}
	return nil
}

func decodeAll(t *testing.T, manifest string) rendered {
	t.Helper()
	var r rendered
	for i, doc := range splitDocuments(manifest) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		if string(j) == "null" {
			continue // comments only
		}
		if err := json.Unmarshal(j, &head); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		want, known := apiVersions[head.Kind]
		if !known {
			t.Errorf("document %d: kind %q has no type in this test; add it to decodeAll\n%s", i, head.Kind, doc)
			continue
		}
		if head.APIVersion != want {
			t.Errorf("%s: apiVersion %q, want %q", head.Kind, head.APIVersion, want)
		}
		var target any
		switch head.Kind {
		case "StatefulSet":
			r.statefulSets = append(r.statefulSets, appsv1.StatefulSet{})
			target = &r.statefulSets[len(r.statefulSets)-1]
		case "Deployment":
			r.deployments = append(r.deployments, appsv1.Deployment{})
			target = &r.deployments[len(r.deployments)-1]
		case "DaemonSet":
			r.daemonSets = append(r.daemonSets, appsv1.DaemonSet{})
			target = &r.daemonSets[len(r.daemonSets)-1]
		case "Service":
			r.services = append(r.services, corev1.Service{})
			target = &r.services[len(r.services)-1]
		case "ConfigMap":
			r.configMaps = append(r.configMaps, corev1.ConfigMap{})
			target = &r.configMaps[len(r.configMaps)-1]
		case "Secret":
			r.secrets = append(r.secrets, corev1.Secret{})
			target = &r.secrets[len(r.secrets)-1]
		case "PersistentVolumeClaim":
			r.pvcs = append(r.pvcs, corev1.PersistentVolumeClaim{})
			target = &r.pvcs[len(r.pvcs)-1]
		case "Role":
			r.roles = append(r.roles, rbacv1.Role{})
			target = &r.roles[len(r.roles)-1]
		case "ClusterRole":
			r.clusterRoles = append(r.clusterRoles, rbacv1.ClusterRole{})
			target = &r.clusterRoles[len(r.clusterRoles)-1]
		case "RoleBinding":
			r.roleBindings = append(r.roleBindings, rbacv1.RoleBinding{})
			target = &r.roleBindings[len(r.roleBindings)-1]
		case "ClusterRoleBinding":
			r.clusterBindings = append(r.clusterBindings, rbacv1.ClusterRoleBinding{})
			target = &r.clusterBindings[len(r.clusterBindings)-1]
		case "ValidatingWebhookConfiguration":
			r.webhooks = append(r.webhooks, admissionregistrationv1.ValidatingWebhookConfiguration{})
			target = &r.webhooks[len(r.webhooks)-1]
		case "ServiceAccount":
			r.serviceAccounts = append(r.serviceAccounts, corev1.ServiceAccount{})
			target = &r.serviceAccounts[len(r.serviceAccounts)-1]
		case "PodDisruptionBudget":
			r.pdbs = append(r.pdbs, policyv1.PodDisruptionBudget{})
			target = &r.pdbs[len(r.pdbs)-1]
		case "NetworkPolicy":
			r.networkPolicies = append(r.networkPolicies, networkingv1.NetworkPolicy{})
			target = &r.networkPolicies[len(r.networkPolicies)-1]
		case "ServiceMonitor":
			r.serviceMonitors = append(r.serviceMonitors, serviceMonitor{})
			target = &r.serviceMonitors[len(r.serviceMonitors)-1]
		case "PrometheusRule":
			r.prometheusRules = append(r.prometheusRules, prometheusRule{})
			target = &r.prometheusRules[len(r.prometheusRules)-1]
		}
		if err := strictDecode([]byte(doc), target); err != nil {
			t.Errorf("%s does not decode strictly into its type: %v\n%s", head.Kind, err, doc)
		}
		if n := len(r.deployments); head.Kind == "Deployment" && r.deployments[n-1].Labels["app.kubernetes.io/component"] == "watch" {
			r.watchDeployments = append(r.watchDeployments, r.deployments[n-1])
			r.deployments = r.deployments[:n-1]
		}
	}
	return r
}

func (r rendered) configMap(t *testing.T, name string) corev1.ConfigMap {
	t.Helper()
	for _, cm := range r.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %q", name)
	return corev1.ConfigMap{}
}

func (r rendered) service(t *testing.T, name string) corev1.Service {
	t.Helper()
	for _, s := range r.services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no Service %q", name)
	return corev1.Service{}
}

func (r rendered) statefulSet(t *testing.T) appsv1.StatefulSet {
	t.Helper()
	if len(r.statefulSets) != 1 || len(r.deployments) != 0 {
		t.Fatalf("want exactly one StatefulSet and no Deployment, got %d and %d", len(r.statefulSets), len(r.deployments))
	}
	return r.statefulSets[0]
}

// breakwaterConfig parses the rendered config.yaml with Breakwater's own
// parser: the chart must never ship a configuration Breakwater refuses.
func (r rendered) breakwaterConfig(t *testing.T) config.Config {
	t.Helper()
	cm := r.configMap(t, fullname)
	raw, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no config.yaml: %v", cm.Name, cm.Data)
	}
	cfg, err := config.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("Breakwater refuses the chart's config.yaml: %v\n%s", err, raw)
	}
	return cfg
}

func container(t *testing.T, sts appsv1.StatefulSet) corev1.Container {
	t.Helper()
	cs := sts.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "breakwater" {
		t.Fatalf("want one container named breakwater, got %+v", cs)
	}
	return cs[0]
}

// probePort resolves a probe's port (a name or a number) to a container port.
func probePort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("probe port %q is not a port of the container (%+v)", p.StrVal, c.Ports)
	return 0
}

func listenPort(t *testing.T, listen string) int32 {
	t.Helper()
	var port int32
	if _, err := fmt.Sscanf(listen[strings.LastIndex(listen, ":")+1:], "%d", &port); err != nil {
		t.Fatalf("listen %q: %v", listen, err)
	}
	return port
}

func matches(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %+v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

func TestLint(t *testing.T) {
	for name, values := range map[string][]string{
		"defaults":   nil,
		"monitoring": monitoringValues,
		"auth":       {"-f", writeValues(t, "auth:\n  htpasswd: |\n    "+htpasswdLine+"\n"+accessValues)},
		"node config, network policy, upstream credentials": append([]string{
			"--set", "nodeConfig.enabled=true", "--set", "service.clusterIP=10.96.0.50",
			"--set", "networkPolicy.enabled=true", "--set", "networkPolicy.ingressFrom[0].ipBlock.cidr=10.0.0.0/16",
		}, credentialValues...),
		"shared storage": sharedStorageValues,
		"fleet":          {"-f", writeValues(t, fleetValues), "--set", "networkPolicy.enabled=true", "--set", "fleet.existingSecret=peer-secret"},
		"admission":      append([]string{"--set", "admission.workloads=true"}, admissionValues...),
		"watch":          {"--set", "watch.enabled=true", "--set", "watch.endAfter=2"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}, values...)
			if out, err := runHelm(t, args...); err != nil {
				t.Fatal(err)
			} else if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("unexpected lint output:\n%s", out)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	r := decodeAll(t, template(t, chartDir))
	if len(r.serviceMonitors)+len(r.prometheusRules) != 0 {
		t.Error("ServiceMonitor/PrometheusRule rendered though not enabled")
	}
	for _, cm := range r.configMaps {
		if cm.Labels["grafana_dashboard"] != "" {
			t.Error("dashboard ConfigMap rendered though not enabled")
		}
	}
	if len(r.secrets) != 0 {
		t.Errorf("%d Secrets rendered without auth values", len(r.secrets))
	}
	if len(r.networkPolicies)+len(r.daemonSets) != 0 {
		t.Errorf("%d NetworkPolicies and %d DaemonSets rendered though not enabled", len(r.networkPolicies), len(r.daemonSets))
	}
	if len(r.serviceAccounts) != 1 || len(r.pdbs) != 1 {
		t.Errorf("want one ServiceAccount and one PodDisruptionBudget, got %d and %d", len(r.serviceAccounts), len(r.pdbs))
	}

	cfg := r.breakwaterConfig(t)
	if cfg.Cache.Dir != "/var/lib/breakwater" || cfg.Listen != ":5000" {
		t.Errorf("cache.dir %q, listen %q; want /var/lib/breakwater and :5000", cfg.Cache.Dir, cfg.Listen)
	}

	// The chart's defaults are the bundled config.yaml's, but for where the
	// cache lives, and the cache bound that keeps it within its volume.
	bundled, err := config.Load(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatalf("bundled config.yaml: %v", err)
	}
	want := bundled
	want.Listen, want.Cache.Dir, want.Cache.MaxSize = cfg.Listen, cfg.Cache.Dir, cfg.Cache.MaxSize
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("values.yaml config differs from the bundled config.yaml beyond listen, cache.dir and cache.max_size; keep them in step:\n chart:   %+v\n bundled: %+v", cfg, want)
	}

	sts := r.statefulSet(t)
	c := container(t, sts)
	if got, want := c.Args, []string{"serve", "--config", "/etc/breakwater/config.yaml"}; !reflect.DeepEqual(got, want) {
		t.Errorf("args %q, want %q", got, want)
	}
	port := listenPort(t, cfg.Listen)
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != port {
		t.Errorf("container ports %+v, want http on %d (config listen)", c.Ports, port)
	}
	for name, p := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"startup":   {c.StartupProbe, "/healthz"},
		"liveness":  {c.LivenessProbe, "/healthz"},
		"readiness": {c.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet, got %+v", name, p.probe)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || probePort(t, c, p.probe.HTTPGet.Port) != port {
			t.Errorf("%s probe: GET %s on %v, want GET %s on %d", name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, port)
		}
	}

	// Non-root, read-only root file system, the cache writable.
	psc, sc := sts.Spec.Template.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.FSGroup == nil {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, a non-zero runAsUser and an fsGroup", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container securityContext %+v: want readOnlyRootFilesystem and no privilege escalation", sc)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m, ok := mounts["cache"]; !ok || m.MountPath != cfg.Cache.Dir || m.ReadOnly {
		t.Errorf("cache mount %+v: want it writable at cache.dir %s", m, cfg.Cache.Dir)
	}
	if m, ok := mounts["config"]; !ok || m.MountPath != "/etc/breakwater" {
		t.Errorf("config mount %+v: want /etc/breakwater", m)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	if v := volumes["config"]; v.ConfigMap == nil || v.ConfigMap.Name != fullname {
		t.Errorf("config volume %+v: want ConfigMap %s", v, fullname)
	}
	for name := range mounts {
		if _, ok := volumes[name]; !ok && name != "cache" {
			t.Errorf("mount %q has no volume", name)
		}
	}

	// The cache is a volumeClaimTemplate, larger than cache.max_size.
	if _, ok := volumes["cache"]; ok {
		t.Error("cache is a pod volume; want a volumeClaimTemplate with persistence enabled")
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "cache" {
		t.Fatalf("volumeClaimTemplates %+v: want one named cache", sts.Spec.VolumeClaimTemplates)
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.Value() != 50<<30 {
		t.Errorf("cache volume %s, want 50Gi", size.String())
	}
	if cfg.Cache.MaxSize <= 0 || int64(cfg.Cache.MaxSize) >= size.Value() {
		t.Errorf("cache.max_size %d must be set and below the volume's %d bytes", cfg.Cache.MaxSize, size.Value())
	}
	if pvc.Spec.StorageClassName != nil {
		t.Errorf("storageClassName %q set; want the cluster default", *pvc.Spec.StorageClassName)
	}

	// The Service reaches the pods on the http port; the PDB covers them.
	podLabels := sts.Spec.Template.Labels
	if !matches(t, sts.Spec.Selector, podLabels) {
		t.Errorf("StatefulSet selector %+v does not match its pods %v", sts.Spec.Selector, podLabels)
	}
	svc := r.service(t, fullname)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 5000 || svc.Spec.Ports[0].TargetPort.String() != "http" || svc.Spec.Ports[0].Name != "http" {
		t.Errorf("Service ports %+v: want http 5000 -> http", svc.Spec.Ports)
	}
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Errorf("Service %s: type %s selector %v, want ClusterIP selecting %v", svc.Name, svc.Spec.Type, svc.Spec.Selector, podLabels)
	}
	if headless := r.service(t, sts.Spec.ServiceName); headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("governing Service %s: clusterIP %q, want None", headless.Name, headless.Spec.ClusterIP)
	}
	pdb := r.pdbs[0]
	if !matches(t, pdb.Spec.Selector, podLabels) || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PDB spec %+v: want maxUnavailable 1 over the pods", pdb.Spec)
	}
	if sa := r.serviceAccounts[0]; sa.Name != sts.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("pods run as %q, ServiceAccount is %q", sts.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	if sts.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a new config.yaml would not roll the pods")
	}
}

func TestMonitoring(t *testing.T) {
	r := decodeAll(t, template(t, chartDir, monitoringValues...))
	sts := r.statefulSet(t)
	svc := r.service(t, fullname)
	headless := r.service(t, sts.Spec.ServiceName)

	if len(r.serviceMonitors) != 1 {
		t.Fatalf("want one ServiceMonitor, got %d", len(r.serviceMonitors))
	}
	sm := r.serviceMonitors[0]
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want /metrics on port http", sm.Spec.Endpoints)
	}
	if !matches(t, &sm.Spec.Selector, svc.Labels) {
		t.Errorf("ServiceMonitor selector %+v does not select Service %s %v", sm.Spec.Selector, svc.Name, svc.Labels)
	}
	if matches(t, &sm.Spec.Selector, headless.Labels) {
		t.Errorf("ServiceMonitor also selects the headless Service: every pod would be scraped twice")
	}
	if !reflect.DeepEqual(sm.Spec.NamespaceSelector.MatchNames, []string{namespace}) {
		t.Errorf("ServiceMonitor namespaces %v, want [%s]", sm.Spec.NamespaceSelector.MatchNames, namespace)
	}

	if len(r.prometheusRules) != 1 {
		t.Fatalf("want one PrometheusRule, got %d", len(r.prometheusRules))
	}
	exprs := map[string]string{}
	var all strings.Builder
	for _, g := range r.prometheusRules[0].Spec.Groups {
		for _, rule := range g.Rules {
			exprs[rule.Alert] = rule.Expr
			all.WriteString(rule.Expr + "\n")
			if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" || rule.For == "" {
				t.Errorf("alert %s: want severity, summary and for; got %+v", rule.Alert, rule)
			}
			if err := balanced(rule.Expr); err != nil {
				t.Errorf("alert %s: %v in %q", rule.Alert, err, rule.Expr)
			}
			if !strings.Contains(rule.Expr, `job="`+fullname+`",namespace="`+namespace+`"`) {
				t.Errorf("alert %s is not scoped to this release's series: %q", rule.Alert, rule.Expr)
			}
		}
	}
	for _, m := range alertMetrics {
		if !strings.Contains(all.String(), m) {
			t.Errorf("no alert uses %s", m)
		}
	}
	for alert, want := range map[string][]string{
		"BreakwaterUpstreamBreakerOpen": {"breakwater_upstream_breaker_state{", ">= 1"},
		"BreakwaterCacheHitRatioLow":    {`breakwater_requests_total{`, `cache="hit"`, "< 0.5"},
		"BreakwaterCacheNearFull":       {"breakwater_cache_size_bytes{", "breakwater_cache_max_size_bytes{", "> 0.9"},
		"BreakwaterUpstreamRateLimited": {"rate(breakwater_upstream_requests_total{", `status="429"`, "[5m]", "> 0"},
	} {
		expr, ok := exprs[alert]
		if !ok {
			t.Errorf("no alert %s (have %v)", alert, keys(exprs))
			continue
		}
		for _, w := range want {
			if !strings.Contains(expr, w) {
				t.Errorf("alert %s: %q lacks %q", alert, expr, w)
			}
		}
	}
	for _, rule := range r.prometheusRules[0].Spec.Groups[0].Rules {
		wantFor := map[string]string{"BreakwaterUpstreamBreakerOpen": "5m", "BreakwaterCacheHitRatioLow": "30m"}[rule.Alert]
		if wantFor != "" && rule.For != wantFor {
			t.Errorf("alert %s: for %s, want %s", rule.Alert, rule.For, wantFor)
		}
	}

	dash := r.configMap(t, fullname+"-dashboard")
	if dash.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v: want grafana_dashboard: \"1\"", dash.Labels)
	}
	checkDashboard(t, []byte(dash.Data["breakwater.json"]))
}

// The dashboard shipped in the ConfigMap is the file, and has a panel for
// each thing an operator looks at.
func checkDashboard(t *testing.T, b []byte) {
	t.Helper()
	file, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "breakwater.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(b), bytes.TrimSpace(file)) {
		t.Error("the dashboard ConfigMap does not carry dashboards/breakwater.json as it is")
	}
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard has no uid or title")
	}
	var exprs strings.Builder
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs.WriteString(tg.Expr + "\n")
			if err := balanced(tg.Expr); err != nil {
				t.Errorf("panel %q: %v in %q", p.Title, err, tg.Expr)
			}
		}
	}
	for _, m := range []string{
		"breakwater_requests_total",               // by cache result, hit ratio
		"breakwater_upstream_requests_total",      // by status
		"breakwater_upstream_retries_total",       // retries
		"breakwater_upstream_breaker_state",       // breaker state
		"breakwater_served_bytes_total",           // bytes served
		"breakwater_fetched_bytes_total",          // bytes fetched
		"breakwater_cache_size_bytes",             // cache size
		"breakwater_cache_max_size_bytes",         // vs max
		"breakwater_fetches_inflight",             // in-flight fetches
		"breakwater_upstream_ratelimit_remaining", // Docker Hub rate limit
	} {
		if !strings.Contains(exprs.String(), m+"{") {
			t.Errorf("no dashboard panel queries %s", m)
		}
	}
	if !strings.Contains(exprs.String(), `cache="hit"`) {
		t.Error("no hit-ratio panel")
	}
}

// balanced reports unbalanced brackets or quotes in a PromQL expression: a
// cheap check that catches the usual template slip.
func balanced(expr string) error {
	var stack []rune
	inQuote := false
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	for _, c := range expr {
		switch {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '(' || c == '{' || c == '[':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unbalanced %q", c)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inQuote || len(stack) > 0 {
		return fmt.Errorf("unclosed %q", string(stack))
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Every misspelt value fails through values.schema.json, in template and in
// lint, and names the culprit.
func TestSchemaRefusesUnknownValues(t *testing.T) {
	for _, set := range []string{
		"replicaCont=2",
		"servce.port=80",
		"service.prot=80",
		"persistence.sise=10Gi",
		"image.tga=v1",
		"config.cache.tag_tll=5m",
		"config.upstreams.docker\\.io.uri=https://x",
		"prometheusRule.alerts.breakerOpen.fro=5m",
		"config.log.level=verbose",
		"config.cache.tag_ttl=5 minutes",
		// Removed with issue 9; Breakwater refuses them too.
		"config.resilience.breaker.failures=5",
		"config.resilience.breaker.cooldown=30s",
		`config.upstreams.docker\.io.resilience.breaker.cooldown=30s`,
		`config.upstreams.docker\.io.resilience.retry.dedline=60s`,
		// Values Breakwater would refuse at start.
		"config.resilience.retry.deadline=0s",
		`config.upstreams.docker\.io.resilience.breaker.open_max=0`,
		"config.cache.revalidate_timeout=0s",
		"config.resilience.breaker.failure_percent=101",
		"config.resilience.breaker.min_requests=0",
		"config.resilience.retry.attempts=-1",
		"tls.secretname=bw-tls",
		"tls.clientCA.enable=true",
		"tls.secretName=Not_A_Secret_Name",
		"config.tls.certfile=/x",
		// Client authentication.
		"auth.existingSecert=htpasswd",
		"config.auth.relam=x",
		`config.auth.realm=a"b`,
		// Upstream credentials, the NetworkPolicy, the hosts.toml DaemonSet.
		`upstreamCredentials.docker\.io.passwordkey=token`,
		`upstreamCredentials.docker\.io.existingSecret=Not_A_Secret`,
		`upstreamCredentials.docker\.io.password=hunter2`,
		"networkPolicy.enable=true",
		"networkPolicy.egres=x",
		"nodeConfig.hostpath=/etc/containerd/certs.d",
		"nodeConfig.hostPath=etc/containerd/certs.d",
		"nodeConfig.pauseImage.tga=3.10",
		// The shared store's keys.
		"sharedStorage.existingsecret=breakwater-s3",
		"sharedStorage.existingSecret=Not_A_Secret",
		"sharedStorage.secretkey=hunter2",
		"sharedStorage.accessKeyKey=has space",
		"config.storage.s3.secretKey=hunter2",
		// A fleet.
		"fleet.cachesizelimit=10Gi",
		"fleet.cacheSizeLimit=50 GB",
		"fleet.existingSecret=Not_A_Secret",
		"fleet.redisPasswordKey=has space",
		"fleet.enabled=true",
		"config.cluster.advertize=http://x:5000",
		"config.redis.adr=redis:6379",
	} {
		t.Run(set, func(t *testing.T) {
			key := set[:strings.IndexByte(set, '=')]
			last := key[strings.LastIndexByte(key, '.')+1:]
			args := []string{"template", release, chartDir, "--kube-version", kubeVersion, "--set", set}
			out, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded:\n%.300s", set, out)
			}
			if !strings.Contains(err.Error(), "schema") || !(strings.Contains(err.Error(), last) || strings.Contains(err.Error(), "/"+strings.ReplaceAll(strings.TrimSuffix(key, "."+last), ".", "/"))) {
				t.Errorf("error does not point at %s:\n%v", key, err)
			}
			if _, err := runHelm(t, "lint", "--strict", "--kube-version", kubeVersion, chartDir, "--set", set); err == nil {
				t.Errorf("helm lint --strict --set %s passed", set)
			}
		})
	}
}

func TestVariants(t *testing.T) {
	t.Run("no persistence", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, "--set", "persistence.enabled=false"))
		sts := r.statefulSet(t)
		if len(sts.Spec.VolumeClaimTemplates) != 0 || sts.Spec.PersistentVolumeClaimRetentionPolicy != nil {
			t.Error("volumeClaimTemplates rendered without persistence")
		}
		found := false
		for _, v := range sts.Spec.Template.Spec.Volumes {
			if v.Name == "cache" {
				found = v.EmptyDir != nil
			}
		}
		if !found {
			t.Error("no emptyDir cache volume")
		}
	})
	t.Run("storage class", func(t *testing.T) {
		for class, want := range map[string]string{"fast-ssd": "fast-ssd", "-": ""} {
			r := decodeAll(t, template(t, chartDir, "--set", "persistence.storageClass="+class, "--set", "persistence.size=200Gi"))
			pvc := r.statefulSet(t).Spec.VolumeClaimTemplates[0]
			if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != want {
				t.Errorf("storageClass %q: storageClassName %v, want %q", class, pvc.Spec.StorageClassName, want)
			}
			if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "200Gi" {
				t.Errorf("size %s, want 200Gi", q.String())
			}
		}
	})
	t.Run("listen port", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, "--set", "config.listen=:8080"))
		cfg := r.breakwaterConfig(t)
		c := container(t, r.statefulSet(t))
		if cfg.Listen != ":8080" || c.Ports[0].ContainerPort != 8080 || probePort(t, c, c.ReadinessProbe.HTTPGet.Port) != 8080 {
			t.Errorf("listen %q, container port %d: want 8080 throughout", cfg.Listen, c.Ports[0].ContainerPort)
		}
		if svc := r.service(t, fullname); svc.Spec.Ports[0].Port != 5000 || svc.Spec.Ports[0].TargetPort.String() != "http" {
			t.Errorf("Service port %+v: want 5000 -> http", svc.Spec.Ports[0])
		}
	})
	t.Run("node port, fixed cluster IP, affinity, replicas", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir,
			"--set", "service.type=NodePort", "--set", "service.nodePort=30500",
			"--set", "service.clusterIP=10.96.0.50", "--set", "service.sessionAffinity=ClientIP",
			"--set", "replicaCount=3", "--set", "image.digest=sha256:"+strings.Repeat("ab", 32)))
		svc := r.service(t, fullname)
		if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != 30500 ||
			svc.Spec.ClusterIP != "10.96.0.50" || svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
			t.Errorf("Service spec %+v", svc.Spec)
		}
		sts := r.statefulSet(t)
		if *sts.Spec.Replicas != 3 || !strings.HasSuffix(container(t, sts).Image, "@sha256:"+strings.Repeat("ab", 32)) {
			t.Errorf("replicas %d image %s", *sts.Spec.Replicas, container(t, sts).Image)
		}
	})
	t.Run("drop an upstream, add credentials", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir,
			"--set", `config.upstreams.quay\.io=null`,
			"--set", `config.upstreams.registry\.example\.com:5000.url=https://registry.example.com:5000`,
			"--set", `config.upstreams.registry\.example\.com:5000.username=robot`,
			"--set", `config.upstreams.registry\.example\.com:5000.password_file=/var/run/secrets/registry/password`))
		cfg := r.breakwaterConfig(t)
		if got := keys(cfg.Upstreams); !reflect.DeepEqual(got, []string{"docker.io", "ghcr.io", "registry.example.com:5000", "registry.k8s.io"}) {
			t.Errorf("upstreams %v", got)
		}
		if u := cfg.Upstreams["registry.example.com:5000"]; u.Username != "robot" || u.PasswordFile == "" {
			t.Errorf("registry.example.com:5000: %+v", u)
		}
	})
	t.Run("an upstream's resilience block", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir,
			"--set", `config.upstreams.docker\.io.resilience.retry.deadline=60s`,
			"--set", `config.upstreams.docker\.io.resilience.breaker.min_requests=10`))
		cfg := r.breakwaterConfig(t)
		want := cfg.Resilience
		want.Retry.Deadline = config.Duration(time.Minute)
		want.Breaker.MinRequests = 10
		if got := cfg.ResilienceFor("docker.io"); got != want {
			t.Errorf("docker.io resilience %+v, want the global block with deadline 60s and min_requests 10: %+v", got, want)
		}
		if got := cfg.ResilienceFor("ghcr.io"); got != cfg.Resilience {
			t.Errorf("ghcr.io resilience %+v, want the global block %+v", got, cfg.Resilience)
		}
	})
	t.Run("minAvailable wins", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, "--set", "podDisruptionBudget.minAvailable=1", "--set", "replicaCount=2"))
		if pdb := r.pdbs[0]; pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
			t.Errorf("PDB spec %+v: want only minAvailable 1", pdb.Spec)
		}
	})
	t.Run("relative cache dir refused", func(t *testing.T) {
		if out, err := runHelm(t, "template", release, chartDir, "--kube-version", kubeVersion, "--set", "config.cache.dir=./data"); err == nil {
			t.Errorf("a relative cache.dir rendered:\n%.300s", out)
		}
	})
}

// notesChart is a copy of the chart with a probe that renders NOTES.txt
// into the ConfigMap "notes", which helm template does not print.
func notesChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), chartDir)
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	probe := `apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  NOTES.txt: |
    {{- include "breakwater/templates/NOTES.txt" . | nindent 4 }}
`
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes-probe.yaml"), []byte(probe), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// NOTES.txt prints a hosts.toml per upstream, with the [host] table that
// containerd 1.6 requires. helm template does not render NOTES.txt, so a copy
// of the chart gets a template that includes it.
func TestNotes(t *testing.T) {
	dir := notesChart(t)
	fleetFile := writeValues(t, fleetValues)
	defaultServers := map[string]string{
		"docker.io":       "https://registry-1.docker.io",
		"ghcr.io":         "https://ghcr.io",
		"quay.io":         "https://quay.io",
		"registry.k8s.io": "https://registry.k8s.io",
	}
	const (
		caLine     = "  ca = \"/etc/containerd/certs.d/breakwater-ca.crt\"\n"
		clientLine = "  client = [[\"/etc/containerd/certs.d/breakwater-client.crt\", \"/etc/containerd/certs.d/breakwater-client.key\"]]\n"
	)
	for name, tc := range map[string]struct {
		values    []string
		mirror    string
		warning   bool
		servers   map[string]string
		hostExtra string // lines the [host] table has after capabilities
		auth      bool
	}{
		"service DNS": {nil, "http://" + fullname + "." + namespace + ".svc.cluster.local:5000", true, defaultServers, "", false},
		"cluster IP":  {[]string{"--set", "service.clusterIP=10.96.0.50"}, "http://10.96.0.50:5000", false, defaultServers, "", false},
		"TLS": {[]string{"--set", "service.clusterIP=10.96.0.50", "--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls"},
			"https://10.96.0.50:5000", false, defaultServers, caLine, false},
		"mutual TLS": {[]string{"--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls", "--set", "tls.clientCA.enabled=true"},
			"https://" + fullname + "." + namespace + ".svc.cluster.local:5000", true, defaultServers, caLine + clientLine, false},
		"explicit": {[]string{"--set", "containerd.mirrorURL=http://127.0.0.1:30500/",
			"--set", `config.upstreams.ghcr\.io.url=http://10.0.0.9:5000`,
			"--set", `config.upstreams.registry\.local:5001.url=http://registry.local:5001`,
		}, "http://127.0.0.1:30500", false, map[string]string{
			"docker.io":           "https://registry-1.docker.io",
			"ghcr.io":             "https://ghcr.io", // reached elsewhere, known to containerd as itself
			"quay.io":             "https://quay.io",
			"registry.k8s.io":     "https://registry.k8s.io",
			"registry.local:5001": "http://registry.local:5001", // a plain-HTTP registry stays http
		}, "", false},
		"client authentication": {[]string{"--set", "service.clusterIP=10.96.0.50", "--set", "auth.existingSecret=users",
			"--set", "config.auth.access[0].authenticated=true", "--set", "config.auth.access[0].repositories={*}",
		}, "http://10.96.0.50:5000", false, defaultServers, "", true},
		"the hosts.toml DaemonSet": {[]string{"--set", "service.clusterIP=10.96.0.50", "--set", "nodeConfig.enabled=true"},
			"http://10.96.0.50:5000", false, defaultServers, "", false},
		"the hosts.toml DaemonSet with TLS": {[]string{"--set", "service.clusterIP=10.96.0.50", "--set", "nodeConfig.enabled=true",
			"--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls"}, "https://10.96.0.50:5000", false, defaultServers, caLine, false},
		"a fleet": {[]string{"-f", fleetFile, "--set", "service.clusterIP=10.96.0.50"}, "http://10.96.0.50:5000", false, defaultServers, "", false},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, dir, tc.values...))
			notes := r.configMap(t, "notes").Data["NOTES.txt"]
			// The logs are the workload's, and a fleet is told of.
			fleet := len(r.deployments) == 1
			workload := map[bool]string{false: "statefulset/", true: "deployment/"}[fleet]
			if !strings.Contains(notes, "logs "+workload+fullname) {
				t.Errorf("NOTES do not show the logs of %s%s", workload, fullname)
			}
			if got := strings.Contains(notes, "A fleet: 3 replica(s) in the Deployment "+fullname) &&
				strings.Contains(notes, "advertises http://$(POD_IP):5000") && strings.Contains(notes, "the Secret "+fullname+"-cluster"); got != fleet {
				t.Errorf("NOTES tell of the fleet: %v, want %v\n%s", got, fleet, notes)
			}
			if got := strings.Count(notes, "# file: "); got != len(tc.servers) {
				t.Errorf("%d hosts.toml files in NOTES, want %d", got, len(tc.servers))
			}
			for host, server := range tc.servers {
				want := fmt.Sprintf("# file: /etc/containerd/certs.d/%s/hosts.toml\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n%s", host, server, tc.mirror, tc.hostExtra)
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES lack\n%s\n--- NOTES:\n%s", want, notes)
				}
			}
			if !strings.Contains(notes, "[host] table is required") || !strings.Contains(notes, "ns=") {
				t.Error("NOTES do not say the [host] table is required or how ?ns= routes")
			}
			nodeConfig := slices.Contains(tc.values, "nodeConfig.enabled=true")
			if got := strings.Contains(notes, "the DaemonSet "+fullname+"-node-config writes these files"); got != nodeConfig {
				t.Errorf("NOTES tell of the hosts.toml DaemonSet: %v, want %v", got, nodeConfig)
			}
			if got := strings.Contains(notes, "It writes no ca or client lines"); got != (nodeConfig && tc.hostExtra != "") {
				t.Errorf("NOTES warn the DaemonSet writes no ca line: %v, want %v", got, nodeConfig && tc.hostExtra != "")
			}
			if got := strings.Contains(notes, "WARNING"); got != tc.warning {
				t.Errorf("DNS warning shown: %v, want %v", got, tc.warning)
			}
			if got := strings.Count(notes, caLine); got != strings.Count(tc.hostExtra, caLine)*len(tc.servers) {
				t.Errorf("%d ca lines in NOTES, want one per hosts.toml with TLS only", got)
			}
			if got := strings.Contains(notes, "HTTP/2 or L7 proxy"); got != (tc.hostExtra != "") {
				t.Errorf("the note on hops in front of a TLS Breakwater shown: %v, want %v", got, tc.hostExtra != "")
			}
			creds := `[plugins."io.containerd.grpc.v1.cri".registry.configs."` + strings.TrimPrefix(strings.TrimPrefix(tc.mirror, "http://"), "https://") + `".auth]`
			if got := strings.Contains(notes, creds) && strings.Contains(notes, "--user USER:PASSWORD"); got != tc.auth {
				t.Errorf("NOTES tell containerd's credentials for the mirror (%s): %v, want %v\n%s", creds, got, tc.auth, notes)
			}
		})
	}
}

// values.schema.json describes values.config with additionalProperties:
// false, so it must list exactly the keys Breakwater's config knows. When
// config.Config gains a key, add it to the schema (and values.yaml).
func TestSchemaMatchesConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	if schema["additionalProperties"] != false {
		t.Error("values.schema.json: top level must have additionalProperties: false")
	}
	props := schema["properties"].(map[string]any)
	compareSchema(t, schema, "config", props["config"], reflect.TypeFor[config.Config]())
}

var keyRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// resolve follows a node's "$ref" into the schema's definitions, so that a
// block defined once (resilience, globally and per upstream) is compared
// wherever it is used.
func resolve(t *testing.T, root map[string]any, path string, node any) (map[string]any, bool) {
	t.Helper()
	n, ok := node.(map[string]any)
	for ok {
		ref, has := n["$ref"].(string)
		if !has {
			break
		}
		name, local := strings.CutPrefix(ref, "#/definitions/")
		defs, _ := root["definitions"].(map[string]any)
		if n, ok = defs[name].(map[string]any); !local || !ok {
			t.Errorf("schema %s: $ref %q is not one of the schema's definitions", path, ref)
			return nil, false
		}
	}
	return n, ok
}

func compareSchema(t *testing.T, root map[string]any, path string, node any, typ reflect.Type) {
	t.Helper()
	n, ok := resolve(t, root, path, node)
	if !ok {
		t.Errorf("schema %s: missing", path)
		return
	}
	// An optional block or value is its pointee in YAML.
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	types := map[string]bool{}
	switch v := n["type"].(type) {
	case string:
		types[v] = true
	case []any:
		for _, x := range v {
			types[x.(string)] = true
		}
	}
	switch {
	case typ == reflect.TypeFor[config.Duration]():
		if !types["string"] {
			t.Errorf("schema %s: a duration, want type string", path)
		}
	case typ == reflect.TypeFor[config.Size]():
		if !types["string"] || !types["integer"] {
			t.Errorf("schema %s: a size, want type [string, integer]", path)
		}
	case typ.Kind() == reflect.Struct:
		if !types["object"] || n["additionalProperties"] != false {
			t.Errorf("schema %s: want type object with additionalProperties: false", path)
		}
		sp, _ := n["properties"].(map[string]any)
		var want []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" || !keyRE.MatchString(tag) {
				continue
			}
			want = append(want, tag)
			compareSchema(t, root, path+"."+tag, sp[tag], f.Type)
		}
		sort.Strings(want)
		if got := keys(sp); !reflect.DeepEqual(got, want) {
			t.Errorf("schema %s: keys %v, Breakwater's config has %v", path, got, want)
		}
	case typ.Kind() == reflect.Map:
		if !types["object"] {
			t.Errorf("schema %s: want type object", path)
		}
		compareSchema(t, root, path+".<key>", n["additionalProperties"], typ.Elem())
	case typ.Kind() == reflect.Slice:
		if !types["array"] {
			t.Errorf("schema %s: want type array", path)
		}
		compareSchema(t, root, path+"[]", n["items"], typ.Elem())
	case typ.Kind() == reflect.Pointer:
		// An optional block, as upstreams.<host>.resilience: the same keys.
		compareSchema(t, root, path, node, typ.Elem())
	case typ.Kind() == reflect.Int, typ.Kind() == reflect.Int64:
		if !types["integer"] {
			t.Errorf("schema %s: want type integer", path)
		}
	case typ.Kind() == reflect.Bool:
		if !types["boolean"] {
			t.Errorf("schema %s: want type boolean", path)
		}
	case typ.Kind() == reflect.String:
		if !types["string"] {
			t.Errorf("schema %s: want type string", path)
		}
	default:
		t.Errorf("schema %s: no rule for Go type %s; extend compareSchema", path, typ)
	}
}

// tls.enabled mounts the Secret read-only and points config.tls at its
// files, which Breakwater's parser accepts; probes follow: HTTPS with TLS,
// a TCP connect under mutual TLS (the kubelet has no client certificate).
func TestTLS(t *testing.T) {
	type mount struct{ path, secret string }
	for name, tc := range map[string]struct {
		values []string
		want   config.TLS
		mounts map[string]mount // by volume name
		probe  string           // "https" or "tcp"
	}{
		"TLS": {
			values: []string{"--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls"},
			want:   config.TLS{CertFile: "/etc/breakwater-tls/tls.crt", KeyFile: "/etc/breakwater-tls/tls.key"},
			mounts: map[string]mount{"tls": {"/etc/breakwater-tls", "bw-tls"}},
			probe:  "https",
		},
		"mutual TLS, the Secret's ca.crt": {
			values: []string{"--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls", "--set", "tls.clientCA.enabled=true"},
			want: config.TLS{CertFile: "/etc/breakwater-tls/tls.crt", KeyFile: "/etc/breakwater-tls/tls.key",
				ClientCAFile: "/etc/breakwater-tls/ca.crt"},
			mounts: map[string]mount{"tls": {"/etc/breakwater-tls", "bw-tls"}},
			probe:  "tcp",
		},
		"mutual TLS, a client CA Secret of its own": {
			values: []string{"--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls", "--set", "tls.clientCA.enabled=true",
				"--set", "tls.clientCA.secretName=node-client-ca"},
			want: config.TLS{CertFile: "/etc/breakwater-tls/tls.crt", KeyFile: "/etc/breakwater-tls/tls.key",
				ClientCAFile: "/etc/breakwater-client-ca/ca.crt"},
			mounts: map[string]mount{"tls": {"/etc/breakwater-tls", "bw-tls"}, "tls-client-ca": {"/etc/breakwater-client-ca", "node-client-ca"}},
			probe:  "tcp",
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, append(tc.values, monitoringValues...)...))
			if got := r.breakwaterConfig(t).TLS; got != tc.want {
				t.Errorf("config tls %+v, want %+v", got, tc.want)
			}
			sts := r.statefulSet(t)
			c := container(t, sts)
			volumes := map[string]corev1.Volume{}
			for _, v := range sts.Spec.Template.Spec.Volumes {
				volumes[v.Name] = v
			}
			for vname, m := range tc.mounts {
				v := volumes[vname]
				if v.Secret == nil || v.Secret.SecretName != m.secret || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 {
					t.Errorf("volume %s %+v: want Secret %s, mode 0440", vname, v.VolumeSource, m.secret)
				}
				found := false
				for _, vm := range c.VolumeMounts {
					if vm.Name == vname {
						found = vm.MountPath == m.path && vm.ReadOnly
					}
				}
				if !found {
					t.Errorf("volume %s is not mounted read-only at %s: %+v", vname, m.path, c.VolumeMounts)
				}
			}
			// Every file Breakwater is told to read is under a mount.
			for _, f := range []string{tc.want.CertFile, tc.want.KeyFile, tc.want.ClientCAFile} {
				if f == "" {
					continue
				}
				under := false
				for _, m := range tc.mounts {
					under = under || filepath.Dir(f) == m.path
				}
				if !under {
					t.Errorf("%s is not in a mounted Secret %v", f, tc.mounts)
				}
			}
			port := listenPort(t, r.breakwaterConfig(t).Listen)
			for pname, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				switch tc.probe {
				case "https":
					if p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || probePort(t, c, p.HTTPGet.Port) != port {
						t.Errorf("%s probe %+v: want an HTTPS GET on %d", pname, p.ProbeHandler, port)
					}
				case "tcp":
					if p.TCPSocket == nil || p.HTTPGet != nil || probePort(t, c, p.TCPSocket.Port) != port {
						t.Errorf("%s probe %+v: want a TCP connect to %d", pname, p.ProbeHandler, port)
					}
				}
			}
			if ep := r.serviceMonitors[0].Spec.Endpoints[0]; ep.Scheme != "https" {
				t.Errorf("ServiceMonitor endpoint scheme %q, want https", ep.Scheme)
			}
		})
	}

	t.Run("ServiceMonitor tlsConfig passed on", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, "--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls",
			"--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.tlsConfig.serverName=breakwater.internal"))
		if ep := r.serviceMonitors[0].Spec.Endpoints[0]; ep.TLSConfig["serverName"] != "breakwater.internal" {
			t.Errorf("endpoint tlsConfig %v", ep.TLSConfig)
		}
	})
	t.Run("off by default", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, monitoringValues...))
		if got := r.breakwaterConfig(t).TLS; got.Enabled() {
			t.Errorf("config tls %+v by default", got)
		}
		if ep := r.serviceMonitors[0].Spec.Endpoints[0]; ep.Scheme != "" || ep.TLSConfig != nil {
			t.Errorf("ServiceMonitor endpoint %+v without TLS", ep)
		}
		for _, v := range r.statefulSet(t).Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				t.Errorf("a Secret volume %s without TLS", v.Name)
			}
		}
	})
	for name, tc := range map[string]struct {
		values []string
		want   string
	}{
		"no Secret":              {[]string{"--set", "tls.enabled=true"}, "tls.secretName: required with tls.enabled"},
		"client CA without TLS":  {[]string{"--set", "tls.clientCA.enabled=true"}, "tls.clientCA.enabled: mutual TLS needs tls.enabled"},
		"config.tls set as well": {[]string{"--set", "tls.enabled=true", "--set", "tls.secretName=x", "--set", "config.tls.cert_file=/x"}, "config.tls: leave it unset"},
	} {
		t.Run("refused: "+name, func(t *testing.T) {
			args := append([]string{"template", release, chartDir, "--kube-version", kubeVersion}, tc.values...)
			out, err := runHelm(t, args...)
			if err == nil {
				t.Fatalf("rendered:\n%.300s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// A bcrypt htpasswd line, as htpasswd -B -C 4 wrote it (alice:alice-pw).
const htpasswdLine = "alice:$2y$04$KzglnWfIWeHkYe4vMHxgS.tvGyl2tET6PPJsXUGtqMmIMehV/3S4K"

// writeValues writes a values file for helm template -f.
func writeValues(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

const accessValues = `
config:
  auth:
    realm: cluster-mirror
    access:
      - users: [alice]
        repositories: ["docker.io/library/"]
`

// htpasswdVolume returns the pod's htpasswd volume and the container's
// mount of it.
func htpasswdVolume(t *testing.T, sts appsv1.StatefulSet) (*corev1.Volume, *corev1.VolumeMount) {
	t.Helper()
	var vol *corev1.Volume
	for i, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name == "htpasswd" {
			vol = &sts.Spec.Template.Spec.Volumes[i]
		}
	}
	var mount *corev1.VolumeMount
	c := container(t, sts)
	for i, m := range c.VolumeMounts {
		if m.Name == "htpasswd" {
			mount = &c.VolumeMounts[i]
		}
	}
	return vol, mount
}

// The htpasswd file inline or in a Secret of the user's is mounted
// read-only where config.auth.htpasswd points, and the access list goes
// into the config as given.
func TestAuth(t *testing.T) {
	checkMounted := func(t *testing.T, r rendered, secret, key string) config.Config {
		t.Helper()
		cfg := r.breakwaterConfig(t)
		if cfg.Auth.Realm != "cluster-mirror" || len(cfg.Auth.Access) != 1 || cfg.Auth.Access[0].Users[0] != "alice" {
			t.Errorf("config auth %+v: want the values' realm and access list", cfg.Auth)
		}
		sts := r.statefulSet(t)
		vol, mount := htpasswdVolume(t, sts)
		if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret || len(vol.Secret.Items) != 1 ||
			vol.Secret.Items[0].Key != key || vol.Secret.Items[0].Path != "htpasswd" {
			t.Fatalf("htpasswd volume %+v: want Secret %s's key %s as htpasswd", vol, secret, key)
		}
		if m := vol.Secret.DefaultMode; m == nil || *m&0o007 != 0 {
			t.Errorf("htpasswd volume mode %v: others must not read it", m)
		}
		if mount == nil || !mount.ReadOnly || filepath.Join(mount.MountPath, "htpasswd") != cfg.Auth.Htpasswd {
			t.Errorf("htpasswd mount %+v, config.auth.htpasswd %q: want it read-only where the config points", mount, cfg.Auth.Htpasswd)
		}
		return cfg
	}

	t.Run("inline", func(t *testing.T) {
		values := writeValues(t, "auth:\n  htpasswd: |\n    # nodes\n    "+htpasswdLine+"\n"+accessValues)
		r := decodeAll(t, template(t, chartDir, "-f", values))
		checkMounted(t, r, fullname+"-htpasswd", "htpasswd")
		if len(r.secrets) != 1 || r.secrets[0].Name != fullname+"-htpasswd" {
			t.Fatalf("Secrets %+v: want %s-htpasswd", r.secrets, fullname)
		}
		// What Breakwater reads is a valid bcrypt file with alice in it.
		h, err := access.ParseHtpasswd(bytes.NewReader(r.secrets[0].Data["htpasswd"]), "the Secret")
		if err != nil || !h.Has("alice") {
			t.Errorf("the Secret's htpasswd: %v, users %v", err, h)
		}
		sum := r.statefulSet(t).Spec.Template.Annotations["checksum/htpasswd"]
		other := writeValues(t, "auth:\n  htpasswd: |\n    "+strings.Replace(htpasswdLine, "alice", "bob", 1)+"\n"+strings.Replace(accessValues, "alice", "bob", 1))
		if sum == "" || decodeAll(t, template(t, chartDir, "-f", other)).statefulSet(t).Spec.Template.Annotations["checksum/htpasswd"] == sum {
			t.Error("a new inline htpasswd file does not change the pods' checksum/htpasswd: they would not roll")
		}
	})
	t.Run("existingSecret", func(t *testing.T) {
		values := writeValues(t, accessValues)
		r := decodeAll(t, template(t, chartDir, "-f", values, "--set", "auth.existingSecret=mirror-users", "--set", "auth.existingSecretKey=users"))
		checkMounted(t, r, "mirror-users", "users")
		if len(r.secrets) != 0 {
			t.Errorf("the chart rendered a Secret of its own beside auth.existingSecret: %+v", r.secrets)
		}
		if _, ok := r.statefulSet(t).Spec.Template.Annotations["checksum/htpasswd"]; ok {
			t.Error("checksum/htpasswd set for a Secret the chart does not render")
		}
	})
	t.Run("off", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir))
		if vol, mount := htpasswdVolume(t, r.statefulSet(t)); vol != nil || mount != nil {
			t.Errorf("an htpasswd volume without auth values: %+v %+v", vol, mount)
		}
		if cfg := r.breakwaterConfig(t); cfg.Auth.Htpasswd != "" {
			t.Errorf("config.auth.htpasswd %q without auth values", cfg.Auth.Htpasswd)
		}
	})
}

// What Breakwater would refuse at start about its auth block the chart
// refuses at install, saying what to set.
func TestAuthRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		values string
		set    []string
		want   string
	}{
		"both sources": {accessValues + "auth:\n  existingSecret: s\n  htpasswd: |\n    " + htpasswdLine + "\n", nil,
			"auth.existingSecret and auth.htpasswd: set one of them"},
		"an htpasswd file without an access list": {"", []string{"--set", "auth.existingSecret=s"},
			"config.auth.access: required with auth.existingSecret or auth.htpasswd"},
		"an access list without an htpasswd file": {accessValues, nil,
			"config.auth.access or config.auth.groups without an htpasswd file: set auth.existingSecret or auth.htpasswd"},
		"config.auth.htpasswd beside auth values": {accessValues + "    htpasswd: /elsewhere\n", []string{"--set", "auth.existingSecret=s"},
			`config.auth.htpasswd "/elsewhere": leave it unset`},
		"an MD5 line": {accessValues + "auth:\n  htpasswd: |\n    " + htpasswdLine + "\n    bob:$apr1$BwlsnnSA$IXNemWNEa5SrPydnYv0pV/\n", nil,
			"auth.htpasswd: line 2: not a user:bcrypt-hash line (only bcrypt is accepted: create it with htpasswd -B)"},
	} {
		t.Run(name, func(t *testing.T) {
			args := []string{"template", release, chartDir, "--kube-version", kubeVersion, "-f", writeValues(t, tc.values)}
			out, err := runHelm(t, append(args, tc.set...)...)
			if err == nil {
				t.Fatalf("rendered:\n%.300s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// refused runs helm template with values and wants it to fail saying want.
func refused(t *testing.T, want string, values ...string) {
	t.Helper()
	args := append([]string{"template", release, chartDir, "--kube-version", kubeVersion}, values...)
	out, err := runHelm(t, args...)
	if err == nil {
		t.Fatalf("rendered:\n%.300s", out)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error does not say %q:\n%v", want, err)
	}
}

// The image the chart runs by default is the one make image builds and
// names (build/image's --repository, tagged with VERSION), and the pods
// run as that image's user.
func TestDefaultImageIsMakeImages(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(b))
	var chart struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	b, err = os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err == nil {
		err = yaml.Unmarshal(b, &chart)
	}
	if err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	if chart.AppVersion != version {
		t.Errorf("Chart.yaml appVersion %q, VERSION %q: keep them in step (the default image tag is the appVersion)", chart.AppVersion, version)
	}

	const repository = "ghcr.io/breakwater-registry/breakwater"
	src, err := os.ReadFile(filepath.Join("..", "build", "image", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte(`"repository", "`+repository+`"`)) {
		t.Errorf("build/image no longer names the image %s by default: the chart's image.repository must follow", repository)
	}

	r := decodeAll(t, template(t, chartDir, "--set", "nodeConfig.enabled=true", "--set", "service.clusterIP=10.96.0.50"))
	sts := r.statefulSet(t)
	want := repository + ":" + version
	if got := container(t, sts).Image; got != want {
		t.Errorf("default image %q, want %q (what make image builds)", got, want)
	}
	ds := nodeConfigDaemonSet(t, r)
	if got := ds.Spec.Template.Spec.InitContainers[0].Image; got != want {
		t.Errorf("the hosts.toml writer runs %q, want Breakwater's image %q", got, want)
	}
	psc := sts.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != imagebuild.UID || psc.RunAsGroup == nil || *psc.RunAsGroup != imagebuild.UID {
		t.Errorf("pod securityContext %+v: want runAsUser and runAsGroup %d, the image's user", psc, imagebuild.UID)
	}
}

// The kubelet kills a pod terminationGracePeriodSeconds after SIGTERM;
// Breakwater drains for up to config.drain_timeout. The chart refuses a
// grace period that is not longer, deciding as Go's duration parser does.
func TestGracePeriodOutlastsDrain(t *testing.T) {
	for _, tc := range []struct {
		grace int
		drain string // "" leaves the chart's default
	}{
		{45, ""}, // the defaults
		{30, ""},
		{31, "30s"},
		{30, "30s"},
		{60, "1m"},
		{61, "1m"},
		{90, "90s"},
		{90, "1m30s"},
		{91, "1m30s"},
		{2, "1500ms"},
		{1, "1500ms"},
		{3724, "1h2m3.5s"},
		{3723, "1h2m3.5s"},
		{90, "1.5m"},
	} {
		name := fmt.Sprintf("%d over %s", tc.grace, cmpOr(tc.drain, "the default"))
		t.Run(name, func(t *testing.T) {
			values := []string{"--set", fmt.Sprintf("terminationGracePeriodSeconds=%d", tc.grace)}
			drain := 30 * time.Second
			if tc.drain != "" {
				values = append(values, "--set", "config.drain_timeout="+tc.drain)
				var err error
				if drain, err = time.ParseDuration(tc.drain); err != nil {
					t.Fatal(err)
				}
			}
			if float64(tc.grace) > drain.Seconds() {
				r := decodeAll(t, template(t, chartDir, values...))
				if got := r.breakwaterConfig(t).DrainTimeout.D(); got != drain {
					t.Errorf("drain_timeout %s, want %s", got, drain)
				}
				if got := r.statefulSet(t).Spec.Template.Spec.TerminationGracePeriodSeconds; got == nil || *got != int64(tc.grace) {
					t.Errorf("terminationGracePeriodSeconds %v, want %d", got, tc.grace)
				}
				return
			}
			refused(t, fmt.Sprintf("terminationGracePeriodSeconds %d: must be greater than config.drain_timeout (%s)", tc.grace, cmpOr(tc.drain, "30s")), values...)
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// credentialValues gives docker.io a username and a Secret's password.
var credentialValues = []string{
	"--set", `upstreamCredentials.docker\.io.username=me`,
	"--set", `upstreamCredentials.docker\.io.existingSecret=dockerhub`,
}

// upstreamCredentials mounts each Secret's key read-only, as a directory
// of its own (never a subPath, which the kubelet does not update), and
// points the upstream's password_file at it; Breakwater's parser accepts
// the result.
func TestUpstreamCredentials(t *testing.T) {
	const long = "registry-with-a-rather-long-name-for-this-test.internal.example.com"
	type cred struct{ username, secret, key string }
	for name, tc := range map[string]struct {
		values string
		want   map[string]cred // by upstream host
	}{
		"docker.io and the default key": {
			values: "upstreamCredentials:\n  docker.io:\n    username: me\n    existingSecret: dockerhub\n",
			want:   map[string]cred{"docker.io": {"me", "dockerhub", "password"}},
		},
		"a host with a port and a key of its own": {
			values: "config:\n  upstreams:\n    registry.example.com:5000:\n      url: https://registry.example.com:5000\n" +
				"upstreamCredentials:\n  registry.example.com:5000:\n    username: robot\n    existingSecret: registry-robot\n    passwordKey: token\n",
			want: map[string]cred{"registry.example.com:5000": {"robot", "registry-robot", "token"}},
		},
		"long host names truncated apart": {
			values: "config:\n  upstreams:\n    " + long + ":\n      url: https://" + long + "\n    " + long + ":5000:\n      url: https://" + long + ":5000\n" +
				"upstreamCredentials:\n  " + long + ":\n    username: a\n    existingSecret: a\n  " + long + ":5000:\n    username: b\n    existingSecret: b\n",
			want: map[string]cred{long: {"a", "a", "password"}, long + ":5000": {"b", "b", "password"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, "-f", writeValues(t, tc.values)))
			cfg := r.breakwaterConfig(t)
			sts := r.statefulSet(t)
			c := container(t, sts)
			volumes := map[string]corev1.Volume{}
			for _, v := range sts.Spec.Template.Spec.Volumes {
				volumes[v.Name] = v
			}
			seen := map[string]bool{}
			for host, want := range tc.want {
				u := cfg.Upstreams[host]
				if u.Username != want.username || u.Password != "" || u.PasswordFile == "" {
					t.Errorf("%s: config %+v: want username %s and a password_file", host, u, want.username)
					continue
				}
				if filepath.Base(u.PasswordFile) != "password" || !strings.HasPrefix(u.PasswordFile, "/etc/breakwater-upstreams/") {
					t.Errorf("%s: password_file %s, want /etc/breakwater-upstreams/<host>/password", host, u.PasswordFile)
				}
				var mount *corev1.VolumeMount
				for i, m := range c.VolumeMounts {
					if m.MountPath == filepath.Dir(u.PasswordFile) {
						mount = &c.VolumeMounts[i]
					}
				}
				if mount == nil || !mount.ReadOnly || mount.SubPath != "" || mount.SubPathExpr != "" {
					t.Errorf("%s: mount %+v: want %s mounted read-only as a directory, no subPath", host, mount, filepath.Dir(u.PasswordFile))
					continue
				}
				if errs := validation.IsDNS1123Label(mount.Name); len(errs) > 0 {
					t.Errorf("%s: volume name %q: %v", host, mount.Name, errs)
				}
				if seen[mount.Name] {
					t.Errorf("%s: volume name %q used twice", host, mount.Name)
				}
				seen[mount.Name] = true
				v := volumes[mount.Name].Secret
				if v == nil || v.SecretName != want.secret || len(v.Items) != 1 || v.Items[0].Key != want.key || v.Items[0].Path != "password" {
					t.Errorf("%s: volume %+v: want Secret %s's key %s as password", host, volumes[mount.Name].VolumeSource, want.secret, want.key)
				} else if v.DefaultMode == nil || *v.DefaultMode != 0o440 {
					t.Errorf("%s: volume mode %v, want 0440 (the pod's fsGroup reads it)", host, v.DefaultMode)
				}
			}
			for host, u := range cfg.Upstreams {
				if _, ok := tc.want[host]; !ok && (u.Username != "" || u.PasswordFile != "") {
					t.Errorf("%s has credentials it was not given: %+v", host, u)
				}
			}
			// A rotated Secret changes nothing in the pod template: the
			// file is updated in place and re-read, no rollout.
			if got := keys(sts.Spec.Template.Annotations); !reflect.DeepEqual(got, []string{"checksum/config"}) {
				t.Errorf("pod annotations %v: want checksum/config only", got)
			}
		})
	}
}

// Whatever would give an upstream two sources of credentials, or none, the
// chart refuses, naming the value.
func TestUpstreamCredentialsRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		values []string
		want   string
	}{
		"not an upstream": {[]string{"--set", `upstreamCredentials.registry\.example\.com.username=me`, "--set", `upstreamCredentials.registry\.example\.com.existingSecret=s`},
			`upstreamCredentials.registry.example.com: "registry.example.com" is not an upstream of config.upstreams (docker.io, ghcr.io, quay.io, registry.k8s.io)`},
		"a dropped upstream": {append([]string{"--set", `config.upstreams.docker\.io=null`, "--set", "config.default_upstream=ghcr.io"}, credentialValues...),
			`upstreamCredentials.docker.io: "docker.io" is not an upstream of config.upstreams`},
		"no username": {[]string{"--set", `upstreamCredentials.docker\.io.existingSecret=s`},
			"upstreamCredentials.docker.io.username: required"},
		"no Secret": {[]string{"--set", `upstreamCredentials.docker\.io.username=me`},
			"upstreamCredentials.docker.io.existingSecret: required"},
	} {
		t.Run(name, func(t *testing.T) { refused(t, tc.want, tc.values...) })
	}
	for _, set := range []string{
		"username=other",
		"password=hunter2",
		"password_file=/elsewhere",
		"docker_config=true",
		"credential_helper=ecr-login",
	} {
		key := set[:strings.IndexByte(set, '=')]
		t.Run("config.upstreams.docker.io."+key+" as well", func(t *testing.T) {
			refused(t, "upstreamCredentials.docker.io: config.upstreams.docker.io."+key+" is set as well",
				append([]string{"--set", `config.upstreams.docker\.io.` + set}, credentialValues...)...)
		})
	}
}

// networkPolicy.enabled renders a NetworkPolicy over the Breakwater pods
// (and no others) letting in Breakwater's port only, from the given peers
// or from anywhere, and restricting egress only when rules are given.
func TestNetworkPolicy(t *testing.T) {
	nodes := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16"}}
	monitoring := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	dns := networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(53)), Protocol: ptr(corev1.ProtocolUDP)}}}
	for name, tc := range map[string]struct {
		values string
		port   int32
		from   []networkingv1.NetworkPolicyPeer
		egress []networkingv1.NetworkPolicyEgressRule
	}{
		"from anywhere to the port only": {values: "", port: 5000},
		"another listen port":            {values: "config:\n  listen: \":8080\"\n", port: 8080},
		"from the nodes and Prometheus": {
			values: "networkPolicy:\n  ingressFrom:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: monitoring\n",
			port:   5000, from: []networkingv1.NetworkPolicyPeer{nodes, monitoring},
		},
		"egress restricted": {
			values: "networkPolicy:\n  egress:\n    - ports:\n        - port: 53\n          protocol: UDP\n",
			port:   5000, egress: []networkingv1.NetworkPolicyEgressRule{dns},
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, "-f", writeValues(t, "networkPolicy:\n  enabled: true\n"), "-f", writeValues(t, tc.values),
				"--set", "nodeConfig.enabled=true", "--set", "service.clusterIP=10.96.0.50"))
			if len(r.networkPolicies) != 1 {
				t.Fatalf("want one NetworkPolicy, got %d", len(r.networkPolicies))
			}
			np := r.networkPolicies[0]
			sts := r.statefulSet(t)
			if !matches(t, &np.Spec.PodSelector, sts.Spec.Template.Labels) {
				t.Errorf("podSelector %+v does not select the Breakwater pods %v", np.Spec.PodSelector, sts.Spec.Template.Labels)
			}
			if ds := nodeConfigDaemonSet(t, r); matches(t, &np.Spec.PodSelector, ds.Spec.Template.Labels) {
				t.Errorf("podSelector %+v selects the hosts.toml DaemonSet's pods too", np.Spec.PodSelector)
			}
			if c := container(t, sts); c.Ports[0].ContainerPort != tc.port {
				t.Fatalf("container port %d, want %d", c.Ports[0].ContainerPort, tc.port)
			}
			wantTypes := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			if tc.egress != nil {
				wantTypes = append(wantTypes, networkingv1.PolicyTypeEgress)
			}
			if !reflect.DeepEqual(np.Spec.PolicyTypes, wantTypes) {
				t.Errorf("policyTypes %v, want %v (no egress rules: egress left alone)", np.Spec.PolicyTypes, wantTypes)
			}
			wantIngress := []networkingv1.NetworkPolicyIngressRule{{
				Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(tc.port)), Protocol: ptr(corev1.ProtocolTCP)}},
				From:  tc.from,
			}}
			if !reflect.DeepEqual(np.Spec.Ingress, wantIngress) {
				t.Errorf("ingress %+v, want %+v", np.Spec.Ingress, wantIngress)
			}
			if !reflect.DeepEqual(np.Spec.Egress, tc.egress) {
				t.Errorf("egress %+v, want %+v", np.Spec.Egress, tc.egress)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// nodeConfigDaemonSet returns the release's only DaemonSet, the hosts.toml
// writer, checking its selector picks its own pods and not Breakwater's.
func nodeConfigDaemonSet(t *testing.T, r rendered) appsv1.DaemonSet {
	t.Helper()
	if len(r.daemonSets) != 1 {
		t.Fatalf("want one DaemonSet with nodeConfig.enabled, got %d", len(r.daemonSets))
	}
	ds := r.daemonSets[0]
	if !matches(t, ds.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("DaemonSet selector %+v does not match its pods %v", ds.Spec.Selector, ds.Spec.Template.Labels)
	}
	if len(ds.Spec.Template.Spec.InitContainers) != 1 || len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("DaemonSet: want one init container and one container, got %+v and %+v", ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers)
	}
	return ds
}

// breakwaterBinary builds cmd/breakwater into the test's temporary
// directory, to run the DaemonSet's command line as the init container
// would.
func breakwaterBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "breakwater")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join("..", "cmd", "breakwater")).CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/breakwater: %v\n%s", err, out)
	}
	return bin
}

// nodeConfig.enabled renders a DaemonSet whose init container is
// Breakwater's own `containerd-config`, writing into the node's directory;
// here it runs, with the ConfigMap it mounts and a temporary directory for
// the node's, and must write the hosts.toml of every upstream pointing at
// the mirror address NOTES.txt prints.
func TestNodeConfig(t *testing.T) {
	breakwater := breakwaterBinary(t)
	for name, tc := range map[string]struct {
		values      []string
		mirror      string
		hostPath    string
		tolerations []corev1.Toleration
		pause       string
	}{
		"defaults and a fixed cluster IP": {
			values: []string{"--set", "service.clusterIP=10.96.0.50"},
			mirror: "http://10.96.0.50:5000", hostPath: "/etc/containerd/certs.d",
			tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			pause:       "registry.k8s.io/pause:3.10",
		},
		"k3s and a node port on one node pool with a pinned pause": {
			values: []string{"--set", "containerd.mirrorURL=http://127.0.0.1:30500", "--set", "service.type=NodePort", "--set", "service.nodePort=30500",
				"--set", "nodeConfig.hostPath=/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
				"--set", "nodeConfig.tolerations[0].key=pool", "--set", "nodeConfig.tolerations[0].operator=Equal",
				"--set", "nodeConfig.tolerations[0].value=ci", "--set", "nodeConfig.tolerations[0].effect=NoSchedule",
				"--set", "nodeConfig.pauseImage.digest=sha256:" + strings.Repeat("cd", 32),
				"--set", `config.upstreams.registry\.local:5001.url=http://registry.local:5001`},
			mirror: "http://127.0.0.1:30500", hostPath: "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
			tolerations: []corev1.Toleration{{Key: "pool", Operator: corev1.TolerationOpEqual, Value: "ci", Effect: corev1.TaintEffectNoSchedule}},
			pause:       "registry.k8s.io/pause@sha256:" + strings.Repeat("cd", 32),
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, append([]string{"--set", "nodeConfig.enabled=true"}, tc.values...)...))
			ds := nodeConfigDaemonSet(t, r)
			sts := r.statefulSet(t)
			spec := ds.Spec.Template.Spec
			writer, pause := spec.InitContainers[0], spec.Containers[0]

			// The DaemonSet's pods are not Breakwater's: the Service, the
			// headless Service and the PDB must not pick them up.
			podLabels := ds.Spec.Template.Labels
			if matches(t, sts.Spec.Selector, podLabels) || matches(t, ds.Spec.Selector, sts.Spec.Template.Labels) {
				t.Errorf("the StatefulSet's and the DaemonSet's selectors overlap: %v, %v", sts.Spec.Selector, ds.Spec.Selector)
			}
			for _, svc := range r.services {
				if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
					t.Errorf("Service %s selects the DaemonSet's pods", svc.Name)
				}
			}
			for _, pdb := range r.pdbs {
				if matches(t, pdb.Spec.Selector, podLabels) {
					t.Errorf("PDB %s covers the DaemonSet's pods", pdb.Name)
				}
			}

			// Least privilege: root in the writer only, for the node's
			// root-owned directory, with no capability; pause non-root.
			if spec.HostNetwork || spec.HostPID || spec.HostIPC || spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Errorf("pod spec: want no host namespaces and no service account token, got %+v", spec)
			}
			for _, c := range []corev1.Container{writer, pause} {
				sc := c.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					(sc.Privileged != nil && *sc.Privileged) || sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
					t.Errorf("container %s securityContext %+v: want read-only root, no privilege escalation, all capabilities dropped", c.Name, sc)
				}
			}
			if sc := writer.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
				t.Errorf("writer securityContext %+v: want runAsUser 0 (the node's directory is root's)", sc)
			}
			if sc := pause.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
				t.Errorf("pause securityContext %+v: want it non-root", sc)
			}
			if pause.Image != tc.pause || len(pause.Command)+len(pause.Args) != 0 {
				t.Errorf("pause container %s %q %q, want %s as it is", pause.Image, pause.Command, pause.Args, tc.pause)
			}

			// Scheduling: everywhere the values say, on Linux.
			if !reflect.DeepEqual(spec.Tolerations, tc.tolerations) {
				t.Errorf("tolerations %+v, want %+v", spec.Tolerations, tc.tolerations)
			}
			if !reflect.DeepEqual(spec.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) {
				t.Errorf("nodeSelector %v, want kubernetes.io/os: linux", spec.NodeSelector)
			}

			// One hostPath volume, the configured directory, mounted where
			// --dir points; the writer's other mount is the ConfigMap.
			volumes := map[string]corev1.Volume{}
			for _, v := range spec.Volumes {
				volumes[v.Name] = v
				if v.HostPath != nil && (v.HostPath.Path != tc.hostPath || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate) {
					t.Errorf("hostPath volume %s %+v: want %s, DirectoryOrCreate", v.Name, v.HostPath, tc.hostPath)
				}
			}
			if len(pause.VolumeMounts) != 0 {
				t.Errorf("pause mounts %+v, want none", pause.VolumeMounts)
			}
			root := t.TempDir()
			var dir string
			for _, m := range writer.VolumeMounts {
				v := volumes[m.Name]
				switch {
				case v.HostPath != nil:
					dir = m.MountPath
					if m.ReadOnly || m.SubPath != "" {
						t.Errorf("hostPath mount %+v: want it writable, whole", m)
					}
				case v.ConfigMap != nil:
					cm := r.configMap(t, v.ConfigMap.Name)
					if err := os.MkdirAll(filepath.Join(root, m.MountPath), 0o755); err != nil {
						t.Fatal(err)
					}
					for k, data := range cm.Data {
						if err := os.WriteFile(filepath.Join(root, m.MountPath, k), []byte(data), 0o644); err != nil {
							t.Fatal(err)
						}
					}
				default:
					t.Errorf("writer mount %+v: neither the ConfigMap nor the node's directory", m)
				}
			}
			if dir == "" {
				t.Fatalf("the writer does not mount the hostPath: %+v", writer.VolumeMounts)
			}

			args := writer.Args
			if len(writer.Command) != 0 || len(args) == 0 || args[0] != "containerd-config" {
				t.Fatalf("writer command %q args %q: want the image's entrypoint with containerd-config", writer.Command, args)
			}
			flags := map[string]string{}
			for i := 1; i+1 < len(args); i += 2 {
				flags[args[i]] = args[i+1]
			}
			if flags["--mirror"] != tc.mirror || flags["--dir"] != dir || len(args) != 7 {
				t.Errorf("writer args %q: want --mirror %s --config <ConfigMap> --dir %s", args, tc.mirror, dir)
			}

			// Run the command line, the paths moved under root.
			run := make([]string, len(args))
			for i, a := range args {
				if strings.HasPrefix(a, "/") {
					a = filepath.Join(root, a)
				}
				run[i] = a
			}
			cmd := exec.Command(breakwater, run...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("breakwater %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			cfg := r.breakwaterConfig(t)
			for host, up := range cfg.Upstreams {
				b, err := os.ReadFile(filepath.Join(root, dir, host, "hosts.toml"))
				if err != nil {
					t.Errorf("%s: %v", host, err)
					continue
				}
				server := "https://" + host
				switch {
				case host == "docker.io":
					server = "https://registry-1.docker.io"
				case strings.HasPrefix(up.URL, "http://"):
					server = up.URL
				}
				for _, want := range []string{fmt.Sprintf("server = %q\n", server), fmt.Sprintf("[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", tc.mirror)} {
					if !strings.Contains(string(b), want) {
						t.Errorf("%s/hosts.toml lacks %q:\n%s", host, want, b)
					}
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(root, dir)); len(entries) != len(cfg.Upstreams) {
				t.Errorf("%d entries in the node's directory, want one per upstream (%d)", len(entries), len(cfg.Upstreams))
			}
		})
	}

	t.Run("the ConfigMap has no credentials and new upstreams roll the pods", func(t *testing.T) {
		base := []string{"--set", "nodeConfig.enabled=true", "--set", "service.clusterIP=10.96.0.50"}
		r := decodeAll(t, template(t, chartDir, append(base, credentialValues...)...))
		ds := nodeConfigDaemonSet(t, r)
		cm := r.configMap(t, ds.Spec.Template.Spec.Volumes[0].ConfigMap.Name)
		cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
		if err != nil {
			t.Fatalf("Breakwater refuses the DaemonSet's config.yaml: %v", err)
		}
		bw := r.breakwaterConfig(t)
		for host, u := range bw.Upstreams {
			if got := cfg.Upstreams[host]; got.URL != u.URL || got.Username != "" || got.PasswordFile != "" {
				t.Errorf("%s in the DaemonSet's config: %+v, want its url only (%s)", host, got, u.URL)
			}
		}
		if len(cfg.Upstreams) != len(bw.Upstreams) {
			t.Errorf("the DaemonSet's config has %d upstreams, Breakwater's %d", len(cfg.Upstreams), len(bw.Upstreams))
		}
		sum := ds.Spec.Template.Annotations["checksum/node-config"]
		other := nodeConfigDaemonSet(t, decodeAll(t, template(t, chartDir, append(base, "--set", `config.upstreams.quay\.io=null`)...)))
		if sum == "" || other.Spec.Template.Annotations["checksum/node-config"] == sum {
			t.Error("dropping an upstream does not change checksum/node-config: the writer would not run again")
		}
	})

	for name, tc := range map[string]struct {
		values []string
		want   string
	}{
		"the Service's DNS name": {nil, "nodeConfig.enabled: set service.clusterIP or containerd.mirrorURL"},
		"a hostPath that is not clean": {[]string{"--set", "service.clusterIP=10.96.0.50", "--set", "nodeConfig.hostPath=/etc/containerd/../certs.d"},
			`nodeConfig.hostPath "/etc/containerd/../certs.d": want a clean absolute path`},
	} {
		t.Run("refused: "+name, func(t *testing.T) {
			refused(t, tc.want, append([]string{"--set", "nodeConfig.enabled=true"}, tc.values...)...)
		})
	}
}

// sharedStorageValues: a shared bucket on an S3-compatible server, its
// keys in the Secret breakwater-s3.
var sharedStorageValues = []string{
	"--set", "sharedStorage.existingSecret=breakwater-s3",
	"--set", "config.storage.s3.bucket=breakwater",
	"--set", "config.storage.s3.regionendpoint=https://minio.internal:9000",
	"--set", "config.storage.s3.forcepathstyle=true",
}

// sharedStorageEnv returns the container's variables that are named
// AWS_*, by name, and fails on a name given twice.
func sharedStorageEnv(t *testing.T, c corev1.Container) map[string]corev1.EnvVar {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "AWS_") {
			continue
		}
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s set twice", e.Name)
		}
		env[e.Name] = e
	}
	return env
}

// sharedStorage.existingSecret sets AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY from the Secret's keys, which distribution's s3
// driver reads when config.storage.s3 has no keys of its own; the
// rendered config has the bucket and no keys, and Breakwater's parser
// accepts it. Without it no AWS_ variable is set.
func TestSharedStorage(t *testing.T) {
	for name, tc := range map[string]struct {
		values           []string
		secret, id, key  string // want; "" for no variables
		bucket, endpoint string // want in config.storage.s3; "" for none
	}{
		"the Secret's default keys": {
			values: sharedStorageValues,
			secret: "breakwater-s3", id: "accesskey", key: "secretkey",
			bucket: "breakwater", endpoint: "https://minio.internal:9000",
		},
		"keys of its own": {
			values: append([]string{"--set", "sharedStorage.accessKeyKey=AWS_ACCESS_KEY_ID", "--set-string", "sharedStorage.secretKeyKey=0"}, sharedStorageValues...),
			secret: "breakwater-s3", id: "AWS_ACCESS_KEY_ID", key: "0",
			bucket: "breakwater", endpoint: "https://minio.internal:9000",
		},
		"no Secret: the keys in config, or the AWS default chain": {
			values: []string{"--set", "config.storage.s3.bucket=breakwater", "--set", "config.storage.s3.region=eu-west-1"},
			bucket: "breakwater",
		},
		"defaults": {},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, tc.values...))
			cfg := r.breakwaterConfig(t)
			env := sharedStorageEnv(t, container(t, r.statefulSet(t)))
			if tc.secret == "" {
				if len(env) != 0 {
					t.Errorf("env %v, want no AWS_ variables", env)
				}
			} else {
				for name, key := range map[string]string{"AWS_ACCESS_KEY_ID": tc.id, "AWS_SECRET_ACCESS_KEY": tc.key} {
					e, ok := env[name]
					if !ok {
						t.Errorf("no env %s", name)
						continue
					}
					if ref := e.ValueFrom; e.Value != "" || ref == nil || ref.SecretKeyRef == nil ||
						ref.SecretKeyRef.Name != tc.secret || ref.SecretKeyRef.Key != key || ref.SecretKeyRef.Optional != nil {
						t.Errorf("env %s: %+v, want Secret %s's key %s (not optional)", name, e, tc.secret, key)
					}
				}
				if len(env) != 2 {
					t.Errorf("AWS_ env %v: want the two keys only", keys(env))
				}
			}
			s3 := cfg.Storage.S3
			if tc.bucket == "" {
				if s3 != nil {
					t.Errorf("config storage.s3 %+v, want none", s3)
				}
				return
			}
			if s3 == nil || s3.Bucket != tc.bucket || s3.RegionEndpoint != tc.endpoint {
				t.Fatalf("config storage.s3 %+v, want bucket %s, regionendpoint %q", s3, tc.bucket, tc.endpoint)
			}
			if s3.AccessKey != "" || s3.SecretKey != "" || s3.SecretKeyFile != "" {
				t.Errorf("config storage.s3 has keys %+v: the driver would not read the environment", s3)
			}
			params, err := s3.DriverParameters()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"accesskey", "secretkey"} {
				if _, ok := params[k]; ok {
					t.Errorf("driver parameter %s given: the driver would not read the environment", k)
				}
			}
		})
	}
}

// Without a store to give the keys to, or with keys in config.storage.s3
// too, sharedStorage.existingSecret is refused, naming the value.
func TestSharedStorageRefused(t *testing.T) {
	refused(t, "sharedStorage.existingSecret: needs config.storage.s3 (or .gcs, .azure), the bucket the replicas share (docs/fleet.md)",
		"--set", "sharedStorage.existingSecret=breakwater-s3")
	refused(t, "sharedStorage.existingSecret: needs config.storage.s3",
		"--set", "sharedStorage.existingSecret=breakwater-s3", "--set", "config.storage.redirect=false")
	for _, set := range []string{"accesskey=AKIA", "secretkey=hunter2", "secretkey_file=/etc/s3/secretkey"} {
		key := set[:strings.IndexByte(set, '=')]
		t.Run("config.storage.s3."+key+" as well", func(t *testing.T) {
			refused(t, "sharedStorage.existingSecret: config.storage.s3."+key+" is set as well; leave the keys to sharedStorage",
				append([]string{"--set", "config.storage.s3." + set}, sharedStorageValues...)...)
		})
	}
}

// sharedStorage.existingSecret with gcs or azure mounts the Secret's key
// (gcs's service account key, azure's account key) as a file, read-only
// and readable by the pod's group only, and points the store's keyfile or
// accountkey_file at it (azure's credentials.type becoming shared_key); no
// AWS_ variable is set, and Breakwater's parser accepts the config. With
// Redis it is a fleet like s3's, and NOTES name the bucket or container.
func TestSharedStorageKeyFiles(t *testing.T) {
	for name, tc := range map[string]struct {
		values    []string
		secret    string // the Secret and its key mounted
		key, file string // the Secret's key, and the file the config names
	}{
		"gcs": {
			values: []string{"--set", "sharedStorage.existingSecret=breakwater-gcs", "--set", "config.storage.gcs.bucket=breakwater"},
			secret: "breakwater-gcs", key: "key.json", file: "/etc/breakwater-storage/key.json",
		},
		"gcs, a key of its own": {
			values: []string{"--set", "sharedStorage.existingSecret=breakwater-gcs", "--set", "sharedStorage.keyfileKey=sa.json", "--set", "config.storage.gcs.bucket=breakwater"},
			secret: "breakwater-gcs", key: "sa.json", file: "/etc/breakwater-storage/key.json",
		},
		"azure": {
			values: []string{"--set", "sharedStorage.existingSecret=breakwater-azure", "--set", "config.storage.azure.accountname=breakwater", "--set", "config.storage.azure.container=breakwater"},
			secret: "breakwater-azure", key: "accountkey", file: "/etc/breakwater-storage/accountkey",
		},
		"azure, shared_key said, a key of its own": {
			values: []string{"--set", "sharedStorage.existingSecret=breakwater-azure", "--set", "sharedStorage.accountKeyKey=key1",
				"--set", "config.storage.azure.accountname=breakwater", "--set", "config.storage.azure.container=breakwater", "--set", "config.storage.azure.credentials.type=shared_key"},
			secret: "breakwater-azure", key: "key1", file: "/etc/breakwater-storage/accountkey",
		},
		"gcs without a Secret": {
			values: []string{"--set", "config.storage.gcs.bucket=breakwater", "--set", "config.storage.gcs.keyfile=/etc/mine/key.json"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, tc.values...))
			cfg := r.breakwaterConfig(t)
			sts := r.statefulSet(t)
			if env := sharedStorageEnv(t, container(t, sts)); len(env) != 0 {
				t.Errorf("AWS_ env %v: want none for %s", keys(env), name)
			}
			got := ""
			switch {
			case cfg.Storage.GCS != nil:
				got = cfg.Storage.GCS.KeyFile
			case cfg.Storage.Azure != nil:
				a := cfg.Storage.Azure
				got = a.AccountKeyFile
				if a.AccountKey != "" || (tc.secret != "" && a.Credentials.Type != "shared_key") {
					t.Errorf("config storage.azure %+v: want the key from its file only, credentials.type shared_key", a)
				}
			}
			if tc.secret == "" {
				for _, v := range sts.Spec.Template.Spec.Volumes {
					if v.Name == "storage-secret" {
						t.Errorf("volume %+v without sharedStorage.existingSecret", v)
					}
				}
				if got != "/etc/mine/key.json" {
					t.Errorf("config keyfile %q, want the values' own", got)
				}
				return
			}
			if got != tc.file {
				t.Fatalf("config names the key file %q, want %s", got, tc.file)
			}
			_, vol := secretMount(t, sts.Spec.Template, tc.file)
			if vol.SecretName != tc.secret || vol.Items[0].Key != tc.key || vol.Optional != nil {
				t.Errorf("key volume %+v: want Secret %s's key %s (not optional)", vol, tc.secret, tc.key)
			}
		})
	}

	dir := notesChart(t)
	for store, tc := range map[string]struct {
		values []string
		notes  string
	}{
		"gcs": {[]string{"--set", "config.storage.gcs.bucket=breakwater"}, "sharing the gcs bucket breakwater and coordinating through Redis"},
		"azure": {[]string{"--set", "config.storage.azure.accountname=acct", "--set", "config.storage.azure.container=fleet"},
			"sharing the azure container fleet and coordinating through Redis"},
	} {
		t.Run("a fleet on "+store, func(t *testing.T) {
			values := append([]string{"--set", "replicaCount=3", "--set", "sharedStorage.existingSecret=breakwater-" + store,
				"--set", "config.redis.addr=redis:6379"}, tc.values...)
			r := decodeAll(t, template(t, dir, values...))
			d := r.deployment(t)
			cfg := r.breakwaterConfig(t)
			if cfg.Cluster.SecretFile == "" {
				t.Errorf("config cluster %+v: want the mounted peer secret", cfg.Cluster)
			}
			file := "/etc/breakwater-storage/key.json"
			if store == "azure" {
				file = "/etc/breakwater-storage/accountkey"
			}
			secretMount(t, d.Spec.Template, file)
			if notes := r.configMap(t, "notes").Data["NOTES.txt"]; !strings.Contains(notes, tc.notes) {
				t.Errorf("NOTES do not say %q:\n%s", tc.notes, notes)
			}
		})
	}
}

// What sharedStorage would set for gcs or azure is refused in
// config.storage too, and so is an azure credentials type that does not
// use the account key; two stores are refused, as Breakwater refuses them.
func TestSharedStorageKeyFilesRefused(t *testing.T) {
	gcs := []string{"--set", "sharedStorage.existingSecret=breakwater-gcs", "--set", "config.storage.gcs.bucket=breakwater"}
	azure := []string{"--set", "sharedStorage.existingSecret=breakwater-azure", "--set", "config.storage.azure.accountname=a", "--set", "config.storage.azure.container=c"}
	for name, tc := range map[string]struct {
		values []string
		want   string
	}{
		"gcs keyfile as well": {append([]string{"--set", "config.storage.gcs.keyfile=/k.json"}, gcs...),
			"sharedStorage.existingSecret: config.storage.gcs.keyfile is set as well; leave it to sharedStorage"},
		"azure accountkey as well": {append([]string{"--set", "config.storage.azure.accountkey=k"}, azure...),
			"sharedStorage.existingSecret: config.storage.azure.accountkey is set as well; leave the key to sharedStorage"},
		"azure accountkey_file as well": {append([]string{"--set", "config.storage.azure.accountkey_file=/k"}, azure...),
			"sharedStorage.existingSecret: config.storage.azure.accountkey_file is set as well"},
		"azure client secret credentials": {append([]string{"--set", "config.storage.azure.credentials.type=client_secret"}, azure...),
			`sharedStorage.existingSecret: config.storage.azure.credentials.type "client_secret": the Secret holds the account's key, which only type shared_key uses`},
		"two stores": {append([]string{"--set", "config.storage.s3.bucket=b", "--set", "config.storage.s3.region=r"}, gcs...),
			"config.storage: s3 and gcs are set: set one of them, the one object store the replicas share"},
	} {
		t.Run(name, func(t *testing.T) {
			refused(t, tc.want, tc.values...)
		})
	}
}

// fleetValues: a fleet of three sharing a bucket (its keys in the Secret
// breakwater-s3) and coordinating through Redis, whose password is in the
// Secret breakwater-redis.
const fleetValues = `
replicaCount: 3
sharedStorage:
  existingSecret: breakwater-s3
fleet:
  redisPasswordSecret: breakwater-redis
config:
  storage:
    s3:
      bucket: breakwater
      region: us-east-1
      regionendpoint: https://minio.internal:9000
      forcepathstyle: true
  redis:
    addr: redis.breakwater.svc.cluster.local:6379
`

func (r rendered) deployment(t *testing.T) appsv1.Deployment {
	t.Helper()
	if len(r.deployments) != 1 || len(r.statefulSets) != 0 {
		t.Fatalf("want exactly one Deployment and no StatefulSet, got %d and %d", len(r.deployments), len(r.statefulSets))
	}
	return r.deployments[0]
}

// podContainer returns a pod template's only container, Breakwater.
func podContainer(t *testing.T, pod corev1.PodTemplateSpec) corev1.Container {
	t.Helper()
	cs := pod.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "breakwater" {
		t.Fatalf("want one container named breakwater, got %+v", cs)
	}
	return cs[0]
}

// secretMount returns the volume and the container's mount of the
// directory holding file, failing unless it is a read-only directory mount
// (no subPath: the kubelet never updates one) of one key of a Secret,
// readable by the pod's fsGroup only.
func secretMount(t *testing.T, pod corev1.PodTemplateSpec, file string) (corev1.VolumeMount, *corev1.SecretVolumeSource) {
	t.Helper()
	c := podContainer(t, pod)
	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if m.MountPath == filepath.Dir(file) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly || mount.SubPath != "" || mount.SubPathExpr != "" {
		t.Fatalf("%s: mount %+v: want %s mounted read-only as a directory, no subPath", file, mount, filepath.Dir(file))
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name != mount.Name {
			continue
		}
		s := v.Secret
		if s == nil || len(s.Items) != 1 || s.Items[0].Path != filepath.Base(file) {
			t.Fatalf("%s: volume %s %+v: want one key of a Secret as %s", file, v.Name, v.VolumeSource, filepath.Base(file))
		}
		if s.DefaultMode == nil || *s.DefaultMode != 0o440 {
			t.Errorf("%s: volume mode %v, want 0440 (the pod's fsGroup reads it)", file, s.DefaultMode)
		}
		return *mount, s
	}
	t.Fatalf("%s: mount %s has no volume", file, mount.Name)
	return corev1.VolumeMount{}, nil
}

// advertised checks the container passes --advertise with its pod's
// address, from the downward API, and Breakwater's port, and returns the
// URL as a pod at 10.0.0.5 would run it.
func advertised(t *testing.T, c corev1.Container) *url.URL {
	t.Helper()
	base := []string{"serve", "--config", "/etc/breakwater/config.yaml"}
	if len(c.Args) != 5 || !reflect.DeepEqual(c.Args[:3], base) || c.Args[3] != "--advertise" {
		t.Fatalf("args %q, want %q and --advertise URL", c.Args, base)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	// The kubelet expands $(NAME) in the arguments from the container's
	// variables: each must be one.
	for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(c.Args[4], -1) {
		if _, ok := env[m[1]]; !ok {
			t.Errorf("--advertise %s: $(%s) is no variable of the container", c.Args[4], m[1])
		}
	}
	ip := env["POD_IP"]
	if ip.Value != "" || ip.ValueFrom == nil || ip.ValueFrom.FieldRef == nil || ip.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("env POD_IP %+v: want the downward API's status.podIP", ip)
	}
	if !strings.Contains(c.Args[4], "$(POD_IP)") {
		t.Errorf("--advertise %s: want the pod's address, $(POD_IP)", c.Args[4])
	}
	u, err := url.Parse(strings.ReplaceAll(c.Args[4], "$(POD_IP)", "10.0.0.5"))
	if err != nil {
		t.Fatalf("--advertise %s: %v", c.Args[4], err)
	}
	if u.Hostname() != "10.0.0.5" || u.Port() != fmt.Sprint(c.Ports[0].ContainerPort) {
		t.Errorf("--advertise %s: want the pod's address and the container port %d", c.Args[4], c.Ports[0].ContainerPort)
	}
	return u
}

// With config.storage.s3 and config.redis.addr the chart runs a fleet: a
// Deployment without PVCs, each cache an emptyDir, each pod advertising
// its own address, the peer secret and Redis's password mounted from
// Secrets, a headless Service of the ready replicas, the PDB over the
// pods, and topology spread by default; Breakwater's parser accepts the
// configuration with that address.
func TestFleet(t *testing.T) {
	values := writeValues(t, fleetValues)
	r := decodeAll(t, template(t, chartDir, append([]string{"-f", values}, monitoringValues...)...))
	if len(r.pvcs) != 0 {
		t.Errorf("%d PersistentVolumeClaims in a fleet", len(r.pvcs))
	}
	d := r.deployment(t)
	pod := d.Spec.Template
	podLabels := pod.Labels
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 || !matches(t, d.Spec.Selector, podLabels) {
		t.Errorf("Deployment replicas %v selector %+v: want 3 over its pods %v", d.Spec.Replicas, d.Spec.Selector, podLabels)
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy %+v: want a rolling update that keeps every replica until its successor is ready", s)
	}

	cfg := r.breakwaterConfig(t)
	if cfg.Redis.Addr != "redis.breakwater.svc.cluster.local:6379" || cfg.Redis.Password != "" ||
		cfg.Redis.PasswordFile != "/etc/breakwater-redis/password" {
		t.Errorf("config redis %+v: want the values' addr and the mounted password_file", cfg.Redis)
	}
	if cfg.Cluster.SecretFile != "/etc/breakwater-cluster/secret" || cfg.Cluster.Advertise != "" {
		t.Errorf("config cluster %+v: want the mounted secret_file and no advertise (the flag's)", cfg.Cluster)
	}
	if s3 := cfg.Storage.S3; s3 == nil || s3.Bucket != "breakwater" || s3.AccessKey != "" || s3.SecretKey != "" {
		t.Errorf("config storage.s3 %+v: want the bucket, its keys from the environment", s3)
	}

	c := podContainer(t, pod)
	u := advertised(t, c)
	if u.Scheme != "http" {
		t.Errorf("advertised %s: want http without TLS", u)
	}
	withAddr := cfg
	withAddr.Cluster.Advertise = u.String()
	if err := withAddr.Validate(); err != nil {
		t.Errorf("Breakwater refuses the configuration with --advertise %s: %v", u, err)
	}
	if env := sharedStorageEnv(t, c); len(env) != 2 {
		t.Errorf("AWS_ env %v: want the S3 keys from sharedStorage", keys(env))
	}

	// The peer secret: the chart's own Secret; Redis's password: the user's.
	_, peer := secretMount(t, pod, cfg.Cluster.SecretFile)
	if peer.SecretName != fullname+"-cluster" || peer.Items[0].Key != "secret" {
		t.Errorf("peer secret volume %+v: want Secret %s-cluster's key secret", peer, fullname)
	}
	_, pw := secretMount(t, pod, cfg.Redis.PasswordFile)
	if pw.SecretName != "breakwater-redis" || pw.Items[0].Key != "password" {
		t.Errorf("Redis password volume %+v: want Secret breakwater-redis's key password", pw)
	}
	if len(r.secrets) != 1 || r.secrets[0].Name != fullname+"-cluster" {
		t.Fatalf("Secrets %+v: want the generated %s-cluster only", r.secrets, fullname)
	}
	// helm template cannot look the Secret up: its value is new on every
	// render, and only its shape is checked.
	if s := r.secrets[0].Data["secret"]; len(s) < 32 {
		t.Errorf("generated peer secret of %d bytes, want 32 or more", len(s))
	}

	// The cache: an emptyDir under a sizeLimit above max_size; no claim.
	var cache *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil || v.Ephemeral != nil {
			t.Errorf("volume %s is a claim in a fleet", v.Name)
		}
		if v.Name == "cache" {
			cache = &pod.Spec.Volumes[i]
		}
	}
	if cache == nil || cache.EmptyDir == nil || cache.EmptyDir.SizeLimit == nil || cache.EmptyDir.SizeLimit.String() != "50Gi" {
		t.Fatalf("cache volume %+v: want an emptyDir of 50Gi", cache)
	}
	if int64(cfg.Cache.MaxSize) <= 0 || int64(cfg.Cache.MaxSize) >= cache.EmptyDir.SizeLimit.Value() {
		t.Errorf("cache.max_size %d must be set and below the emptyDir's %s", cfg.Cache.MaxSize, cache.EmptyDir.SizeLimit)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || (m.Name == "cache" && m.MountPath == cfg.Cache.Dir && !m.ReadOnly)
	}
	if !mounted {
		t.Errorf("mounts %+v: want the cache writable at cache.dir %s", c.VolumeMounts, cfg.Cache.Dir)
	}

	// The Services: the main one, and the peers' headless one in place of
	// the StatefulSet's; neither scraped twice.
	for _, s := range r.services {
		if s.Name == fullname+"-headless" {
			t.Errorf("the StatefulSet's governing Service %s rendered in a fleet", s.Name)
		}
	}
	svc := r.service(t, fullname)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Errorf("Service %s selector %v does not select the pods %v", svc.Name, svc.Spec.Selector, podLabels)
	}
	peers := r.service(t, fullname+"-peers")
	if peers.Spec.ClusterIP != corev1.ClusterIPNone || peers.Spec.PublishNotReadyAddresses ||
		!labels.SelectorFromSet(peers.Spec.Selector).Matches(labels.Set(podLabels)) ||
		len(peers.Spec.Ports) != 1 || peers.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("peers Service spec %+v: want headless, ready pods only, over the pods' http port", peers.Spec)
	}
	sm := r.serviceMonitors[0]
	if !matches(t, &sm.Spec.Selector, svc.Labels) || matches(t, &sm.Spec.Selector, peers.Labels) {
		t.Errorf("ServiceMonitor selector %+v: want the main Service only", sm.Spec.Selector)
	}

	if len(r.pdbs) != 1 || !matches(t, r.pdbs[0].Spec.Selector, podLabels) {
		t.Errorf("PDBs %+v: want one over the fleet's pods", r.pdbs)
	}
	spread := pod.Spec.TopologySpreadConstraints
	if len(spread) != 2 {
		t.Fatalf("topologySpreadConstraints %+v: want zone and hostname", spread)
	}
	for i, key := range []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"} {
		s := spread[i]
		if s.TopologyKey != key || s.MaxSkew != 1 || s.WhenUnsatisfiable != corev1.ScheduleAnyway || !matches(t, s.LabelSelector, podLabels) {
			t.Errorf("topologySpreadConstraints[%d] %+v: want %s, maxSkew 1, ScheduleAnyway, over the pods", i, s, key)
		}
	}

	// The pod template does not change with the generated secret: a render
	// without the Secret to look up rolls no pods.
	again := decodeAll(t, template(t, chartDir, append([]string{"-f", values}, monitoringValues...)...)).deployment(t)
	if !reflect.DeepEqual(again.Spec, d.Spec) {
		t.Error("the Deployment differs between two renders: every helm template would roll the pods")
	}
	if got := keys(pod.Annotations); !reflect.DeepEqual(got, []string{"checksum/config"}) {
		t.Errorf("pod annotations %v: want checksum/config only", got)
	}
}

func TestFleetVariants(t *testing.T) {
	values := writeValues(t, fleetValues)
	fleet := func(t *testing.T, more ...string) rendered {
		t.Helper()
		return decodeAll(t, template(t, chartDir, append([]string{"-f", values}, more...)...))
	}
	t.Run("a peer secret of the user's", func(t *testing.T) {
		r := fleet(t, "--set", "fleet.existingSecret=peer-secret", "--set", "fleet.existingSecretKey=token")
		if len(r.secrets) != 0 {
			t.Errorf("Secrets %+v rendered beside fleet.existingSecret", r.secrets)
		}
		cfg := r.breakwaterConfig(t)
		if _, s := secretMount(t, r.deployment(t).Spec.Template, cfg.Cluster.SecretFile); s.SecretName != "peer-secret" || s.Items[0].Key != "token" {
			t.Errorf("peer secret volume %+v: want Secret peer-secret's key token", s)
		}
	})
	t.Run("TLS and another port", func(t *testing.T) {
		r := fleet(t, "--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls", "--set", "config.listen=:8443")
		c := podContainer(t, r.deployment(t).Spec.Template)
		u := advertised(t, c)
		if u.Scheme != "https" || u.Port() != "8443" {
			t.Errorf("advertised %s: want https on 8443", u)
		}
		// The pod IP is in no certificate: peers verify the peers
		// Service's name, against the TLS Secret's CA.
		cfg := r.breakwaterConfig(t)
		want := config.Cluster{SecretFile: "/etc/breakwater-cluster/secret", ServerName: fullname + "-peers." + namespace + ".svc", CAFile: "/etc/breakwater-tls/ca.crt"}
		if cfg.Cluster != want {
			t.Errorf("config cluster %+v, want %+v", cfg.Cluster, want)
		}
		cfg.Cluster.Advertise = u.String()
		if err := cfg.Validate(); err != nil {
			t.Errorf("Breakwater refuses the configuration with --advertise %s: %v", u, err)
		}
	})
	t.Run("mutual TLS, a public certificate of the user's name", func(t *testing.T) {
		r := fleet(t, "--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls", "--set", "tls.clientCA.enabled=true",
			"--set", "fleet.peerTLS.systemCAs=true", "--set", "fleet.peerTLS.serverName=mirror.example.com")
		cfg := r.breakwaterConfig(t)
		want := config.Cluster{SecretFile: "/etc/breakwater-cluster/secret", ServerName: "mirror.example.com",
			CertFile: "/etc/breakwater-tls/tls.crt", KeyFile: "/etc/breakwater-tls/tls.key"}
		if cfg.Cluster != want {
			t.Errorf("config cluster %+v, want %+v: each replica shows its own certificate to the others", cfg.Cluster, want)
		}
		cfg.Cluster.Advertise = advertised(t, podContainer(t, r.deployment(t).Spec.Template)).String()
		if err := cfg.Validate(); err != nil {
			t.Errorf("Breakwater refuses the configuration: %v", err)
		}
	})
	t.Run("spread of the user's", func(t *testing.T) {
		r := fleet(t, "--set", "topologySpreadConstraints[0].maxSkew=2", "--set", "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
			"--set", "topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule")
		spread := r.deployment(t).Spec.Template.Spec.TopologySpreadConstraints
		if len(spread) != 1 || spread[0].MaxSkew != 2 || spread[0].WhenUnsatisfiable != corev1.DoNotSchedule {
			t.Errorf("topologySpreadConstraints %+v: want the values' only", spread)
		}
	})
	t.Run("no sizeLimit, one replica, Redis's password inline", func(t *testing.T) {
		r := fleet(t, "--set", "fleet.cacheSizeLimit=", "--set", "replicaCount=1",
			"--set", "fleet.redisPasswordSecret=", "--set", "config.redis.password=hunter2")
		d := r.deployment(t)
		if *d.Spec.Replicas != 1 {
			t.Errorf("replicas %d, want 1: still a fleet", *d.Spec.Replicas)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == "cache" && (v.EmptyDir == nil || v.EmptyDir.SizeLimit != nil) {
				t.Errorf("cache volume %+v: want an emptyDir without sizeLimit", v.VolumeSource)
			}
			if v.Name == "redis-password" {
				t.Error("a Redis password volume without fleet.redisPasswordSecret")
			}
		}
		if cfg := r.breakwaterConfig(t); cfg.Redis.Password != "hunter2" || cfg.Redis.PasswordFile != "" {
			t.Errorf("config redis %+v: want the values' password", cfg.Redis)
		}
	})
	t.Run("network policy", func(t *testing.T) {
		for name, tc := range map[string]struct {
			values       string
			peersAllowed bool // in ingress from and egress to
		}{
			"from anywhere and egress open": {"", false},
			"from the nodes and egress restricted": {"networkPolicy:\n  ingressFrom:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n" +
				"  egress:\n    - ports:\n        - port: 53\n          protocol: UDP\n", true},
		} {
			t.Run(name, func(t *testing.T) {
				r := fleet(t, "--set", "networkPolicy.enabled=true", "-f", writeValues(t, tc.values))
				np := r.networkPolicies[0]
				podLabels := r.deployment(t).Spec.Template.Labels
				if len(np.Spec.Ingress) != 1 {
					t.Fatalf("ingress %+v: want one rule", np.Spec.Ingress)
				}
				from := np.Spec.Ingress[0].From
				if !tc.peersAllowed {
					if from != nil || np.Spec.Egress != nil {
						t.Errorf("ingress from %+v, egress %+v: want neither restricted", from, np.Spec.Egress)
					}
					return
				}
				if len(from) != 2 || from[1].PodSelector == nil || !matches(t, from[1].PodSelector, podLabels) {
					t.Errorf("ingress from %+v: want the values' peer and the fleet's pods", from)
				}
				eg := np.Spec.Egress
				if len(eg) != 2 || len(eg[1].To) != 1 || eg[1].To[0].PodSelector == nil || !matches(t, eg[1].To[0].PodSelector, podLabels) ||
					len(eg[1].Ports) != 1 || eg[1].Ports[0].Port.IntValue() != 5000 {
					t.Errorf("egress %+v: want the values' rule and the fleet's pods on 5000", eg)
				}
			})
		}
	})
}

// Without both a bucket and Redis there is no fleet: replicas of their
// own, as before, with no trace of the fleet's wiring, whatever the
// fleet values say.
func TestNotFleet(t *testing.T) {
	defaults := decodeAll(t, template(t, chartDir)).statefulSet(t)
	for name, values := range map[string][]string{
		"defaults":                {},
		"three replicas":          {"--set", "replicaCount=3"},
		"a bucket without Redis":  sharedStorageValues,
		"fleet values, no fleet":  {"--set", "fleet.cacheSizeLimit=1Gi", "--set", "fleet.existingSecretKey=k", "--set", "fleet.redisPasswordKey=k"},
		"Redis's config, no addr": {"--set", "config.redis.db=2"},
	} {
		t.Run(name, func(t *testing.T) {
			r := decodeAll(t, template(t, chartDir, values...))
			sts := r.statefulSet(t)
			if len(sts.Spec.VolumeClaimTemplates) != 1 {
				t.Errorf("volumeClaimTemplates %+v: want the cache's", sts.Spec.VolumeClaimTemplates)
			}
			c := container(t, sts)
			if want := []string{"serve", "--config", "/etc/breakwater/config.yaml"}; !reflect.DeepEqual(c.Args, want) {
				t.Errorf("args %q, want %q", c.Args, want)
			}
			for _, e := range c.Env {
				if e.Name == "POD_IP" {
					t.Error("env POD_IP outside a fleet")
				}
			}
			for _, v := range sts.Spec.Template.Spec.Volumes {
				if v.Name == "cluster-secret" || v.Name == "redis-password" {
					t.Errorf("volume %s outside a fleet", v.Name)
				}
			}
			if sts.Spec.Template.Spec.TopologySpreadConstraints != nil {
				t.Errorf("topologySpreadConstraints %+v outside a fleet", sts.Spec.Template.Spec.TopologySpreadConstraints)
			}
			r.service(t, fullname+"-headless")
			for _, s := range r.services {
				if s.Name == fullname+"-peers" {
					t.Error("the peers Service outside a fleet")
				}
			}
			for _, s := range r.secrets {
				if s.Name == fullname+"-cluster" {
					t.Error("a peer secret outside a fleet")
				}
			}
			if cfg := r.breakwaterConfig(t); cfg.Cluster != (config.Cluster{}) {
				t.Errorf("config cluster %+v outside a fleet", cfg.Cluster)
			}
			if name == "fleet values, no fleet" && !reflect.DeepEqual(sts, defaults) {
				t.Error("fleet values change the StatefulSet outside a fleet")
			}
		})
	}
}

// What the chart sets in a fleet the user may not, and what would make a
// fleet of half its parts, the chart refuses, naming the value.
func TestFleetRefused(t *testing.T) {
	values := writeValues(t, fleetValues)
	for name, tc := range map[string]struct {
		values []string
		want   string
	}{
		"Redis without a bucket": {[]string{"--set", "config.redis.addr=redis:6379"},
			`config.redis.addr "redis:6379": needs config.storage.s3 (or .gcs, .azure) as well: the chart runs a fleet (a Deployment whose replicas keep their caches in emptyDirs) only around a bucket its replicas share (charts/README.md, "Running a fleet")`},
		"an advertised address of the user's": {[]string{"-f", values, "--set", "config.cluster.advertise=http://10.0.0.5:5000"},
			`config.cluster.advertise "http://10.0.0.5:5000": leave it unset: in a fleet (config.storage.s3, .gcs or .azure, and config.redis.addr) the chart passes each pod its own address, --advertise http://$(POD_IP):5000`},
		"an advertised address, no fleet": {[]string{"--set", "config.cluster.advertise=http://10.0.0.5:5000"},
			`config.cluster.advertise "http://10.0.0.5:5000": leave it unset`},
		"a secret file of the user's": {[]string{"-f", values, "--set", "config.cluster.secret_file=/etc/peer/secret"},
			`config.cluster.secret_file "/etc/peer/secret": leave it unset: in a fleet (config.storage.s3, .gcs or .azure, and config.redis.addr) the chart mounts the peer secret (fleet.existingSecret, or a Secret it generates) and points secret_file at it`},
		"a peer Secret without a fleet": {[]string{"--set", "fleet.existingSecret=peer"},
			`fleet.existingSecret: needs a fleet, config.storage.s3 (or .gcs, .azure) and config.redis.addr (charts/README.md, "Running a fleet")`},
		"a Redis password Secret without a fleet": {append([]string{"--set", "fleet.redisPasswordSecret=redis"}, sharedStorageValues...),
			`fleet.redisPasswordSecret: needs a fleet, config.storage.s3 (or .gcs, .azure) and config.redis.addr`},
		"Redis's password inline as well": {[]string{"-f", values, "--set", "config.redis.password=hunter2"},
			"fleet.redisPasswordSecret: config.redis.password is set as well; leave the password to fleet.redisPasswordSecret, which sets redis.password_file"},
		"Redis's password file as well": {[]string{"-f", values, "--set", "config.redis.password_file=/etc/redis/password"},
			"fleet.redisPasswordSecret: config.redis.password_file is set as well"},
		"a cache larger than its emptyDir": {[]string{"-f", values, "--set", "fleet.cacheSizeLimit=40Gi"},
			"config.cache.max_size 45GiB: must be set and below fleet.cacheSizeLimit (40Gi): each replica's cache is an emptyDir of that sizeLimit, which the kubelet evicts the pod for outgrowing"},
	} {
		t.Run(name, func(t *testing.T) { refused(t, tc.want, tc.values...) })
	}
}

// The kubelet evicts a pod whose emptyDir outgrows its sizeLimit; eviction
// keeps Breakwater's cache under config.cache.max_size. The chart refuses
// a max_size that is not below the limit, deciding as config.ParseSize and
// Kubernetes' quantities do (K, M, G, T are powers of 1024 in one, of 1000
// in the other).
func TestFleetCacheSizeLimit(t *testing.T) {
	values := writeValues(t, fleetValues)
	for _, tc := range []struct {
		maxSize any // a string, or a number in the values file
		limit   string
	}{
		{"45GiB", "50Gi"},
		{"45GiB", "40Gi"},
		{"50GiB", "50Gi"},
		{"53687091199", "50Gi"},
		{"50GB", "50Gi"},
		{"60GB", "55Gi"},
		{"1.5T", "1.6Ti"},
		{"1T", "1Ti"},
		{"900M", "1G"},
		{"960M", "1G"}, // 960 MiB is more than 1e9 bytes
		{"1T", "1099511627775"},
		{"1K", "1020"},
		{"100MB", "0.1G"},
		{"99 MB", "0.1G"},
		{"0", "50Gi"},
		{999, "1k"},
		{1000, "1k"},
		{int64(48318382080), "48318382081"},
		{"2TiB", "2.5Ti"},
		{"1TB", "1T"},
	} {
		t.Run(fmt.Sprintf("%v under %s", tc.maxSize, tc.limit), func(t *testing.T) {
			var size int64
			var yamlSize string
			switch v := tc.maxSize.(type) {
			case string:
				var err error
				if size, err = config.ParseSize(v); err != nil {
					t.Fatal(err)
				}
				yamlSize = fmt.Sprintf("%q", v)
			default:
				size = reflect.ValueOf(v).Int()
				yamlSize = fmt.Sprint(v)
			}
			limit := resource.MustParse(tc.limit)
			more := writeValues(t, fmt.Sprintf("fleet:\n  cacheSizeLimit: %q\nconfig:\n  cache:\n    max_size: %s\n", tc.limit, yamlSize))
			if size > 0 && size < limit.Value() {
				r := decodeAll(t, template(t, chartDir, "-f", values, "-f", more))
				if got := int64(r.breakwaterConfig(t).Cache.MaxSize); got != size {
					t.Errorf("max_size %d, want %d", got, size)
				}
				for _, v := range r.deployment(t).Spec.Template.Spec.Volumes {
					if v.Name == "cache" && (v.EmptyDir == nil || v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.Cmp(limit) != 0) {
						t.Errorf("cache volume %+v: want an emptyDir of %s", v.VolumeSource, tc.limit)
					}
				}
				return
			}
			refused(t, fmt.Sprintf("config.cache.max_size %v: must be set and below fleet.cacheSizeLimit (%s)", tc.maxSize, tc.limit), "-f", values, "-f", more)
		})
	}
}

// admissionValues turn the webhook on, with TLS and a CA bundle given.
var admissionValues = []string{"--set", "admission.enabled=true", "--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls",
	"--set", "admission.caBundle=Q0EK"}

// admission.enabled renders a ValidatingWebhookConfiguration that sends
// the pods (and with workloads the pod templates) of every namespace but
// the release's own to the chart's Service at the webhook's path, failing
// open by default, and turns the webhook on in Breakwater's configuration;
// the CA comes from caBundle or from cert-manager's cainjector.
func TestAdmissionWebhook(t *testing.T) {
	r := decodeAll(t, template(t, chartDir, admissionValues...))
	if len(r.webhooks) != 1 || len(r.webhooks[0].Webhooks) != 1 {
		t.Fatalf("webhook configurations %+v, want one with one webhook", r.webhooks)
	}
	wh := r.webhooks[0].Webhooks[0]
	svc := wh.ClientConfig.Service
	if svc == nil || svc.Name != fullname || svc.Namespace != namespace || svc.Path == nil || *svc.Path != "/_breakwater/v1/admission" ||
		svc.Port == nil || *svc.Port != r.service(t, fullname).Spec.Ports[0].Port || string(wh.ClientConfig.CABundle) != "CA\n" {
		t.Errorf("clientConfig %+v (caBundle %q): want the chart's Service, the webhook's path and port, the given CA", wh.ClientConfig, wh.ClientConfig.CABundle)
	}
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Ignore || wh.TimeoutSeconds == nil || *wh.TimeoutSeconds != 10 ||
		wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone {
		t.Errorf("webhook %+v: want failing open, 10 s, no side effects", wh)
	}
	sel := wh.NamespaceSelector
	if sel == nil || len(sel.MatchExpressions) != 1 || sel.MatchExpressions[0].Key != "kubernetes.io/metadata.name" ||
		sel.MatchExpressions[0].Operator != metav1.LabelSelectorOpNotIn || len(sel.MatchExpressions[0].Values) != 1 || sel.MatchExpressions[0].Values[0] != namespace {
		t.Errorf("namespaceSelector %+v: want every namespace but %s", sel, namespace)
	}
	if len(wh.Rules) != 1 || len(wh.Rules[0].Resources) != 2 || wh.Rules[0].Resources[0] != "pods" {
		t.Errorf("rules %+v: want pods (and their ephemeral containers) only", wh.Rules)
	}
	if cfg := r.breakwaterConfig(t); !cfg.Admission.Enabled {
		t.Error("config admission.enabled not set")
	}

	r = decodeAll(t, template(t, chartDir, append(admissionValues, "--set", "admission.caBundle=", "--set", "admission.certManagerCertificate=mirror/bw-tls",
		"--set", "admission.workloads=true", "--set", "admission.namespaceSelector.matchLabels.team=a")...))
	wh = r.webhooks[0].Webhooks[0]
	if r.webhooks[0].Annotations["cert-manager.io/inject-ca-from"] != "mirror/bw-tls" || len(wh.ClientConfig.CABundle) != 0 {
		t.Errorf("annotations %v, caBundle %q: want cert-manager's injection only", r.webhooks[0].Annotations, wh.ClientConfig.CABundle)
	}
	if len(wh.Rules) != 3 || wh.NamespaceSelector.MatchLabels["team"] != "a" {
		t.Errorf("rules %+v, selector %+v: want pods, apps and batch, and the values' labels", wh.Rules, wh.NamespaceSelector)
	}
}

func TestAdmissionWebhookRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		values []string
		want   string
	}{
		"without TLS": {[]string{"--set", "admission.enabled=true"}, "admission.enabled: needs tls.enabled"},
		"no CA anywhere": {[]string{"--set", "admission.enabled=true", "--set", "tls.enabled=true", "--set", "tls.secretName=bw-tls"},
			"admission.enabled: the API server needs the CA of Breakwater's certificate: set admission.caBundle"},
		"two CAs":             {append(admissionValues, "--set", "admission.certManagerCertificate=mirror/bw-tls"), "admission.caBundle and admission.certManagerCertificate: set one of them"},
		"the config's switch": {append(admissionValues, "--set", "config.admission.enabled=true"), "config.admission.enabled: leave it unset"},
	} {
		t.Run(name, func(t *testing.T) { refused(t, tc.want, tc.values...) })
	}
}

// watch.enabled renders breakwater watch's one-replica Deployment with a
// ServiceAccount of its own, whose pods no selector of the mirror's
// matches; its RBAC reads pods cluster-wide (a ClusterRole), or one
// namespace's (a Role) with watch.namespace, and deletes them and sets
// their status only when endAfter lets it end pods.
func TestWatch(t *testing.T) {
	podsRule := func(rules []rbacv1.PolicyRule) []string {
		for _, r := range rules {
			if len(r.Resources) == 1 && r.Resources[0] == "pods" {
				return r.Verbs
			}
		}
		return nil
	}
	hasStatus := func(rules []rbacv1.PolicyRule) bool {
		for _, r := range rules {
			if len(r.Resources) == 1 && r.Resources[0] == "pods/status" {
				return true
			}
		}
		return false
	}
	t.Run("reporting, cluster-wide", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, "--set", "watch.enabled=true"))
		if len(r.watchDeployments) != 1 {
			t.Fatalf("%d watch Deployments, want 1", len(r.watchDeployments))
		}
		d := r.watchDeployments[0]
		if d.Name != fullname+"-watch" || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Fatalf("watch Deployment %s %+v: want one replica, recreated", d.Name, d.Spec)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if strings.Join(c.Args, " ") != "watch --listen :9090 --end-after 0" || d.Spec.Template.Spec.ServiceAccountName != fullname+"-watch" {
			t.Errorf("args %q, service account %q", c.Args, d.Spec.Template.Spec.ServiceAccountName)
		}
		podLabels := d.Spec.Template.Labels
		if matches(t, &metav1.LabelSelector{MatchLabels: r.service(t, fullname).Spec.Selector}, podLabels) || matches(t, r.statefulSet(t).Spec.Selector, podLabels) {
			t.Errorf("the mirror's Service or StatefulSet selects the watch pod %v", podLabels)
		}
		if len(r.clusterRoles) != 1 || len(r.roles) != 0 || len(r.clusterBindings) != 1 {
			t.Fatalf("RBAC: %d ClusterRoles, %d Roles, %d ClusterRoleBindings; want one cluster-wide pair", len(r.clusterRoles), len(r.roles), len(r.clusterBindings))
		}
		if v := podsRule(r.clusterRoles[0].Rules); strings.Join(v, ",") != "get,list,watch" || hasStatus(r.clusterRoles[0].Rules) {
			t.Errorf("rules %+v: want pods read only, no status", r.clusterRoles[0].Rules)
		}
		b := r.clusterBindings[0]
		if b.RoleRef.Name != r.clusterRoles[0].Name || len(b.Subjects) != 1 || b.Subjects[0].Name != fullname+"-watch" || b.Subjects[0].Namespace != namespace {
			t.Errorf("binding %+v", b)
		}
	})
	t.Run("ending, one namespace", func(t *testing.T) {
		r := decodeAll(t, template(t, chartDir, "--set", "watch.enabled=true", "--set", "watch.endAfter=3", "--set", "watch.namespace=ci"))
		if len(r.roles) != 1 || len(r.clusterRoles) != 0 || r.roles[0].Namespace != "ci" || len(r.roleBindings) != 1 || r.roleBindings[0].Namespace != "ci" {
			t.Fatalf("RBAC: roles %+v, bindings %+v: want a Role and its binding in ci", r.roles, r.roleBindings)
		}
		if v := podsRule(r.roles[0].Rules); strings.Join(v, ",") != "get,list,watch,delete" || !hasStatus(r.roles[0].Rules) {
			t.Errorf("rules %+v: want pods deleted, their status updated", r.roles[0].Rules)
		}
	})
}
