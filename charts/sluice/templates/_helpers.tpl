{{/* Names, labels and small shared pieces of the Sluice chart. */}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-sluice, or the release name when it already says sluice. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.controller.fullname" -}}{{ include "sluice.fullname" . }}-controller{{- end -}}
{{- define "sluice.proxy.fullname" -}}{{ include "sluice.fullname" . }}-proxy{{- end -}}
{{- define "sluice.proxy.headless" -}}{{ include "sluice.fullname" . }}-proxy-headless{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: pass (dict "root" $ "component" "proxy"). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sluice.componentLabels" -}}
{{ include "sluice.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sluice.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "sluice.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.proxy.serviceAccountName" -}}
{{- if .Values.proxy.serviceAccount.create -}}
{{- default (include "sluice.proxy.fullname" .) .Values.proxy.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.proxy.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: pass (dict "root" $ "image" .Values.proxy.image). */}}
{{- define "sluice.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .root.Values.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.imageRegistry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sluice.streamTokenSecretName" -}}
{{- default (printf "%s-stream-token" (include "sluice.fullname" .)) .Values.streamToken.existingSecret -}}
{{- end -}}

{{- define "sluice.redisSecretName" -}}
{{- default (printf "%s-redis" (include "sluice.fullname" .)) .Values.state.redis.existingSecret -}}
{{- end -}}

{{- define "sluice.redisSecretKey" -}}
{{- if .Values.state.redis.existingSecret -}}{{ .Values.state.redis.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}

{{- define "sluice.raftSecretName" -}}
{{- default (printf "%s-raft-token" (include "sluice.fullname" .)) .Values.state.raft.existingSecret -}}
{{- end -}}

{{- define "sluice.raftSecretKey" -}}
{{- if .Values.state.raft.existingSecret -}}{{ .Values.state.raft.existingSecretKey }}{{- else -}}token{{- end -}}
{{- end -}}

{{/* SLUICE_RAFT_PEERS: every replica, `N+1=<pod N>.<headless>.<namespace>.svc:<port>`. */}}
{{- define "sluice.raftPeers" -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.proxy.replicas) -}}
{{- $peers = append $peers (printf "%d=%s-%d.%s.%s.svc:%d" (add1 $i) (include "sluice.proxy.fullname" $) $i (include "sluice.proxy.headless" $) $.Release.Namespace (int $.Values.state.raft.port)) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}

{{/* A Raft quorum: floor(replicas/2)+1. */}}
{{- define "sluice.raftQuorum" -}}
{{- add1 (div (int .Values.proxy.replicas) 2) -}}
{{- end -}}

{{/* "true" when /var/lib/sluice is a PersistentVolumeClaim per replica:
proxy.persistence.enabled, or when it is unset, state.type raft. */}}
{{- define "sluice.proxy.persistent" -}}
{{- $enabled := .Values.proxy.persistence.enabled -}}
{{- if kindIs "invalid" $enabled -}}
{{- if eq .Values.state.type "raft" }}true{{ end -}}
{{- else if $enabled -}}
true
{{- end -}}
{{- end -}}

{{- define "sluice.controllerUrl" -}}
{{- default (printf "http://%s.%s.svc:%d" (include "sluice.controller.fullname" .) .Release.Namespace (int .Values.controller.streamPort)) .Values.proxy.controllerUrl -}}
{{- end -}}

{{/* Prefer spreading a component's pods over nodes, unless affinity is given. */}}
{{- define "sluice.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "sluice.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* Checks of values that the schema cannot express. */}}
{{- define "sluice.validate" -}}
{{- if and (eq .Values.state.type "redis") (not .Values.state.redis.url) (not .Values.state.redis.existingSecret) -}}
{{- fail "state.type redis needs state.redis.url or state.redis.existingSecret" -}}
{{- end -}}
{{- if and (ne .Values.state.type "redis") (or .Values.state.redis.url .Values.state.redis.existingSecret) -}}
{{- fail "state.redis is set, but state.type is not redis" -}}
{{- end -}}
{{- /* state.raft may be missing: `helm upgrade --reuse-values` keeps the values
of a chart from before it. */}}
{{- if and (ne .Values.state.type "raft") (.Values.state.raft | default dict).existingSecret -}}
{{- fail "state.raft.existingSecret is set, but state.type is not raft" -}}
{{- end -}}
{{- if eq .Values.state.type "raft" -}}
{{- if not (.Values.state.raft | default dict).port -}}
{{- fail "state.type raft needs state.raft.port (missing after `helm upgrade --reuse-values` from a chart without it: add --reset-values, or --set state.raft.port=7101)" -}}
{{- end -}}
{{- $port := int .Values.state.raft.port -}}
{{- if or (eq $port (int .Values.proxy.port)) (eq $port (int .Values.proxy.adminPort)) -}}
{{- fail (printf "state.raft.port %d is also proxy.port or proxy.adminPort" $port) -}}
{{- end -}}
{{- range .Values.proxy.extraEnv -}}
{{- if hasPrefix "SLUICE_RAFT_" .name -}}
{{- fail (printf "proxy.extraEnv sets %s, which the chart sets from proxy.replicas and state.raft" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
