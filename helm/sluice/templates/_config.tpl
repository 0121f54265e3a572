{{/*
The Sluice configuration: the mode's defaults with .Values.config merged over them, rendered as TOML.
*/}}

{{/* Defaults shared by every mode: the admin server reachable by the kubelet's probes (not 127.0.0.1). */}}
{{- define "sluice.defaultConfig.service" -}}
service:
  admin: {{ printf "0.0.0.0:%d" (int .Values.ports.admin) | quote }}
  log_level: info
  shutdown_timeout: 30s
processors:
  batch:
    type: batch
{{- end }}

{{/* Agents and sidecars forward everything to the gateway. */}}
{{- define "sluice.defaultConfig.forward" -}}
exporters:
  gateway:
    type: otlp
    endpoint: {{ .Values.upstream.endpoint | quote }}
    protocol: {{ .Values.upstream.protocol | quote }}
    compression: {{ .Values.upstream.compression | quote }}
pipelines:
  default:
    signals: [traces, metrics, logs, profiles]
    receivers: [otlp]
    processors: [batch]
    exporters: [gateway]
{{- end }}

{{- define "sluice.defaultConfig.gateway" -}}
{{ include "sluice.defaultConfig.service" . }}
receivers:
  otlp:
    type: otlp
    grpc: {{ printf "0.0.0.0:%d" (int .Values.ports.otlpGrpc) | quote }}
    http: {{ printf "0.0.0.0:%d" (int .Values.ports.otlpHttp) | quote }}
exporters:
  file:
    type: file
    path: {{ printf "%s/data" .Values.dataDir | quote }}
pipelines:
  default:
    signals: [traces, metrics, logs, profiles]
    receivers: [otlp]
    processors: [batch]
    exporters: [file]
{{- end }}

{{- define "sluice.defaultConfig.agent" -}}
{{ include "sluice.defaultConfig.service" . }}
receivers:
  otlp:
    type: otlp
    grpc: {{ printf "0.0.0.0:%d" (int .Values.ports.otlpGrpc) | quote }}
    http: {{ printf "0.0.0.0:%d" (int .Values.ports.otlpHttp) | quote }}
{{ include "sluice.defaultConfig.forward" . }}
{{- end }}

{{/* A sidecar takes OTLP from its own pod only. */}}
{{- define "sluice.defaultConfig.sidecar" -}}
{{ include "sluice.defaultConfig.service" . }}
receivers:
  otlp:
    type: otlp
    grpc: {{ printf "127.0.0.1:%d" (int .Values.ports.otlpGrpc) | quote }}
    http: {{ printf "127.0.0.1:%d" (int .Values.ports.otlpHttp) | quote }}
{{ include "sluice.defaultConfig.forward" . }}
{{- end }}

{{/*
Deep merge of .src into .dst, in place: maps merge key by key, anything else replaces, and a null in
.src deletes the key (so values can remove a default component).
*/}}
{{- define "sluice.mergeInto" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- if kindIs "invalid" $v }}
{{- $_ := unset $dst $k }}
{{- else if and (kindIs "map" $v) (kindIs "map" (get $dst $k)) }}
{{- include "sluice.mergeInto" (dict "dst" (get $dst $k) "src" $v) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* The merged configuration as JSON (templates can only return strings). */}}
{{- define "sluice.configJson" -}}
{{- $cfg := include (printf "sluice.defaultConfig.%s" .Values.mode) . | fromYaml }}
{{- include "sluice.mergeInto" (dict "dst" $cfg "src" (deepCopy (default dict .Values.config))) }}
{{- toJson $cfg }}
{{- end }}

{{/* The merged configuration as TOML: what the ConfigMap holds. */}}
{{- define "sluice.config" -}}
# Rendered by the {{ include "sluice.chart" . }} chart for mode "{{ .Values.mode }}"; see README.md for every key.
{{- include "sluice.toml.table" (dict "path" list "table" (include "sluice.configJson" . | fromJson)) }}
{{ end }}

{{/* ---- A small TOML serializer: tables, arrays of tables, inline tables, arrays, strings, numbers, booleans. */}}

