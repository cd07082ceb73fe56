{{/* Name of the chart's objects: the release name, or release-chart. */}}
{{- define "tempcreds.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tempcreds.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "tempcreds.labels" -}}
{{ include "tempcreds.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tempcreds.webhookImage" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "tempcreds.sidecarImage" -}}
{{ .Values.sidecar.image.repository }}:{{ .Values.sidecar.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Secret holding the webhook's serving certificate. */}}
{{- define "tempcreds.tlsSecret" -}}
{{ include "tempcreds.fullname" . }}-tls
{{- end -}}

{{/* The service's DNS name, which the serving certificate must carry. */}}
{{- define "tempcreds.serviceDNS" -}}
{{ include "tempcreds.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end -}}
