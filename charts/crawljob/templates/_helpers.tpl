{{/* Chart name, truncated to a DNS label. */}}
{{- define "crawljob.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every resource: <release>-<chart> unless the release already says it. */}}
{{- define "crawljob.fullname" -}}
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

{{/* Name of one component's resources: <fullname>-<component>. */}}
{{- define "crawljob.componentName" -}}
{{- printf "%s-%s" (include "crawljob.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "crawljob.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every resource. */}}
{{- define "crawljob.labels" -}}
helm.sh/chart: {{ include "crawljob.chart" . }}
app.kubernetes.io/name: {{ include "crawljob.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crawljob
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: call with (dict "root" $ "component" "receiver"). */}}
{{- define "crawljob.componentLabels" -}}
{{ include "crawljob.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels of one component (immutable in Deployments: keep them few). */}}
{{- define "crawljob.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crawljob.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Namespace of CrawlJobs, Jobs and worker pods. */}}
{{- define "crawljob.crawljobNamespace" -}}
{{- default .Release.Namespace .Values.crawljobNamespace }}
{{- end }}

{{/* ServiceAccount name of one component: (dict "root" $ "component" "worker"). */}}
{{- define "crawljob.serviceAccountName" -}}
{{- $account := index .root.Values.serviceAccounts .component }}
{{- if $account.create }}
{{- default (include "crawljob.componentName" .) $account.name }}
{{- else }}
{{- default "default" $account.name }}
{{- end }}
{{- end }}

{{/* The operator image (receiver and operator). */}}
{{- define "crawljob.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The worker image the operator puts into Jobs. */}}
{{- define "crawljob.workerImage" -}}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) }}
{{- end }}

{{/* Name of the Secret holding the webhook token / HMAC key. */}}
{{- define "crawljob.authSecretName" -}}
{{- default (include "crawljob.componentName" (dict "root" . "component" "webhook")) .Values.receiver.auth.existingSecret }}
{{- end }}

{{/* Env vars every worker gets from the chart (CRAWLJOB_WORKER_ENV), as a list. */}}
{{- define "crawljob.workerEnv" -}}
{{- $env := list }}
{{- with .Values.s3.endpointUrl }}
{{- $env = append $env (dict "name" "AWS_ENDPOINT_URL_S3" "value" .) }}
{{- end }}
{{- with .Values.s3.region }}
{{- $env = append $env (dict "name" "AWS_DEFAULT_REGION" "value" .) }}
{{- end }}
{{- with .Values.s3.existingSecret }}
{{- $env = append $env (dict "name" "AWS_ACCESS_KEY_ID" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $.Values.s3.accessKeyIdKey))) }}
{{- $env = append $env (dict "name" "AWS_SECRET_ACCESS_KEY" "valueFrom" (dict "secretKeyRef" (dict "name" . "key" $.Values.s3.secretAccessKeyKey))) }}
{{- end }}
{{- range .Values.worker.env }}
{{- $env = append $env . }}
{{- end }}
{{- if $env }}{{ toJson $env }}{{ else }}[]{{ end }}
{{- end }}

{{/* Volumes shared by the receiver and operator pods: a writable /tmp under a read-only root. */}}
{{- define "crawljob.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/* PodDisruptionBudget apiVersion: policy/v1 is served from Kubernetes 1.21; 1.20 only has policy/v1beta1. */}}
{{- define "crawljob.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}policy/v1{{ else }}policy/v1beta1{{ end }}
{{- end }}
