{{/* Names and labels. */}}
{{- define "mcpauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcpauthz.fullname" -}}
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

{{/* The name of one component's objects: (dict "root" $ "component" "authz"). */}}
{{- define "mcpauthz.componentName" -}}
{{- printf "%s-%s" (include "mcpauthz.fullname" .root | trunc 48 | trimSuffix "-") .component }}
{{- end }}

{{- define "mcpauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcpauthz.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mcpauthz.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcpauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mcpauthz
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mcpauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcpauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcpauthz.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Addresses. */}}
{{- define "mcpauthz.authzHost" -}}
{{- printf "%s.%s.svc.%s" (include "mcpauthz.componentName" (dict "root" . "component" "authz")) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* AUTHZ_ADDR: dns:/// over the headless Service, so gRPC resolves every authz
pod and balances over them; a ClusterIP would pin each gateway to one pod over
its one HTTP/2 connection. */}}
{{- define "mcpauthz.authzAddr" -}}
{{- printf "dns:///%s:%d" (include "mcpauthz.authzHost" .) (int .Values.authz.grpcPort) }}
{{- end }}

{{- define "mcpauthz.devauthURL" -}}
{{- printf "http://%s.%s.svc.%s:%d" (include "mcpauthz.componentName" (dict "root" . "component" "devauth")) .Release.Namespace .Values.clusterDomain (int .Values.devauth.port) }}
{{- end }}

{{/* The issuer every party compares: AUTHORIZATION_SERVER. */}}
{{- define "mcpauthz.issuer" -}}
{{- if .Values.devauth.enabled }}
{{- printf "%s/oauth/2.1" (trimSuffix "/" .Values.devauth.publicURL) }}
{{- else }}
{{- .Values.authorizationServer.issuer }}
{{- end }}
{{- end }}

{{- define "mcpauthz.publicURL" -}}
{{- $g := .Values.gateway }}
{{- if $g.publicURL }}
{{- trimSuffix "/" $g.publicURL }}
{{- else if and $g.ingress.enabled $g.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" (ne $g.ingress.tlsSecret "")) $g.ingress.host }}
{{- else }}
{{- printf "http://localhost:%d" (int $g.port) }}
{{- end }}
{{- end }}

{{/* Credentials. The chart creates its Secret when it has something to put in it. */}}
{{- define "mcpauthz.credentialsSecretCreated" -}}
{{- $c := .Values.credentials }}
{{- if or .Values.devauth.enabled (and (not $c.existingSecret) (or $c.clientSecret $c.apiKey)) (and .Values.redis.url (not .Values.redis.existingSecret)) }}true{{ end }}
{{- end }}

{{- define "mcpauthz.createdSecretName" -}}
{{- printf "%s-credentials" (include "mcpauthz.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret and keys authz reads its client secret and API key from, or
nothing when there is none (authz then fails at start naming the variable). */}}
{{- define "mcpauthz.credentialsSecretName" -}}
{{- if .Values.devauth.enabled }}
{{- include "mcpauthz.createdSecretName" . }}
{{- else if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if or .Values.credentials.clientSecret .Values.credentials.apiKey }}
{{- include "mcpauthz.createdSecretName" . }}
{{- end }}
{{- end }}

{{- define "mcpauthz.clientID" -}}
{{- if .Values.devauth.enabled }}{{ .Values.devauth.clientID }}{{ else }}{{ .Values.credentials.clientID }}{{ end }}
{{- end }}

{{/* env entries of the secret variables of authz (the OTLP headers too). */}}
{{- define "mcpauthz.authzSecretEnv" -}}
{{- $name := include "mcpauthz.credentialsSecretName" . }}
{{- $existing := and (not .Values.devauth.enabled) (ne .Values.credentials.existingSecret "") }}
{{- if $name }}
{{- if or $existing .Values.devauth.enabled .Values.credentials.clientSecret }}
- name: REQUEST_VALIDATION_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ ternary .Values.credentials.keys.clientSecret "REQUEST_VALIDATION_CLIENT_SECRET" $existing }}
{{- end }}
{{- if or $existing .Values.devauth.enabled .Values.credentials.apiKey }}
- name: PROPELAUTH_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $name }}
      key: {{ ternary .Values.credentials.keys.apiKey "PROPELAUTH_API_KEY" $existing }}
      {{- if $existing }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- include "mcpauthz.redisEnv" . }}
{{- include "mcpauthz.tracingSecretEnv" . }}
{{- end }}

