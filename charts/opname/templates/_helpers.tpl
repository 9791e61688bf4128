{{- define "opname.labels" -}}
app.kubernetes.io/name: opname-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: opname
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- define "opname.selector" -}}
app.kubernetes.io/name: opname-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{/* An image reference from {repository, tag, digest}: the digest wins, the tag defaults to
the chart's appVersion. Call with (dict "image" .Values.x.image "chart" .Chart). */}}
{{- define "opname.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .chart.AppVersion }}
{{- end -}}
{{- end }}
{{/* A pod's scheduling knobs; a topology spread constraint without labelSelector gets the
workload's own. Call with (dict "scheduling" .Values.x.scheduling "selector" DICT). */}}
{{- define "opname.scheduling" -}}
{{- with .scheduling.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .scheduling.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .scheduling.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .scheduling.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
  - {{- toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $.selector))) | nindent 4 }}
{{- end }}
{{- end }}
{{- with .pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- define "opname.recordingsSelector" -}}
app.kubernetes.io/name: opname-recordings
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
