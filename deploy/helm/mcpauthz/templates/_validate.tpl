{{/* Values that cannot work together fail the install with one line naming them. */}}
{{- define "mcpauthz.validate" -}}
{{- if .Values.devauth.enabled }}
{{- if or .Values.authorizationServer.authURL .Values.authorizationServer.issuer .Values.authorizationServer.introspectionURL .Values.credentials.existingSecret .Values.credentials.clientSecret }}
{{- fail "devauth.enabled: the demo authorization server replaces authorizationServer.* and credentials.*; unset them, or turn devauth off" }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.authzSecret }}
{{- fail "tls.enabled: tls.authzSecret must name the Secret with authz's certificate (tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- if not .Values.tls.gatewaySecret }}
{{- fail "tls.enabled: tls.gatewaySecret must name the Secret with the gateway's client certificate and authz's CA (tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- end }}
{{- if and (or .Values.tls.getUserCallers .Values.tls.invalidateCallers) (not (and .Values.tls.enabled .Values.tls.mutual)) }}
{{- fail "tls.getUserCallers and tls.invalidateCallers need mutual TLS (tls.enabled and tls.mutual): without client certificates there is no identity to check" }}
{{- end }}
{{- if and .Values.gateway.ingress.enabled (not .Values.gateway.ingress.host) }}
{{- fail "gateway.ingress.enabled: gateway.ingress.host is required" }}
{{- end }}
{{- if and .Values.credentials.existingSecret (or .Values.credentials.clientSecret .Values.credentials.apiKey) }}
{{- fail "credentials.existingSecret and credentials.clientSecret or apiKey: set the Secret or the values, not both" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "redis.url and redis.existingSecret: set one" }}
{{- end }}
{{- $fed := .Values.federation }}
{{- if $fed.upstreams }}
{{- $signs := false }}
{{- range $i, $u := $fed.upstreams }}
{{- if ne (toString (default "jwt" $u.identity)) "none" }}
{{- $signs = true }}
{{- end }}
{{- range $field := list "headers" "env" }}
{{- range $k, $val := (get $u $field | default dict) }}
{{- if and (regexMatch "(?i)(authorization|api[-_]?key|token|secret|password|passwd|credential|cookie)" $k) (not (contains "${" (toString $val))) }}
{{- fail (printf "federation.upstreams[%d].%s.%s: looks like a secret, and the upstreams file is a ConfigMap; write it as ${NAME} and set NAME in federation.secretEnv (a Secret's key)" $i $field $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $signs (not $fed.identity.signingKeySecret) (or .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.replicaCount) 1)) }}
{{- fail "federation.identity.signingKeySecret is required with more than one gateway replica (gateway.replicaCount > 1 or gateway.autoscaling): without it each replica signs identity assertions with a key of its own, and upstreams, fetching one replica's JWKS, refuse the others'" }}
{{- end }}
{{- else if $fed.identity.signingKeySecret }}
{{- fail "federation.identity.signingKeySecret: set without federation.upstreams; the key signs identity assertions for upstreams only" }}
{{- end }}
{{- if and .Values.tracing.headersSecret (not .Values.tracing.endpoint) }}
{{- fail "tracing.headersSecret: set without tracing.endpoint; tracing is off without an endpoint" }}
{{- end }}
{{- range $c := list "authz" "gateway" }}
{{- $v := index $.Values $c }}
{{- if le (int $v.terminationGracePeriodSeconds) (int $v.preStopSleepSeconds) }}
{{- fail (printf "%s.terminationGracePeriodSeconds must exceed %s.preStopSleepSeconds, or SIGKILL comes before the service's own shutdown" $c $c) }}
{{- end }}
{{- end }}
{{- end }}