{{- define "mcpauthz.redisEnv" -}}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- else if .Values.redis.url }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mcpauthz.createdSecretName" . }}
      key: REDIS_URL
{{- end }}
{{- end }}

{{/* tracingConfig: the OTEL_* ConfigMap data of both services, from
.Values.tracing; nothing when no endpoint is set (tracing off). */}}
{{- define "mcpauthz.tracingConfig" -}}
{{- with .Values.tracing }}
{{- if .endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ .protocol | quote }}
OTEL_TRACES_SAMPLER: {{ .sampler | quote }}
{{- with .samplerArg }}
OTEL_TRACES_SAMPLER_ARG: {{ toString . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* tracingSecretEnv: env entries of OTEL_EXPORTER_OTLP_HEADERS (it may hold
the collector's API key) from tracing.headersSecret. */}}
{{- define "mcpauthz.tracingSecretEnv" -}}
{{- if and .Values.tracing.endpoint .Values.tracing.headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.tracing.headersSecret }}
      key: {{ .Values.tracing.headersSecretKey }}
{{- end }}
{{- end }}

{{/* The variables the chart sets from tracing.* and gateway.audit.*, refused
in authz.env and gateway.env. */}}
{{- define "mcpauthz.tracingManaged" -}}
OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_PROTOCOL OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_ARG
{{- end }}

{{/* Where the upstreams file and the identity keys are mounted. */}}
{{- define "mcpauthz.upstreamsDir" -}}/etc/mcpauthz/upstreams{{- end }}
{{- define "mcpauthz.identityDir" -}}/etc/mcpauthz/identity{{- end }}

{{/* memLimitEnv: GOMEMLIMIT from the container's memory limit, so that the Go
runtime collects harder as it nears the limit instead of being killed (the
gateway runs with GOGC=400, and its decision cache and authz's L1 grow with
active tokens); none without a limit, or when the component's env sets
GOMEMLIMIT itself: (dict "v" .Values.authz "container" "authz"). */}}
{{- define "mcpauthz.memLimitEnv" -}}
{{- if and (dig "limits" "memory" "" (.v.resources | default dict)) (not (hasKey (.v.env | default dict) "GOMEMLIMIT")) }}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      containerName: {{ .container }}
      resource: limits.memory
{{- end }}
{{- end }}

{{/* federationEnv: env entries of the gateway from federation.secretEnv
(variables the upstreams file names as ${NAME}), each from a Secret. */}}
{{- define "mcpauthz.federationEnv" -}}
{{- if .Values.federation.upstreams }}
{{- range $name, $ref := .Values.federation.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- end }}

{{/* extraEnv renders a component's `env` map into a ConfigMap's data, refusing
names the chart sets itself or that hold secrets: (dict "env" .Values.authz.env
"managed" (list ...) "component" "authz"). */}}
{{- define "mcpauthz.extraEnv" -}}
{{- $secret := list "REQUEST_VALIDATION_CLIENT_SECRET" "PROPELAUTH_API_KEY" "REDIS_URL" "OTEL_EXPORTER_OTLP_HEADERS" "OTEL_EXPORTER_OTLP_TRACES_HEADERS" }}
{{- range $k, $v := .env }}
{{- if has $k $secret }}
{{- fail (printf "%s.env.%s: a secret; set it through the chart's Secret values (credentials, redis, tracing.headersSecret), not a ConfigMap" $.component $k) }}
{{- end }}
{{- if has $k $.managed }}
{{- fail (printf "%s.env.%s: set by the chart from its own values; use those instead" $.component $k) }}
{{- end }}
{{ $k }}: {{ toString $v | quote }}
{{- end }}
{{- end }}

{{/* Security: non-root (the images' UID 65532), read-only root, no capabilities. */}}
{{- define "mcpauthz.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mcpauthz.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling of one component: (dict "root" $ "component" "authz" "v" .Values.authz). */}}
{{- define "mcpauthz.scheduling" -}}
{{- with .v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
{{- if .v.topologySpreadConstraints }}
  {{- toYaml .v.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "mcpauthz.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}
