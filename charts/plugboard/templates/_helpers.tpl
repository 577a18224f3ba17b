{{- define "plugboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of the release's objects. Cluster-scoped ones (the ClusterRole and its binding) carry
it too, so two releases (shards, see `selector`) never share them.
*/}}
{{- define "plugboard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "plugboard.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "plugboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plugboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "plugboard.labels" -}}
{{ include "plugboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Where the operator keeps its files (all on emptyDir volumes; the root filesystem is read-only). */}}
{{- define "plugboard.cacheDir" -}}/var/cache/plugboard/components{{- end -}}
{{- define "plugboard.cacheKeyFile" -}}/var/lib/plugboard/key/cache.key{{- end -}}
{{- define "plugboard.registryCaDir" -}}/etc/plugboard/registry-ca{{- end -}}
{{- define "plugboard.signaturesDir" -}}/etc/plugboard/signatures{{- end -}}

{{/* The ConfigMap holding the registries' CA bundle, or "" without one. */}}
{{- define "plugboard.registryCaConfigMap" -}}
{{- if .Values.registries.caBundle.existingConfigMap -}}
{{- .Values.registries.caBundle.existingConfigMap -}}
{{- else if .Values.registries.caBundle.pem -}}
{{- printf "%s-registry-ca" (include "plugboard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the signature public key, or "" without one. */}}
{{- define "plugboard.signaturesSecret" -}}
{{- if .Values.signatures.existingSecret -}}
{{- .Values.signatures.existingSecret -}}
{{- else if .Values.signatures.publicKey -}}
{{- printf "%s-signatures" (include "plugboard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
The longest a hook can run: the HTTP apparatus timeout or the largest WebAssembly deadline a spec
may set, in whole seconds.
*/}}
{{- define "plugboard.longestHookSeconds" -}}
{{- $wasm := div (add (int .Values.wasm.maxTimeoutMs) 999) 1000 -}}
{{- max (int .Values.httpTimeoutSeconds) $wasm -}}
{{- end -}}

{{/*
The pod's termination grace: the operator's own shutdown grace, plus the longest hook still in
flight when it ends, plus a few seconds to exit. An explicit value wins.
*/}}
{{- define "plugboard.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add (int .Values.shutdownGraceSeconds) (include "plugboard.longestHookSeconds" . | int) 5 -}}
{{- end -}}
{{- end -}}

{{/* One NetworkPolicy egress rule, as a one-item list: `to` the given CIDRs (anywhere when none), on the given TCP ports (any when none). */}}
{{- define "plugboard.egressRule" -}}
{{- $rule := dict -}}
{{- with .cidrs -}}
{{- $to := list -}}
{{- range . }}{{ $to = append $to (dict "ipBlock" (dict "cidr" .)) }}{{ end -}}
{{- $_ := set $rule "to" $to -}}
{{- end -}}
{{- with .ports -}}
{{- $ports := list -}}
{{- range . }}{{ $ports = append $ports (dict "protocol" "TCP" "port" (int .)) }}{{ end -}}
{{- $_ := set $rule "ports" $ports -}}
{{- end -}}
{{- list $rule | toYaml -}}
{{- end -}}
