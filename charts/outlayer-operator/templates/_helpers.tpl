{{/* Chart name, bounded to 63 characters (a DNS label). */}}
{{- define "outlayer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name of the operator's objects. */}}
{{- define "outlayer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "outlayer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object the chart renders. */}}
{{- define "outlayer.labels" -}}
helm.sh/chart: {{ include "outlayer.chart" . }}
{{ include "outlayer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: outlayer
{{- end -}}

{{/* Labels that select the operator's pods (immutable once a Deployment exists). */}}
{{- define "outlayer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outlayer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "outlayer.serviceAccountName" -}}
{{- default (include "outlayer.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Namespace of ExecutionRequests, CompileJobs and the pods and Jobs they create. */}}
{{- define "outlayer.workloadNamespace" -}}
{{- default .Release.Namespace .Values.workload.namespace -}}
{{- end -}}

{{/*
An image reference from {repository, tag, digest}: repository:tag, or repository@digest when a digest is
given (a digest pins the content; a tag can move). The tag defaults to the chart's appVersion.
Call with (dict "image" .Values.x.image "root" $).
*/}}
{{- define "outlayer.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy ipBlock peers from a list of {cidr, except}. */}}
{{- define "outlayer.ipBlocks" -}}
{{- range . }}
- ipBlock:
    cidr: {{ .cidr }}
    {{- with .except }}
    except:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy ports (TCP) from a list of port numbers. */}}
{{- define "outlayer.tcpPorts" -}}
{{- range . }}
- protocol: TCP
  port: {{ . }}
{{- end }}
{{- end -}}

{{/* The operator's --warm-pool value, CLASS_MB=COUNT,… from executor.warmPool.classes. */}}
{{- define "outlayer.warmPoolClasses" -}}
{{- $pairs := list -}}
{{- range . }}
{{- $pairs = append $pairs (printf "%d=%d" (int64 .memoryMb) (int64 .pods)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
