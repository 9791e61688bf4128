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
