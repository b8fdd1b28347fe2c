{{/*
The pod template of the Breakwater workload: the StatefulSet's, whose
replicas keep their caches on a volume each (or an emptyDir without
persistence), or in a fleet the Deployment's, whose replicas keep theirs in
an emptyDir, advertise their pod's address to each other and mount the
peer secret and Redis's password.
*/}}
{{- define "breakwater.podTemplate" -}}
{{- $fleet := include "breakwater.fleet" . }}
{{- $store := include "breakwater.sharedStore" . }}
{{- $storageFile := and .Values.sharedStorage.existingSecret (has $store (list "gcs" "azure")) }}
{{- $cacheDir := toString .Values.config.cache.dir }}
{{- if not (isAbs $cacheDir) }}
{{- fail (printf "config.cache.dir %q: must be an absolute path (the cache volume is mounted there)" $cacheDir) }}
{{- end -}}
metadata:
  labels:
    {{- include "breakwater.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A new config.yaml rolls the pods.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- if .Values.auth.htpasswd }}
    # A new htpasswd file too: Breakwater reads it at start. (One in
    # auth.existingSecret is the owner's to roll out.)
    checksum/htpasswd: {{ .Values.auth.htpasswd | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "breakwater.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: breakwater
      image: {{ include "breakwater.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if $fleet }}
      # The URL the fleet's other replicas reach this one at: its pod's
      # address (POD_IP below), which the kubelet puts in for $(POD_IP).
      args: ["serve", "--config", "/etc/breakwater/config.yaml", "--advertise", {{ include "breakwater.advertiseURL" . | quote }}]
      {{- else }}
      args: ["serve", "--config", "/etc/breakwater/config.yaml"]
      {{- end }}
      env:
        # Lets the Go runtime collect garbage before the memory limit bites.
        - name: GOMEMLIMIT
          valueFrom:
            resourceFieldRef:
              resource: limits.memory
        {{- if $fleet }}
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- end }}
        {{- with .Values.sharedStorage }}
        {{- if and .existingSecret (eq $store "s3") }}
        # The shared store's S3 keys (sharedStorage), which the s3
        # driver reads as the AWS default credentials.
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef:
              name: {{ .existingSecret | quote }}
              key: {{ default "accesskey" .accessKeyKey | quote }}
        - name: AWS_SECRET_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ .existingSecret | quote }}
              key: {{ default "secretkey" .secretKeyKey | quote }}
        {{- end }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ include "breakwater.containerPort" . }}
          protocol: TCP
      {{- /*
      With mutual TLS the kubelet, which has no client certificate, is
      refused in the handshake: the probes can only connect. With TLS
      alone they ask over HTTPS (the kubelet does not verify it).
      */}}
      {{- $mutual := and .Values.tls.enabled .Values.tls.clientCA.enabled }}
      startupProbe:
        {{- include "breakwater.probe" (dict "path" "/healthz" "mutual" $mutual "tls" .Values.tls.enabled) | nindent 8 }}
        {{- toYaml .Values.probes.startup | nindent 8 }}
      livenessProbe:
        {{- include "breakwater.probe" (dict "path" "/healthz" "mutual" $mutual "tls" .Values.tls.enabled) | nindent 8 }}
        {{- toYaml .Values.probes.liveness | nindent 8 }}
      readinessProbe:
        {{- include "breakwater.probe" (dict "path" "/readyz" "mutual" $mutual "tls" .Values.tls.enabled) | nindent 8 }}
        {{- toYaml .Values.probes.readiness | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/breakwater
          readOnly: true
        - name: cache
          mountPath: {{ $cacheDir }}
        {{- if .Values.tls.enabled }}
        # Breakwater re-reads these files every 10 s: a renewed
        # Secret needs no restart.
        - name: tls
          mountPath: {{ include "breakwater.tlsDir" . }}
          readOnly: true
        {{- if and .Values.tls.clientCA.enabled .Values.tls.clientCA.secretName }}
        - name: tls-client-ca
          mountPath: {{ include "breakwater.clientCADir" . }}
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if include "breakwater.authEnabled" . }}
        - name: htpasswd
          mountPath: {{ include "breakwater.htpasswdDir" . }}
          readOnly: true
        {{- end }}
        {{- /*
        upstreamCredentials: each a directory, not a subPath, so that a
        rotated Secret reaches the file (Breakwater re-reads password_file
        when it changes; the pods need no restart).
        */}}
        {{- range $i, $host := keys .Values.upstreamCredentials | sortAlpha }}
        # upstreamCredentials.{{ $host }}
        - name: {{ include "breakwater.upstreamCredentialsVolume" (dict "i" $i "host" $host) }}
          mountPath: {{ include "breakwater.upstreamCredentialsDir" $host }}
          readOnly: true
        {{- end }}
        {{- if $storageFile }}
        # The shared store's key (sharedStorage): gcs's key file or azure's
        # account key, which the driver reads at start: a rotation takes a
        # restart.
        - name: storage-secret
          mountPath: {{ include "breakwater.storageSecretDir" . }}
          readOnly: true
        {{- end }}
        {{- if $fleet }}
        # The secret the fleet's replicas share (and Redis's password):
        # directories, not subPaths (which never see a rotated Secret).
        # Breakwater reads them at start: a rotation takes a restart.
        - name: cluster-secret
          mountPath: {{ include "breakwater.clusterSecretDir" . }}
          readOnly: true
        {{- if .Values.fleet.redisPasswordSecret }}
        - name: redis-password
          mountPath: {{ include "breakwater.redisPasswordDir" . }}
          readOnly: true
        {{- end }}
        {{- end }}
        # The root file system is read-only; Go and TLS libraries may
        # still want a scratch directory.
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "breakwater.fullname" . }}
    - name: tmp
      emptyDir: {}
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.secretName }}
        # 0440: the key readable by the pod's group (fsGroup) only.
        defaultMode: 288
    {{- if and .Values.tls.clientCA.enabled .Values.tls.clientCA.secretName }}
    - name: tls-client-ca
      secret:
        secretName: {{ .Values.tls.clientCA.secretName }}
        defaultMode: 288
    {{- end }}
    {{- end }}
    {{- if include "breakwater.authEnabled" . }}
    - name: htpasswd
      secret:
        secretName: {{ include "breakwater.htpasswdSecret" . }}
        items:
          - key: {{ if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}htpasswd{{ end }}
            path: htpasswd
        # 0440: readable by the pod's fsGroup, not by others.
        defaultMode: 288
    {{- end }}
    {{- range $i, $host := keys .Values.upstreamCredentials | sortAlpha }}
    {{- $cred := index $.Values.upstreamCredentials $host }}
    - name: {{ include "breakwater.upstreamCredentialsVolume" (dict "i" $i "host" $host) }}
      secret:
        secretName: {{ $cred.existingSecret }}
        items:
          - key: {{ default "password" $cred.passwordKey }}
            path: password
        # 0440: readable by the pod's fsGroup, not by others.
        defaultMode: 288
    {{- end }}
    {{- if $storageFile }}
    - name: storage-secret
      secret:
        secretName: {{ .Values.sharedStorage.existingSecret }}
        items:
          {{- if eq $store "gcs" }}
          - key: {{ .Values.sharedStorage.keyfileKey }}
            path: key.json
          {{- else }}
          - key: {{ .Values.sharedStorage.accountKeyKey }}
            path: accountkey
          {{- end }}
        # 0440: readable by the pod's fsGroup, not by others.
        defaultMode: 288
    {{- end }}
    {{- if $fleet }}
    - name: cluster-secret
      secret:
        secretName: {{ include "breakwater.clusterSecret" . }}
        items:
          - key: {{ if .Values.fleet.existingSecret }}{{ .Values.fleet.existingSecretKey }}{{ else }}secret{{ end }}
            path: secret
        # 0440: readable by the pod's fsGroup, not by others.
        defaultMode: 288
    {{- if .Values.fleet.redisPasswordSecret }}
    - name: redis-password
      secret:
        secretName: {{ .Values.fleet.redisPasswordSecret }}
        items:
          - key: {{ .Values.fleet.redisPasswordKey }}
            path: password
        defaultMode: 288
    {{- end }}
    # A fleet's local cache: what lasts is in the shared bucket.
    - name: cache
      {{- with .Values.fleet.cacheSizeLimit }}
      emptyDir:
        sizeLimit: {{ . | quote }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- else if not .Values.persistence.enabled }}
    - name: cache
      emptyDir: {}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml .Values.topologySpreadConstraints | nindent 4 }}
  {{- else if $fleet }}
  # A fleet spreads over zones, then nodes, as far as the scheduler can
  # (never leaving a pod pending for it); topologySpreadConstraints replace
  # these. Counted per ReplicaSet (pod-template-hash), so that a rollout's
  # old pods do not skew the new ones.
  topologySpreadConstraints:
    {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
    - maxSkew: 1
      topologyKey: {{ $key }}
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "breakwater.selectorLabels" $ | nindent 10 }}
      matchLabelKeys: ["pod-template-hash"]
    {{- end }}
  {{- end }}
{{- end }}
