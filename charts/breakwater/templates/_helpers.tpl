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

{{/*
Where upstreamCredentials.<host>'s Secret is mounted: a directory of its
own per upstream (a port's colon becomes "_"), holding the Secret's key as
the file "password". A whole directory and not a subPath, which the kubelet
never updates: a rotated Secret reaches the file, and Breakwater re-reads
password_file whenever it changes.
*/}}
{{- define "breakwater.upstreamCredentialsDir" -}}
{{- printf "/etc/breakwater-upstreams/%s" (replace ":" "_" (toString .)) }}
{{- end }}

{{/*
The pod volume of upstreamCredentials' entry number .i (in host order): a
DNS label of at most 63 characters, "upstream-<i>-<host, dots and colon as
dashes>"; the index keeps names apart that truncation would make equal.
Takes (dict "i" I "host" H).
*/}}
{{- define "breakwater.upstreamCredentialsVolume" -}}
{{- $name := printf "upstream-%d-%s" .i (regexReplaceAll "[^a-z0-9-]+" (lower .host) "-") | trunc 63 }}
{{- regexReplaceAll "-+$" $name "" }}
{{- end }}

{{/*
A Go duration (30s, 1m30s, 500ms) in seconds, as a float: what
terminationGracePeriodSeconds is compared with. The schema has already
refused anything that is not a duration.
*/}}
{{- define "breakwater.durationSeconds" -}}
{{- $unit := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . }}
{{- $total = addf $total (mulf (float64 $num) (get $unit (trimPrefix $num .))) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
The hosts.toml DaemonSet (nodeConfig.enabled): its name, and its pods'
labels, which must not match the StatefulSet's selector (so the Service,
the PodDisruptionBudget and the NetworkPolicy leave them alone).
*/}}
{{- define "breakwater.nodeConfigName" -}}
{{- printf "%s-node-config" (include "breakwater.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "breakwater.nodeConfigSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-node-config" (include "breakwater.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-config
{{- end }}

{{- define "breakwater.pauseImage" -}}
{{- $i := .Values.nodeConfig.pauseImage }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository (toString $i.tag) }}
{{- end }}
{{- end }}

{{/*
The configuration `breakwater containerd-config` reads in the DaemonSet:
the upstreams' hosts and URLs (all hosts.toml needs), nothing else. No
credentials, no htpasswd path: nothing on the nodes but what they need.
*/}}
{{- define "breakwater.nodeConfig" -}}
{{- $upstreams := dict }}
{{- range $host, $up := .Values.config.upstreams }}
{{- $_ := set $upstreams $host (dict "url" $up.url) }}
{{- end }}
{{- $config := dict "upstreams" $upstreams }}
{{- with .Values.config.default_upstream }}
{{- $_ := set $config "default_upstream" . }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* "true" when the release has an htpasswd file (auth.existingSecret or auth.htpasswd). */}}
{{- define "breakwater.authEnabled" -}}
{{- if or .Values.auth.existingSecret .Values.auth.htpasswd }}true{{ end }}
{{- end }}

{{/*
The object store the replicas share, by its block in config.storage: "s3",
"gcs", "azure", or "" for none. Breakwater takes one at most, and so does
the chart.
*/}}
{{- define "breakwater.sharedStore" -}}
{{- $storage := default (dict) .Values.config.storage }}
{{- $set := list }}
{{- range $name := list "s3" "gcs" "azure" }}
{{- if index $storage $name }}
{{- $set = append $set $name }}
{{- end }}
{{- end }}
{{- if gt (len $set) 1 }}
{{- fail (printf "config.storage: %s are set: set one of them, the one object store the replicas share" (join " and " $set)) }}
{{- end }}
{{- join "" $set }}
{{- end }}

{{/* Where sharedStorage's Secret is mounted for gcs's key file or azure's account key. */}}
{{- define "breakwater.storageSecretDir" -}}/etc/breakwater-storage{{- end }}

{{/*
"true" in fleet mode: a shared store (config.storage.s3, .gcs or .azure)
and config.redis.addr both set (docs/fleet.md; charts/README.md, "Running
a fleet"). The replicas then run as a Deployment, their caches in
emptyDirs (the bucket is the store that lasts), each advertising its pod's
address to the others, with the secret they share and Redis's password
from Secrets. replicaCount does not count: scaling a fleet to one replica
and back must not swap its kind of workload.
*/}}
{{- define "breakwater.fleet" -}}
{{- if and (include "breakwater.sharedStore" .) (default (dict) .Values.config.redis).addr }}true{{ end }}
{{- end }}

{{/*
In a fleet: where the peer secret and Redis's password are mounted (each a
directory: a subPath never sees a rotated Secret), the Secret holding the
peer secret (fleet.existingSecret, or the chart's), and the headless
Service listing the ready replicas. Names keep within 63 characters
without ever becoming the release's own name.
*/}}
{{- define "breakwater.clusterSecretDir" -}}/etc/breakwater-cluster{{- end }}
{{- define "breakwater.redisPasswordDir" -}}/etc/breakwater-redis{{- end }}
{{- define "breakwater.clusterSecret" -}}
{{- if .Values.fleet.existingSecret }}
{{- .Values.fleet.existingSecret }}
{{- else }}
{{- printf "%s-cluster" (include "breakwater.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
{{- end }}
{{- define "breakwater.peersService" -}}
{{- printf "%s-peers" (include "breakwater.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
The URL a fleet's replica advertises to the others: its pod's address
(POD_IP, from the downward API; the kubelet expands $(POD_IP) in the
arguments) and Breakwater's port, https with tls.enabled.
*/}}
{{- define "breakwater.advertiseURL" -}}
{{- printf "%s://$(POD_IP):%s" (include "breakwater.scheme" .) (include "breakwater.containerPort" .) }}
{{- end }}

{{/*
Bytes in a Kubernetes quantity (fleet.cacheSizeLimit: 50Gi, 500M), and in
one of Breakwater's sizes (config.cache.max_size: 45GiB, 10GB, 512M, a
number), as config.ParseSize reads it: K, M, G, T are powers of 1024 there.
The schema has already refused anything else.
*/}}
{{- define "breakwater.quantityBytes" -}}
{{- $q := toString . }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $unit := dict "" 1.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "P" 1000000000000000.0 "E" 1000000000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- mulf (float64 $num) (get $unit (trimPrefix $num $q)) }}
{{- end }}
{{- define "breakwater.sizeBytes" -}}
{{- if kindIs "string" . }}
{{- $s := trim . }}
{{- $num := regexFind "^[0-9.]+" $s }}
{{- $unit := dict "" 1.0 "B" 1.0 "KB" 1000.0 "MB" 1000000.0 "GB" 1000000000.0 "TB" 1000000000000.0 "KiB" 1024.0 "MiB" 1048576.0 "GiB" 1073741824.0 "TiB" 1099511627776.0 "K" 1024.0 "M" 1048576.0 "G" 1073741824.0 "T" 1099511627776.0 }}
{{- mulf (float64 $num) (get $unit (trim (trimPrefix $num $s))) }}
{{- else }}
{{- float64 (default 0 .) }}
{{- end }}
{{- end }}

{{/*
Breakwater's config.yaml: values.config, with config.tls set to the mounted
TLS Secret's files when tls.enabled, auth.htpasswd pointing at the mounted
htpasswd file when the release has one, and each upstream of
upstreamCredentials given its username and a password_file in its mounted
Secret. What Breakwater would refuse at start about those blocks is refused
here, at install; so are keys in config.storage's store beside
sharedStorage's Secret, and a grace period that would cut the drain short.
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
{{- if .Values.admission.enabled }}
{{- $adm := default (dict) $config.admission }}
{{- if hasKey $adm "enabled" }}
{{- fail "config.admission.enabled: leave it unset: admission.enabled sets it, with the webhook's configuration" }}
{{- end }}
{{- $_ := set $adm "enabled" true }}
{{- $_ := set $config "admission" $adm }}
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
{{- $upstreams := default (dict) $config.upstreams }}
{{- range $host := keys .Values.upstreamCredentials | sortAlpha }}
{{- $cred := default (dict) (index $.Values.upstreamCredentials $host) }}
{{- if not (hasKey $upstreams $host) }}
{{- fail (printf "upstreamCredentials.%s: %q is not an upstream of config.upstreams (%s); add it there with its url" $host $host (keys $upstreams | sortAlpha | join ", ")) }}
{{- end }}
{{- if not $cred.username }}
{{- fail (printf "upstreamCredentials.%s.username: required (the user the password in existingSecret belongs to)" $host) }}
{{- end }}
{{- if not $cred.existingSecret }}
{{- fail (printf "upstreamCredentials.%s.existingSecret: required (the Secret holding the password, under passwordKey)" $host) }}
{{- end }}
{{- $up := default (dict) (index $upstreams $host) }}
{{- range $key := list "username" "password" "password_file" "docker_config" "credential_helper" }}
{{- if index $up $key }}
{{- fail (printf "upstreamCredentials.%s: config.upstreams.%s.%s is set as well; leave the upstream's credentials to upstreamCredentials, which sets username and password_file" $host $host $key) }}
{{- end }}
{{- end }}
{{- $_ := set $up "username" (toString $cred.username) }}
{{- $_ := set $up "password_file" (printf "%s/password" (include "breakwater.upstreamCredentialsDir" $host)) }}
{{- $_ := set $upstreams $host $up }}
{{- end }}
{{- /*
sharedStorage.existingSecret gives the store's driver its keys, as their
only keys: s3's through the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY), gcs's key file and azure's account key as files
of the Secret mounted in the pod, which config.storage.gcs.keyfile and
config.storage.azure.accountkey_file are pointed at.
*/}}
{{- if .Values.sharedStorage.existingSecret }}
{{- $store := include "breakwater.sharedStore" . }}
{{- $block := index (default (dict) $config.storage) (default "none" $store) }}
{{- $dir := include "breakwater.storageSecretDir" . }}
{{- if not $store }}
{{- fail "sharedStorage.existingSecret: needs config.storage.s3 (or .gcs, .azure), the bucket the replicas share (docs/fleet.md), e.g. config.storage.s3.bucket and .region (or .regionendpoint)" }}
{{- else if eq $store "s3" }}
{{- range $key := list "accesskey" "secretkey" "secretkey_file" }}
{{- if index $block $key }}
{{- fail (printf "sharedStorage.existingSecret: config.storage.s3.%s is set as well; leave the keys to sharedStorage, which sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the Secret" $key) }}
{{- end }}
{{- end }}
{{- else if eq $store "gcs" }}
{{- if $block.keyfile }}
{{- fail "sharedStorage.existingSecret: config.storage.gcs.keyfile is set as well; leave it to sharedStorage, which mounts the Secret's key file (sharedStorage.keyfileKey) and points keyfile at it" }}
{{- end }}
{{- $_ := set $block "keyfile" (printf "%s/key.json" $dir) }}
{{- else }}
{{- range $key := list "accountkey" "accountkey_file" }}
{{- if index $block $key }}
{{- fail (printf "sharedStorage.existingSecret: config.storage.azure.%s is set as well; leave the key to sharedStorage, which mounts the Secret's account key (sharedStorage.accountKeyKey) and points accountkey_file at it" $key) }}
{{- end }}
{{- end }}
{{- $creds := default (dict) $block.credentials }}
{{- if and $creds.type (ne (toString $creds.type) "shared_key") }}
{{- fail (printf "sharedStorage.existingSecret: config.storage.azure.credentials.type %q: the Secret holds the account's key, which only type shared_key uses" (toString $creds.type)) }}
{{- end }}
{{- $_ := set $creds "type" "shared_key" }}
{{- $_ := set $block "credentials" $creds }}
{{- $_ := set $block "accountkey_file" (printf "%s/accountkey" $dir) }}
{{- end }}
{{- end }}
{{- /*
A fleet (a shared store and config.redis.addr): the chart passes each
pod its own address (--advertise) and points cluster.secret_file at the
mounted peer secret, and redis.password_file at fleet.redisPasswordSecret's
password; the user sets neither. Redis without a shared store is no fleet
the chart runs; fleet Secrets without a fleet have nothing to go to. And
an emptyDir cache must hold config.cache.max_size: the kubelet evicts a
pod whose emptyDir outgrows its sizeLimit.
*/}}
{{- $fleet := include "breakwater.fleet" . }}
{{- $redis := default (dict) $config.redis }}
{{- $cluster := default (dict) $config.cluster }}
{{- if and $redis.addr (not $fleet) }}
{{- fail (printf "config.redis.addr %q: needs config.storage.s3 (or .gcs, .azure) as well: the chart runs a fleet (a Deployment whose replicas keep their caches in emptyDirs) only around a bucket its replicas share (charts/README.md, \"Running a fleet\")" (toString $redis.addr)) }}
{{- end }}
{{- with $cluster.advertise }}
{{- fail (printf "config.cluster.advertise %q: leave it unset: in a fleet (config.storage.s3, .gcs or .azure, and config.redis.addr) the chart passes each pod its own address, --advertise %s" (toString .) (include "breakwater.advertiseURL" $)) }}
{{- end }}
{{- with $cluster.secret_file }}
{{- fail (printf "config.cluster.secret_file %q: leave it unset: in a fleet (config.storage.s3, .gcs or .azure, and config.redis.addr) the chart mounts the peer secret (fleet.existingSecret, or a Secret it generates) and points secret_file at it" (toString .)) }}
{{- end }}
{{- if not $fleet }}
{{- range $key := list "existingSecret" "redisPasswordSecret" }}
{{- if index $.Values.fleet $key }}
{{- fail (printf "fleet.%s: needs a fleet, config.storage.s3 (or .gcs, .azure) and config.redis.addr (charts/README.md, \"Running a fleet\")" $key) }}
{{- end }}
{{- end }}
{{- else }}
{{- $clusterConfig := dict "secret_file" (printf "%s/secret" (include "breakwater.clusterSecretDir" .)) }}
{{- if $tls.enabled }}
{{- $peer := .Values.fleet.peerTLS }}
{{- $_ := set $clusterConfig "server_name" (default (printf "%s.%s.svc" (include "breakwater.peersService" .) .Release.Namespace) $peer.serverName) }}
{{- if not $peer.systemCAs }}
{{- $_ := set $clusterConfig "ca_file" (printf "%s/ca.crt" (include "breakwater.tlsDir" .)) }}
{{- end }}
{{- if $tls.clientCA.enabled }}
{{- $_ := set $clusterConfig "cert_file" (printf "%s/tls.crt" (include "breakwater.tlsDir" .)) }}
{{- $_ := set $clusterConfig "key_file" (printf "%s/tls.key" (include "breakwater.tlsDir" .)) }}
{{- end }}
{{- end }}
{{- $_ := set $config "cluster" $clusterConfig }}
{{- if .Values.fleet.redisPasswordSecret }}
{{- range $key := list "password" "password_file" }}
{{- if index $redis $key }}
{{- fail (printf "fleet.redisPasswordSecret: config.redis.%s is set as well; leave the password to fleet.redisPasswordSecret, which sets redis.password_file" $key) }}
{{- end }}
{{- end }}
{{- $_ := set $redis "password_file" (printf "%s/password" (include "breakwater.redisPasswordDir" .)) }}
{{- $_ := set $config "redis" $redis }}
{{- end }}
{{- with .Values.fleet.cacheSizeLimit }}
{{- $limit := include "breakwater.quantityBytes" . | float64 }}
{{- $max := default (dict) $config.cache | dig "max_size" 0 }}
{{- $maxBytes := include "breakwater.sizeBytes" $max | float64 }}
{{- if or (le $maxBytes 0.0) (ge $maxBytes $limit) }}
{{- if not (kindIs "string" $max) }}
{{- $max = printf "%.0f" (float64 $max) }}
{{- end }}
{{- fail (printf "config.cache.max_size %v: must be set and below fleet.cacheSizeLimit (%s): each replica's cache is an emptyDir of that sizeLimit, which the kubelet evicts the pod for outgrowing, and eviction keeps the cache under max_size" $max (toString .)) }}
{{- end }}
{{- end }}
{{- end }}
{{- /*
The kubelet sends SIGTERM, waits terminationGracePeriodSeconds, then
kills: a drain that may last as long as the grace period is cut short.
*/}}
{{- $drain := toString (default "30s" $config.drain_timeout) }}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 (include "breakwater.durationSeconds" $drain)) }}
{{- fail (printf "terminationGracePeriodSeconds %v: must be greater than config.drain_timeout (%s), or the kubelet kills Breakwater before its drain ends" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- range $i, $line := splitList "\n" (toString .Values.auth.htpasswd) }}
{{- $l := trim $line }}
{{- if and $l (not (hasPrefix "#" $l)) (not (regexMatch "^[^:\\s]+:\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{53}$" $l)) }}
{{- fail (printf "auth.htpasswd: line %d: not a user:bcrypt-hash line (only bcrypt is accepted: create it with htpasswd -B)" (add1 $i)) }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}
