{{/* Names and labels shared by every object of the release. */}}
{{- define "cds.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cds.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selects every pod of the release: the service pods and the migration Job's pod (NetworkPolicy). */}}
{{- define "cds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cds.labels" -}}
{{ include "cds.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "cds.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The external base URL: CDS_PUBLIC_BASE_URL, the JWT audience is built from it. */}}
{{- define "cds.publicBaseUrl" -}}
{{- if .Values.publicBaseUrl -}}
{{- .Values.publicBaseUrl -}}
{{- else if .Values.ingress.enabled -}}
{{- printf "https://%s" .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{- define "cds.issuersConfigMap" -}}
{{- default (printf "%s-issuers" (include "cds.fullname" .)) .Values.issuers.existingConfigMap -}}
{{- end -}}

{{- define "cds.knowledgeConfigMap" -}}
{{- default (printf "%s-knowledge" (include "cds.fullname" .)) .Values.knowledge.existingConfigMap -}}
{{- end -}}

{{- define "cds.knowledgeEnabled" -}}
{{- if or .Values.knowledge.content .Values.knowledge.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* Pod and container security: non-root, read-only root filesystem, no privilege, no capability. */}}
{{- define "cds.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cds.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The database URL, from a Secret (never a value of this chart). */}}
{{- define "cds.databaseUrlEnv" -}}
- name: CDS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.existingSecret: the Secret holding the database URL and the patient-key secret" .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.databaseUrlKey }}
{{- end -}}

{{/* Where the service writes: CDS_DATA_DIR (gunicorn's multiprocess metrics files) and /tmp. */}}
{{- define "cds.writableMounts" -}}
- name: data
  mountPath: {{ .Values.dataDir }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "cds.writableVolumes" -}}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.writableVolumes.dataSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.writableVolumes.tmpSizeLimit }}
{{- end -}}
