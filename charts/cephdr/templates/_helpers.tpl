{{/* The release's full name, at most 63 characters. */}}
{{- define "cephdr.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cephdr.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cephdr.labels" -}}
{{ include "cephdr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: cephdr
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "cephdr.serviceAccountName" -}}
{{- default (include "cephdr.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The Lease the replicas elect a leader with; the Role grants get and patch on it alone. */}}
{{- define "cephdr.leaseName" -}}
{{- include "cephdr.fullname" . -}}
{{- end -}}

{{- define "cephdr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the controllers do with the API, and nothing more (see src/controller/):
- the five kinds: list and watch (the controllers' caches), get (a FailoverRequest is re-read before each
  step), patch (the cephdr.io/cleanup finalizer is added and removed by JSON patch), and patch on /status
  (server-side apply of the status the operator owns);
- update on the finalizers of the kinds that own Secrets: an owner reference with blockOwnerDeletion needs
  it where the OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift, for one);
- Secrets: get (agent tokens and CA bundles, sync-user keys, RBD bootstrap tokens), list and watch (the pool
  and realm controllers watch the Secrets they own), create and patch (server-side apply writes the
  bootstrap-token and sync-user Secrets; the API server checks create when the apply creates one);
- Events (events.k8s.io, which kube-runtime's recorder writes): create, and patch to count repeats.
*/}}
{{- define "cephdr.rules" -}}
- apiGroups: [cephdr.io]
  resources: [cephsites, cephrealms, cephzones, rbdmirrorpools, failoverrequests]
  verbs: [get, list, watch, patch]
- apiGroups: [cephdr.io]
  resources: [cephsites/status, cephrealms/status, cephzones/status, rbdmirrorpools/status, failoverrequests/status]
  verbs: [patch]
- apiGroups: [cephdr.io]
  resources: [cephrealms/finalizers, rbdmirrorpools/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