{{/* A key: bare when TOML allows, else a quoted basic string. */}}
{{- define "sluice.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* "true" when the value is a non-empty array whose elements are all tables ([[array.of.tables]]). */}}
{{- define "sluice.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $all := true }}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end }}
{{- if $all }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when a table has a key that is written as `key = value` (not as a sub-table). */}}
{{- define "sluice.toml.hasInline" -}}
{{- $any := false }}
{{- range $k, $v := . }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "sluice.toml.isTableArray" $v)) }}{{ $any = true }}{{ end }}
{{- end }}
{{- if $any }}true{{ end }}
{{- end }}

{{/* A value written inline: strings as JSON strings (JSON escapes are valid TOML basic-string escapes). */}}
{{- define "sluice.toml.inline" -}}
{{- if kindIs "map" . }}
{{- $parts := list }}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{- $parts = append $parts (printf "%s = %s" (include "sluice.toml.key" $k) (include "sluice.toml.inline" $v)) }}
{{- end }}
{{- end }}
{{- if $parts }}{ {{ join ", " $parts }} }{{ else }}{}{{ end }}
{{- else if kindIs "slice" . }}
{{- $parts := list }}
{{- range . }}
{{- if not (kindIs "invalid" .) }}
{{- $parts = append $parts (include "sluice.toml.inline" .) }}
{{- end }}
{{- end }}
{{- printf "[%s]" (join ", " $parts) }}
{{- else if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) }}
{{- toJson . }}
{{- else }}
{{- fail (printf "config: cannot write a %s (%v) as TOML" (kindOf .) .) }}
{{- end }}
{{- end }}

{{/* A table's body: its `key = value` lines first, then its sub-tables and arrays of tables. */}}
{{- define "sluice.toml.table" -}}
{{- $path := .path }}
{{- range $k, $v := .table }}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "sluice.toml.isTableArray" $v)) }}
{{ include "sluice.toml.key" $k }} = {{ include "sluice.toml.inline" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- $p := append $path (include "sluice.toml.key" $k) }}
{{- if kindIs "map" $v }}
{{- if or (not $v) (include "sluice.toml.hasInline" $v) }}

[{{ join "." $p }}]
{{- end }}
{{- include "sluice.toml.table" (dict "path" $p "table" $v) }}
{{- else if include "sluice.toml.isTableArray" $v }}
{{- range $v }}

[[{{ join "." $p }}]]
{{- include "sluice.toml.table" (dict "path" $p "table" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The ports the config listens on, as JSON {"ports": [{name, port, appProtocol, loopback}]}: the admin
server and every receiver's grpc/http address. Container ports, Services and probes all use this, so
they cannot disagree with the config.
*/}}
{{- define "sluice.ports" -}}
{{- $cfg := include "sluice.configJson" . | fromJson }}
{{- $ports := list }}
{{- $admin := dig "service" "admin" "" $cfg }}
{{- if not (regexMatch ":[0-9]+$" $admin) }}
{{- fail (printf "config: service.admin must be HOST:PORT for the probes, got %q" $admin) }}
{{- end }}
{{- $ports = append $ports (dict "name" "admin" "port" (regexFind "[0-9]+$" $admin | int) "appProtocol" "http" "loopback" (include "sluice.isLoopback" $admin | eq "true")) }}
{{- range $name, $r := (dig "receivers" (dict) $cfg) }}
{{- if kindIs "map" $r }}
{{- range $kind := list "grpc" "http" }}
{{- $addr := get $r $kind }}
{{- if and (kindIs "string" $addr) (regexMatch ":[0-9]+$" $addr) }}
{{- $pname := printf "%s-%s" $name $kind | lower | replace "_" "-" | trunc 15 | trimSuffix "-" }}
{{- $ports = append $ports (dict "name" $pname "port" (regexFind "[0-9]+$" $addr | int) "appProtocol" $kind "loopback" (include "sluice.isLoopback" $addr | eq "true")) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson (dict "ports" $ports) }}
{{- end }}

{{- define "sluice.isLoopback" -}}
{{- if or (hasPrefix "127." .) (hasPrefix "localhost:" .) (hasPrefix "[::1]:" .) }}true{{ else }}false{{ end }}
{{- end }}

{{/* The ports other pods can reach (not bound to loopback). */}}
{{- define "sluice.exposedPorts" -}}
{{- $out := list }}
{{- range (include "sluice.ports" . | fromJson).ports }}
{{- if not .loopback }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- toJson (dict "ports" $out) }}
{{- end }}
