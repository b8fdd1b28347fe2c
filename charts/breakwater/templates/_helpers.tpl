{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "breakwater.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "breakwater.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "breakwater.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "breakwater.selectorLabels" -}}
app.kubernetes.io/name: {{ include "breakwater.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "breakwater.labels" -}}
helm.sh/chart: {{ include "breakwater.chart" . }}
{{ include "breakwater.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "breakwater.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "breakwater.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "breakwater.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The port Breakwater listens on inside the pod: the port of config.listen,
so the container port, the probes and the Service always agree with it.
*/}}
{{- define "breakwater.containerPort" -}}
{{- $listen := toString (default ":5000" .Values.config.listen) }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if not $port }}
{{- fail (printf "config.listen %q: want host:port, e.g. \":5000\"" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The Service's DNS name inside the cluster. */}}
{{- define "breakwater.serviceHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "breakwater.fullname" .) .Release.Namespace }}
{{- end }}

{{/* http, or https with tls.enabled. */}}
{{- define "breakwater.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* The mirror URL containerd on the nodes uses (containerd.mirrorURL). */}}
{{- define "breakwater.mirrorURL" -}}
{{- if .Values.containerd.mirrorURL }}
{{- .Values.containerd.mirrorURL | trimSuffix "/" }}
{{- else if and .Values.service.clusterIP (ne .Values.service.clusterIP "None") }}
{{- printf "%s://%s:%v" (include "breakwater.scheme" .) .Values.service.clusterIP .Values.service.port }}
{{- else }}
{{- printf "%s://%s:%v" (include "breakwater.scheme" .) (include "breakwater.serviceHost" .) .Values.service.port }}
{{- end }}
{{- end }}

{{/*
Where the TLS Secret (tls.secretName) and a separate client CA Secret
(tls.clientCA.secretName) are mounted. Not under /etc/breakwater: that is
the ConfigMap's read-only volume, where no mount point can be made.
*/}}
{{- define "breakwater.tlsDir" -}}/etc/breakwater-tls{{- end }}
{{- define "breakwater.clientCADir" -}}/etc/breakwater-client-ca{{- end }}


{{/*
The registry URL containerd knows a host by (hosts.toml's server): Docker
Hub's API host for docker.io; the upstream's URL when it is that same host
(a plain-HTTP registry stays http); https://<host> otherwise. The same rule
as `breakwater containerd-config`. Takes (dict "host" H "url" U).
*/}}
{{- define "breakwater.registryServer" -}}
{{- $u := urlParse (toString (default "" .url)) }}
{{- if has .host (list "docker.io" "index.docker.io" "registry-1.docker.io") }}
{{- "https://registry-1.docker.io" }}
{{- else if and (has $u.scheme (list "http" "https")) (eq (lower $u.host) (lower .host)) }}
{{- printf "%s://%s" $u.scheme $u.host }}
{{- else }}
{{- printf "https://%s" .host }}
{{- end }}
{{- end }}

{{/* Label matchers scoping the alert rules to this release's series. */}}
{{- define "breakwater.metricSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "breakwater.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
A probe's handler: GET path on the http port, over HTTPS with TLS; a TCP
connect under mutual TLS. Takes (dict "path" P "tls" BOOL "mutual" BOOL).
*/}}
{{- define "breakwater.probe" -}}
{{- if .mutual -}}
tcpSocket:
  port: http
{{- else -}}
httpGet:
  path: {{ .path }}
  port: http
  {{- if .tls }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}

{{/* Where the htpasswd file is mounted, and the chart's Secret for it. */}}
{{- define "breakwater.htpasswdDir" -}}/etc/breakwater-auth{{- end }}
{{- define "breakwater.htpasswdSecret" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-htpasswd" (include "breakwater.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* "true" when the release has an htpasswd file (auth.existingSecret or auth.htpasswd). */}}
{{- define "breakwater.authEnabled" -}}
{{- if or .Values.auth.existingSecret .Values.auth.htpasswd }}true{{ end }}
{{- end }}

{{/*
Breakwater's config.yaml: values.config, with config.tls set to the mounted
TLS Secret's files when tls.enabled and auth.htpasswd pointing at the
mounted htpasswd file when the release has one. What Breakwater would refuse
at start about those blocks is refused here, at install.
*/}}
{{- define "breakwater.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $tls := .Values.tls }}
{{- if $tls.clientCA.enabled }}
{{- if not $tls.enabled }}
{{- fail "tls.clientCA.enabled: mutual TLS needs tls.enabled" }}
{{- end }}
{{- end }}
{{- if $tls.enabled }}
{{- if not $tls.secretName }}
{{- fail "tls.secretName: required with tls.enabled (a Secret with tls.crt and tls.key, as cert-manager writes it)" }}
{{- end }}
{{- if $config.tls }}
{{- fail "config.tls: leave it unset with tls.enabled, which sets it to the mounted Secret's files" }}
{{- end }}
{{- $files := dict "cert_file" (printf "%s/tls.crt" (include "breakwater.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "breakwater.tlsDir" .)) }}
{{- if $tls.clientCA.enabled }}
{{- $caDir := include "breakwater.tlsDir" . }}
{{- if $tls.clientCA.secretName }}
{{- $caDir = include "breakwater.clientCADir" . }}
{{- end }}
{{- $_ := set $files "client_ca_file" (printf "%s/ca.crt" $caDir) }}
{{- end }}
{{- $_ := set $config "tls" $files }}
{{- end }}
{{- $auth := default (dict) $config.auth }}
{{- if and .Values.auth.existingSecret .Values.auth.htpasswd }}
{{- fail "auth.existingSecret and auth.htpasswd: set one of them" }}
{{- end }}
{{- if include "breakwater.authEnabled" . }}
{{- if $auth.htpasswd }}
{{- fail (printf "config.auth.htpasswd %q: leave it unset with auth.existingSecret or auth.htpasswd; the chart points it at the mounted file" (toString $auth.htpasswd)) }}
{{- end }}
{{- if not $auth.access }}
{{- fail "config.auth.access: required with auth.existingSecret or auth.htpasswd: with an htpasswd file and no access list nobody may pull anything (README.md, \"Client authentication\")" }}
{{- end }}
{{- $_ := set $auth "htpasswd" (printf "%s/htpasswd" (include "breakwater.htpasswdDir" .)) }}
{{- $_ := set $config "auth" $auth }}
{{- else if and (or $auth.access $auth.groups) (not $auth.htpasswd) }}
{{- fail "config.auth.access or config.auth.groups without an htpasswd file: set auth.existingSecret or auth.htpasswd (without one Breakwater is open to everyone)" }}
{{- end }}
{{- range $i, $line := splitList "\n" (toString .Values.auth.htpasswd) }}
{{- $l := trim $line }}
{{- if and $l (not (hasPrefix "#" $l)) (not (regexMatch "^[^:\\s]+:\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{53}$" $l)) }}
{{- fail (printf "auth.htpasswd: line %d: not a user:bcrypt-hash line (only bcrypt is accepted: create it with htpasswd -B)" (add1 $i)) }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}
