{{- define "dagster.fullname" -}}
{{- printf "%s-dagster" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dagster.serviceAccountName" -}}
{{- .Values.global.serviceAccountName | default .Values.serviceAccount.name | default (include "dagster.fullname" .) -}}
{{- end -}}
