{{/* The chart's name, for app.kubernetes.io/name. */}}
{{- define "meshproof.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's objects' name: the release name alone when it already holds
the chart's (helm install meshproof ... gives "meshproof", the kustomize
base's name).
*/}}
{{- define "meshproof.fullname" -}}
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

{{- define "meshproof.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshproof.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshproof.labels" -}}
{{ include "meshproof.selectorLabels" . }}
app.kubernetes.io/version: {{ include "meshproof.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "meshproof.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshproof.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "meshproof.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "meshproof.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "meshproof.tag" .) }}
{{- end }}

{{/*
Replicas, after the store's rule: SQLite is one writer's file, so it takes
exactly one and refuses more out loud rather than starting pods that cannot
open it; PostgreSQL defaults to two, so that a restart denies nothing.
*/}}
{{- define "meshproof.replicas" -}}
{{- $type := .Values.store.type }}
{{- if eq $type "sqlite" }}
{{- if and (not (kindIs "invalid" .Values.replicaCount)) (ne (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount %v with store.type sqlite: SQLite is one writer's file on a ReadWriteOnce volume, so it runs exactly 1 replica; use store.type postgres for several" .Values.replicaCount) }}
{{- end }}
{{- 1 }}
{{- else if eq $type "postgres" }}
{{- if kindIs "invalid" .Values.replicaCount }}{{ 2 }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- else }}
{{- fail (printf "store.type %q: want sqlite or postgres" $type) }}
{{- end }}
{{- end }}

{{/* The --store value: the SQLite file, or the DSN from the Secret through env. */}}
{{- define "meshproof.store" -}}
{{- if eq .Values.store.type "postgres" -}}
$(MESHPROOF_STORE)
{{- else -}}
sqlite:/var/lib/meshproof/evidence.db
{{- end }}
{{- end }}

{{/* The DSN Secret, checked once for every template that reads it. */}}
{{- define "meshproof.postgresSecret" -}}
{{- required "store.postgres.existingSecret: name the Secret holding the PostgreSQL DSN (store.type postgres)" .Values.store.postgres.existingSecret }}
{{- end }}

{{/* The env entry of the DSN, for serve and migrate. */}}
{{- define "meshproof.storeEnv" -}}
- name: MESHPROOF_STORE
  valueFrom:
    secretKeyRef:
      name: {{ include "meshproof.postgresSecret" . }}
      key: {{ .Values.store.postgres.key }}
{{- end }}

{{/* A policy ConfigMap's name: the chart's own, or the one made elsewhere. */}}
{{- define "meshproof.policyConfigMap" -}}
{{- $cm := .cm }}
{{- if $cm.existingConfigMap }}
{{- $cm.existingConfigMap }}
{{- else }}
{{- printf "%s-%s" (include "meshproof.fullname" .root) $cm.name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
