{{/* The sluice container: shared by the gateway and agent workloads and the sidecar snippet. */}}
{{- define "sluice.container" -}}
{{- $ports := (include "sluice.ports" . | fromJson).ports }}
{{- $adminPort := 0 }}
{{- range $ports }}{{ if eq .name "admin" }}{{ if .loopback }}{{ fail "config: service.admin must not be a loopback address: the kubelet's probes could not reach /healthz and /readyz" }}{{ end }}{{ $adminPort = int .port }}{{ end }}{{ end -}}
name: sluice
image: {{ include "sluice.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: {{ include "sluice.args" . }}
ports:
{{- range $ports }}
{{- if not .loopback }}
  - name: {{ .name }}
    containerPort: {{ .port }}
    protocol: TCP
    {{- if and (eq $.Values.mode "agent") $.Values.agent.hostPorts (ne .name "admin") }}
    hostPort: {{ .port }}
    {{- end }}
{{- end }}
{{- end }}
{{- with .Values.env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ $adminPort }}
  {{- toYaml .Values.livenessProbe | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ $adminPort }}
  {{- toYaml .Values.readinessProbe | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: sluice-config
    mountPath: {{ include "sluice.configDir" . }}
    readOnly: true
  - name: sluice-data
    mountPath: {{ .Values.dataDir }}
  {{- with .Values.tls.receivers.secretName }}
  - name: sluice-tls-receivers
    mountPath: {{ $.Values.tls.receivers.mountPath }}
    readOnly: true
  {{- end }}
  {{- with .Values.tls.exporters.secretName }}
  - name: sluice-tls-exporters
    mountPath: {{ $.Values.tls.exporters.mountPath }}
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The pod's volumes; `data` is an emptyDir unless the StatefulSet's claim template provides it. */}}
{{- define "sluice.volumes" -}}
- name: sluice-config
  configMap:
    name: {{ include "sluice.fullname" . }}
{{- if not (and (eq .Values.mode "gateway") .Values.persistence.enabled) }}
- name: sluice-data
  emptyDir: {}
{{- end }}
{{- with .Values.tls.receivers.secretName }}
- name: sluice-tls-receivers
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.tls.exporters.secretName }}
- name: sluice-tls-exporters
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod template of the gateway and agent workloads. */}}
{{- define "sluice.podTemplate" -}}
metadata:
  labels:
    {{- include "sluice.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or .Values.podAnnotations (eq .Values.configReload "rollout") }}
  annotations:
    {{- if eq .Values.configReload "rollout" }}
    checksum/config: {{ include "sluice.config" . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "sluice.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - {{ include "sluice.container" . | nindent 6 | trim }}
  volumes:
    {{- include "sluice.volumes" . | nindent 4 }}
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
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
