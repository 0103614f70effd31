{{/* Chart name. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release plus chart name, 63 characters at most. */}}
{{- define "sluice.fullname" -}}
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

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the metrics Service: the `job` label of the scraped series. */}}
{{- define "sluice.metricsName" -}}
{{- printf "%s-metrics" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret with the server certificate of the tls and wss listeners. */}}
{{- define "sluice.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "sluice.fullname" .) }}
{{- else }}
{{- .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{- define "sluice.tlsEnabled" -}}
{{- if or .Values.listeners.tls.enabled .Values.listeners.wss.enabled }}true{{- end }}
{{- end }}

{{/* The Secret with the Redis password. */}}
{{- define "sluice.redisSecretName" -}}
{{- default (printf "%s-redis" (include "sluice.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "sluice.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else -}}
redis-password
{{- end }}
{{- end }}

{{/* The Secret with the password file and the ACL file, made by the chart from `content`. */}}
{{- define "sluice.securitySecretName" -}}
{{- printf "%s-security" (include "sluice.fullname" .) }}
{{- end }}

{{- define "sluice.redisAuth" -}}
{{- if and (ne .Values.redis.mode "none") .Values.redis.auth.enabled }}true{{- end }}
{{- end }}

{{/* Contradictory values fail the rendering with a message naming the value. */}}
{{- define "sluice.validate" -}}
{{- $v := .Values }}
{{- if and (eq $v.redis.mode "none") (or (gt (int $v.replicaCount) 1) $v.autoscaling.enabled) }}
{{- fail "redis.mode none keeps each node's sessions in its own memory: set replicaCount 1 (and autoscaling.enabled false), or use Redis" }}
{{- end }}
{{- if not (or $v.listeners.tcp.enabled $v.listeners.tls.enabled $v.listeners.ws.enabled $v.listeners.wss.enabled) }}
{{- fail "listeners: enable at least one of tcp, tls, ws, wss" }}
{{- end }}
{{- if and (include "sluice.tlsEnabled" .) (not (or $v.tls.existingSecret $v.tls.certManager.enabled)) }}
{{- fail "listeners.tls/wss: need tls.existingSecret or tls.certManager.enabled" }}
{{- end }}
{{- if and $v.tls.certManager.enabled (not $v.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.issuerRef.name is required with tls.certManager.enabled" }}
{{- end }}
{{- if and $v.tls.certManager.enabled (not $v.tls.certManager.dnsNames) }}
{{- fail "tls.certManager.dnsNames: name at least one DNS name devices use" }}
{{- end }}
{{- if and (or $v.listeners.tls.requestCert $v.listeners.tls.requireClientCert) (not $v.tls.clientCA.existingSecret) }}
{{- fail "listeners.tls.requestCert/requireClientCert need tls.clientCA.existingSecret (the CA device certificates chain to)" }}
{{- end }}
{{- if and $v.listeners.tls.requireClientCert (not $v.listeners.tls.requestCert) }}
{{- fail "listeners.tls.requireClientCert needs listeners.tls.requestCert" }}
{{- end }}
{{- if and $v.listeners.proxyProtocol (not $v.listeners.trustedProxies) }}
{{- fail "listeners.proxyProtocol needs listeners.trustedProxies (the load balancer's addresses)" }}
{{- end }}
{{- if and (include "sluice.redisAuth" .) (not (or $v.redis.auth.existingSecret $v.redis.auth.password)) }}
{{- fail "redis.auth.enabled needs redis.auth.existingSecret or redis.auth.password" }}
{{- end }}
{{- if and (eq $v.redis.mode "standalone") (contains "@" $v.redis.url) }}
{{- fail "redis.url must not carry credentials (they would land in a ConfigMap): use redis.auth" }}
{{- end }}
{{- if and $v.admin.enabled (not $v.admin.tokens) }}
{{- fail "admin.enabled needs admin.tokens (SHA-256 hex of each bearer token)" }}
{{- end }}
{{- if and $v.admin.enabled (eq $v.redis.mode "none") }}
{{- fail "admin.enabled needs Redis (redis.mode): the device registry lives there" }}
{{- end }}
{{- if and $v.listeners.tls.registryCrl (not $v.admin.deviceCa.existingSecret) }}
{{- fail "listeners.tls.registryCrl needs admin.deviceCa.existingSecret (the CA whose CRL it loads)" }}
{{- end }}
{{- end }}

{{/* Sluice's config file, built from values (key names: src/config/schema.ts). */}}
{{- define "sluice.config" -}}
{{- $v := .Values }}
{{- $l := $v.listeners }}
{{- $listeners := list }}
{{- if $l.tcp.enabled }}
{{- $listeners = append $listeners (dict "type" "tcp" "host" "0.0.0.0" "port" $l.tcp.port "proxyProtocol" $l.proxyProtocol "trustedProxies" $l.trustedProxies) }}
{{- end }}
{{- $tlsFiles := dict "cert" "/etc/sluice/tls/tls.crt" "key" "/etc/sluice/tls/tls.key" "minVersion" $v.tls.minVersion }}
{{- if $l.tls.enabled }}
{{- $tls := dict "type" "tls" "host" "0.0.0.0" "port" $l.tls.port "proxyProtocol" $l.proxyProtocol "trustedProxies" $l.trustedProxies "requestCert" $l.tls.requestCert "requireClientCert" $l.tls.requireClientCert "registryCrl" (default false $l.tls.registryCrl) }}
{{- if $v.tls.clientCA.existingSecret }}
{{- $_ := set $tls "ca" (printf "/etc/sluice/client-ca/%s" $v.tls.clientCA.key) }}
{{- end }}
{{- $listeners = append $listeners (merge $tls $tlsFiles) }}
{{- end }}
{{- if $l.ws.enabled }}
{{- $listeners = append $listeners (dict "type" "ws" "host" "0.0.0.0" "port" $l.ws.port "path" $l.ws.path "trustedProxies" $l.trustedProxies) }}
{{- end }}
{{- if $l.wss.enabled }}
{{- $listeners = append $listeners (merge (dict "type" "wss" "host" "0.0.0.0" "port" $l.wss.port "path" $l.wss.path "trustedProxies" $l.trustedProxies) $tlsFiles) }}
{{- end }}
{{- $auth := dict "allowAnonymous" $v.auth.allowAnonymous "certificateIdentity" $v.auth.certificateIdentity }}
{{- if $v.auth.clientIdPattern }}
{{- $_ := set $auth "clientIdPattern" $v.auth.clientIdPattern }}
{{- end }}
{{- if or $v.auth.passwordFile.existingSecret $v.auth.passwordFile.content }}
{{- $_ := set $auth "passwordFile" (printf "/etc/sluice/passwd/%s" (ternary $v.auth.passwordFile.key "passwd" (not (empty $v.auth.passwordFile.existingSecret)))) }}
{{- end }}
{{- $config := dict "listeners" $listeners "http" (dict "host" "0.0.0.0" "port" $v.http.port) "log" $v.log "auth" $auth "limits" $v.limits "shutdown" $v.shutdown }}
{{- if or $v.acl.existingSecret $v.acl.content }}
{{- $_ := set $config "acl" (dict "file" (printf "/etc/sluice/acl/%s" (ternary $v.acl.key "acl.conf" (not (empty $v.acl.existingSecret))))) }}
{{- end }}
{{- if ne $v.redis.mode "none" }}
{{- $redis := dict "keyPrefix" $v.redis.keyPrefix "messageFormat" $v.redis.messageFormat }}
{{- if eq $v.redis.mode "sentinel" }}
{{- $_ := set $redis "sentinels" $v.redis.sentinel.hosts }}
{{- $_ := set $redis "name" $v.redis.sentinel.masterName }}
{{- else }}
{{- $_ := set $redis "url" $v.redis.url }}
{{- end }}
{{- $_ := set $config "redis" $redis }}
{{- end }}
{{- if $v.sparkplug }}
{{- $_ := set $config "sparkplug" $v.sparkplug }}
{{- end }}
{{- if $v.admin.enabled }}
{{- $admin := dict "host" "127.0.0.1" "port" $v.admin.port "tokens" $v.admin.tokens }}
{{- if $v.admin.deviceCa.existingSecret }}
{{- $_ := set $admin "ca" (dict "cert" "/etc/sluice/device-ca/ca.crt" "key" "/etc/sluice/device-ca/ca.key" "deviceCertificateDays" $v.admin.deviceCa.deviceCertificateDays) }}
{{- end }}
{{- $_ := set $config "admin" $admin }}
{{- end }}
{{- toYaml $config }}
{{- end }}
