{{/* Names, labels and the pieces both modes share. */}}

{{- define "meshagent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meshagent.injectorName" -}}
{{- printf "%s-injector" (include "meshagent.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "meshagent.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "meshagent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The agent's config file. Ports, capture and inbound switches that must agree with
     the pod spec are set by environment (the injector, the DaemonSet), not here. */}}
{{- define "meshagent.agentConfig" -}}
{{- $a := .Values.agent -}}
{{- $registries := list -}}
{{- range $a.registries -}}
{{- $registries = append $registries (dict "name" .name "type" .type "config" (default dict .config)) -}}
{{- end -}}
{{- $capture := dict "sniff_timeout_s" $a.capture.sniffTimeoutSeconds "opaque_ports" $a.capture.opaquePorts "passthrough" $a.capture.passthrough "services" $a.capture.services -}}
{{- $config := dict "admin" (dict "host" "127.0.0.1" "port" $a.adminPort) "registries" $registries "services" $a.services "listeners" $a.listeners "drain_timeout_s" $a.drainTimeoutSeconds "log_level" $a.logLevel -}}
{{- if eq .Values.mode "sidecar" -}}
{{- $_ := set $config "capture" $capture -}}
{{- end -}}
{{- if not (kindIs "invalid" $a.workers) -}}
{{- $_ := set $config "workers" $a.workers -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Environment every agent container gets: registry credentials from Secrets and the
     tracing endpoint. A Secret's value reaches the config through a YAML block scalar
     ("|2-"), so that whatever it holds (digits, "yes", quotes, '#') stays a string when
     the agent reads MESHAGENT_* variables as YAML; $(VAR) is expanded by the kubelet. */}}
{{- define "meshagent.agentEnv" -}}
{{- range $i, $registry := .Values.agent.registries }}
{{- range $j, $secret := (default list $registry.secretConfig) }}
{{- $var := printf "MESHAGENT_SECRET_%d_%d" $i $j }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret.secretName | quote }}
      key: {{ $secret.key | quote }}
- name: {{ printf "MESHAGENT_REGISTRIES__%d__CONFIG__%s" $i (upper $secret.field) }}
  value: {{ printf "|2-\n  $(%s)" $var | quote }}
{{- end }}
{{- end }}
{{- with .Values.agent.tracing }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplingRatio | toString | quote }}
{{- end }}
{{- end }}
{{- with .Values.agent.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "meshagent.agentSecurityContext" -}}
runAsUser: {{ .Values.agent.uid }}
runAsGroup: {{ .Values.agent.gid }}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "meshagent.certSecret" -}}
{{- if eq .Values.injector.certificate.mode "secret" -}}
{{- .Values.injector.certificate.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "meshagent.injectorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What both webhooks share; .root is the chart context. */}}
{{- define "meshagent.webhookCommon" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
failurePolicy: {{ .root.Values.injector.failurePolicy }}
timeoutSeconds: {{ .root.Values.injector.timeoutSeconds }}
reinvocationPolicy: Never
matchPolicy: Equivalent
rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    scope: Namespaced
clientConfig:
  service:
    name: {{ .name }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- if .caBundle }}
  caBundle: {{ .caBundle }}
  {{- end -}}
{{- end -}}
