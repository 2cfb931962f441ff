{{/* Names, labels and the values the two services' arguments are built from. */}}

{{- define "underlay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "underlay.fullname" -}}
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

{{- define "underlay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource; selectorLabels with a component: include "underlay.selectorLabels" (list . "agent"). */}}
{{- define "underlay.labels" -}}
helm.sh/chart: {{ include "underlay.chart" . }}
app.kubernetes.io/name: {{ include "underlay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "underlay.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "underlay.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "underlay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "underlay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "underlay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* --etcd: the in-chart members, or the endpoints given, joined with commas. */}}
{{- define "underlay.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $fullname := include "underlay.fullname" . }}
{{- $eps := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $eps = append $eps (printf "http://%s-etcd-%d.%s-etcd-headless.%s.svc:2379" $fullname $i $fullname $.Release.Namespace) }}
{{- end }}
{{- join "," $eps }}
{{- else if .Values.etcd.endpoints }}
{{- join "," .Values.etcd.endpoints }}
{{- else }}
{{- fail "underlay: set etcd.endpoints (an existing etcd cluster) or etcd.enabled=true (an in-chart etcd for trials)" }}
{{- end }}
{{- end }}

{{/* --nats: the in-chart NATS Service, or the URL given. */}}
{{- define "underlay.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s-nats.%s.svc:4222" (include "underlay.fullname" .) .Release.Namespace }}
{{- else if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else }}
{{- fail "underlay: set nats.url (an existing NATS) or nats.enabled=true (an in-chart NATS for trials)" }}
{{- end }}
{{- end }}

{{- define "underlay.apiTokensSecret" -}}
{{- default (printf "%s-api-tokens" (include "underlay.fullname" .)) .Values.api.existingSecret }}
{{- end }}

{{- define "underlay.controllerCredsSecret" -}}
{{- default (printf "%s-nats-controller" (include "underlay.fullname" .)) .Values.nats.controllerCreds.existingSecret }}
{{- end }}

{{- define "underlay.nodeCredsSecret" -}}
{{- default (printf "%s-nats-nodes" (include "underlay.fullname" .)) .Values.nats.nodeCreds.existingSecret }}
{{- end }}

{{/* The standard OTEL_* variables of both services (docs/ARCHITECTURE.md, "Traces"); POD_NAME etc. are set before. */}}
{{- define "underlay.otelEnv" -}}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.otel.protocol | quote }}
{{- end }}
{{- if .Values.otel.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.otel.sampler | quote }}
{{- end }}
{{- if .Values.otel.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.otel.samplerArg | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.node.name=$(NODE_NAME)"
{{- with .Values.otel.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Downward API variables: $(NODE_NAME) and $(POD_NAME) in the args. */}}
{{- define "underlay.downwardEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* NATS TLS files as UNDERLAY_NATS_* variables (both services). */}}
{{- define "underlay.natsTlsEnv" -}}
{{- if .Values.nats.tls.existingSecret }}
- name: UNDERLAY_NATS_CA
  value: /etc/underlay/nats-tls/ca.crt
- name: UNDERLAY_NATS_CERT
  value: /etc/underlay/nats-tls/tls.crt
- name: UNDERLAY_NATS_KEY
  value: /etc/underlay/nats-tls/tls.key
{{- end }}
{{- end }}
