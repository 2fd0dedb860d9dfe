{{/* Chart name, shortened to the 63 characters a label value may hold. */}}
{{- define "tiktok-auth0-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release already named after the chart is not repeated,
so `helm install tiktok-auth0-proxy` gives objects called tiktok-auth0-proxy.
*/}}
{{- define "tiktok-auth0-proxy.fullname" -}}
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

{{- define "tiktok-auth0-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiktok-auth0-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tiktok-auth0-proxy.labels" -}}
{{- $chart := printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
helm.sh/chart: {{ $chart | trunc 63 | trimSuffix "-" }}
{{ include "tiktok-auth0-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tiktok-auth0-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tiktok-auth0-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- $why := "serviceAccount.name is required when serviceAccount.create is false" }}
{{- required $why .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tiktok-auth0-proxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Names of the app Secrets, in values order; the ConfigMap and the Role must agree. */}}
{{- define "tiktok-auth0-proxy.secretNames" -}}
{{- $names := list }}
{{- range .Values.apps }}
{{- $names = append $names .secretName }}
{{- end }}
{{- if ne (len $names) (len (uniq $names)) }}
{{- fail "apps: each secretName must be listed once" }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
Seconds in a duration such as 500ms, 20s or 1m. The schema limits shutdown durations to these
forms so that the grace period check below is exact.
*/}}
{{- define "tiktok-auth0-proxy.durationMillis" -}}
{{- $d := toString . }}
{{- if hasSuffix "ms" $d }}{{ trimSuffix "ms" $d | int }}
{{- else if hasSuffix "s" $d }}{{ mul (trimSuffix "s" $d | int) 1000 }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | int) 60000 }}
{{- else }}{{ fail (printf "unsupported duration %q: use ms, s or m" $d) }}
{{- end }}
{{- end }}

{{/* Whether more than one replica can run, which is when a disruption budget means anything. */}}
{{- define "tiktok-auth0-proxy.multiReplica" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/* A namespace and optional pod labels as a NetworkPolicy peer. */}}
{{- define "tiktok-auth0-proxy.peer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ .namespace }}
  {{- with .podLabels }}
  podSelector:
    matchLabels:
      {{- toYaml . | nindent 6 }}
  {{- end }}
{{- end }}
