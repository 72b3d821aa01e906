{{/* The release's full name, at most 63 characters. */}}
{{- define "tenantdb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tenantdb.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tenantdb.labels" -}}
{{ include "tenantdb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tenantdb.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tenantdb.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Permissions on the tenants themselves: cluster-wide or per watched namespace. */}}
{{- define "tenantdb.tenantRules" -}}
# Watch tenants; add and remove the tenantdb.io/cleanup finalizer.
- apiGroups: [tenantdb.io]
  resources: [tenantdatabases]
  verbs: [list, watch, patch]
# Status, written with server-side apply.
- apiGroups: [tenantdb.io]
  resources: [tenantdatabases/status]
  verbs: [patch]
# Connection Secrets carry an ownerReference with blockOwnerDeletion, which
# the API server allows only with update on the owner's finalizers.
- apiGroups: [tenantdb.io]
  resources: [tenantdatabases/finalizers]
  verbs: [update]
# Connection Secrets: written with server-side apply (patch, and create for
# the first apply).
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch]
# Events about tenants.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Permissions that are cluster-wide in every mode. */}}
{{- define "tenantdb.clusterRules" -}}
# DatabaseServers are cluster-scoped: watched, and their status written.
- apiGroups: [tenantdb.io]
  resources: [databaseservers]
  verbs: [list, watch]
- apiGroups: [tenantdb.io]
  resources: [databaseservers/status]
  verbs: [patch]
# CacheServers likewise.
- apiGroups: [tenantdb.io]
  resources: [cacheservers]
  verbs: [list, watch]
- apiGroups: [tenantdb.io]
  resources: [cacheservers/status]
  verbs: [patch]
# Admin Secrets (and CacheServers' CA Secrets) may live in any namespace a
# DatabaseServer or CacheServer names: read when
# needed, watched (by metadata) to notice changes; connection Secrets are
# read from a cache.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
# A server's allowedNamespaces selector is matched against namespace labels,
# cached by metadata: a label change re-queues that namespace's tenants.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}
