{{/* Names and labels shared by every object of the chart. */}}

{{- define "kfm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kfm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include with (list . "receiver"). */}}
{{- define "kfm.selector" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ $ctx.Chart.Name }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "kfm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kfm.secretName" -}}
{{- if .Values.secrets.name -}}
{{- .Values.secrets.name -}}
{{- else if .Values.secrets.create -}}
{{- include "kfm.fullname" . -}}
{{- else -}}
{{- fail "secrets.name: name the Secret holding hook-token and signing-key (or set secrets.create with the values)" -}}
{{- end -}}
{{- end -}}

{{- define "kfm.trustedKeysConfigMap" -}}
{{- default (printf "%s-trusted-keys" (include "kfm.fullname" .)) .Values.trustedKeys.configMap -}}
{{- end -}}

{{- define "kfm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kfm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Environment every container gets: the ConfigMap, then the optional secret settings. */}}
{{- define "kfm.envFrom" -}}
- configMapRef:
    name: {{ include "kfm.fullname" . }}
{{- end -}}

{{- define "kfm.extraSecretEnv" -}}
{{- range .Values.extraSecretEnv }}
- name: {{ required "extraSecretEnv[].name" .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "extraSecretEnv[].secretName" .secretName }}
      key: {{ required "extraSecretEnv[].key" .key }}
{{- end }}
{{- end -}}

{{/* An env var from a key of the chart's Secret that may be absent (then the variable is unset). */}}
{{- define "kfm.optionalSecretEnv" -}}
{{- $ctx := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "kfm.secretName" $ctx }}
      key: {{ index . 2 }}
      optional: true
{{- end -}}
