{{/*
The agent's part of a pod: the envoy-bootstrap init container, the envoy and agent containers, their volumes and
the pod annotation that rolls the pods when agent.yaml changes. The chart's own Deployment (mode allInOne) is built
from these; in mode sidecar a parent chart puts them into its own model Deployment, called with this chart's
context:

  {{- include "rollback-agent.sidecar.containers" (index .Subcharts "rollback-agent") | nindent 8 }}
*/}}

{{- define "rollback-agent.sidecar.podAnnotations" -}}
# A new agent.yaml rolls the pods (the agent reads it at start). Rule files are not in here: they hot-reload.
checksum/agent-config: {{ include "rollback-agent.agentConfig" . | sha256sum }}
{{- end -}}

{{- define "rollback-agent.sidecar.initContainers" -}}
{{- include "rollback-agent.checks" . -}}
{{- $configPath := include "rollback-agent.configPath" . -}}
{{- $agentImage := include "rollback-agent.image" (dict "image" .Values.agent.image "default" .Chart.AppVersion) -}}
# Writes Envoy's bootstrap from the same agent.yaml the agent runs with, so the two always agree.
- name: envoy-bootstrap
  image: {{ $agentImage }}
  imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
  args:
    - bootstrap
    - --config
    - {{ $configPath }}
    - --node-id
    - $(POD_NAME)
    - --output
    - {{ include "rollback-agent.bootstrapPath" . }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
  securityContext:
    {{- toYaml .Values.agentSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.agent.resources | nindent 4 }}
  volumeMounts:
    - name: agent-config
      mountPath: {{ $configPath }}
      subPath: agent.yaml
      readOnly: true
    - name: envoy-bootstrap
      mountPath: {{ include "rollback-agent.bootstrapDir" . }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{- define "rollback-agent.sidecar.containers" -}}
{{- include "rollback-agent.checks" . -}}
{{- $cfg := include "rollback-agent.agentConfig" . | fromYaml -}}
{{- $configPath := include "rollback-agent.configPath" . -}}
{{- $agentImage := include "rollback-agent.image" (dict "image" .Values.agent.image "default" .Chart.AppVersion) -}}
{{- $envoyImage := include "rollback-agent.image" (dict "image" .Values.envoy.image "default" "v1.40.0") -}}
{{- $tokenFile := $cfg.control.token_file | default "" | toString -}}
{{- $tokensFile := $cfg.control.tokens_file | default "" | toString -}}
{{- $adminPort := int $cfg.envoy.admin.port -}}
{{- $signingKey := "" -}}
{{- if include "rollback-agent.signing" . -}}
{{- $signingKey = $cfg.audit.signing.key_file | toString -}}
{{- end -}}
- name: envoy
  image: {{ $envoyImage }}
  imagePullPolicy: {{ .Values.envoy.image.pullPolicy }}
  command: ["envoy"]
  args:
    - --config-path
    - {{ include "rollback-agent.bootstrapPath" . }}
    - --disable-hot-restart
    - --concurrency
    - {{ .Values.envoy.concurrency | int | quote }}
    - --log-level
    - {{ .Values.envoy.logLevel | quote }}
    {{- range .Values.envoy.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: traffic
      containerPort: {{ int $cfg.envoy.listener.port }}
      protocol: TCP
  readinessProbe:
    {{- if .Values.envoy.readinessProbe }}
    {{- toYaml .Values.envoy.readinessProbe | nindent 4 }}
    {{- else }}
    # GET http://127.0.0.1:{{ $adminPort }}/ready from inside the container (bash /dev/tcp; the image has no curl).
    exec:
      command:
        - bash
        - -c
        - {{ printf `exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 && IFS=' ' read -r _ code _ <&3 && [ "$code" = 200 ]` $adminPort | quote }}
    periodSeconds: 2
    timeoutSeconds: 2
    failureThreshold: 3
    {{- end }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", {{ .Values.envoy.preStopSleepSeconds | int | quote }}]
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    runAsUser: {{ int .Values.envoy.runAsUser }}
    runAsGroup: {{ int .Values.envoy.runAsGroup }}
    capabilities:
      drop: ["ALL"]
  resources:
    {{- toYaml .Values.envoy.resources | nindent 4 }}
  volumeMounts:
    - name: envoy-bootstrap
      mountPath: {{ include "rollback-agent.bootstrapDir" . }}
      readOnly: true
- name: agent
  image: {{ $agentImage }}
  imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
  args: ["run", "--config", {{ $configPath | quote }}, "--log-level", {{ .Values.agent.logLevel | quote }}]
  {{- with .Values.agent.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: agent-http
      containerPort: {{ int $cfg.http.port }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: agent-http
    {{- toYaml .Values.agent.livenessProbe | nindent 4 }}
  readinessProbe:
    # Ready once the Envoy in this pod has ACKed the agent's current routes.
    httpGet:
      path: /readyz
      port: agent-http
    {{- toYaml .Values.agent.readinessProbe | nindent 4 }}
  securityContext:
    {{- toYaml .Values.agentSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.agent.resources | nindent 4 }}
  volumeMounts:
    - name: agent-config
      mountPath: {{ $configPath }}
      subPath: agent.yaml
      readOnly: true
    - name: rules
      mountPath: {{ .Values.rules.mountPath }}
      readOnly: true
    {{- if include "rollback-agent.registryEnabled" . }}
    - name: registry
      mountPath: {{ include "rollback-agent.registryDir" . }}
      readOnly: true
    {{- end }}
    {{- if $tokenFile }}
    - name: control-token
      mountPath: {{ dir $tokenFile }}
      readOnly: true
    {{- end }}
    {{- if $tokensFile }}
    - name: control-tokens
      mountPath: {{ dir $tokensFile }}
      readOnly: true
    {{- end }}
    {{- if .Values.fleetAudit.enabled }}
    - name: fleet-dsn
      mountPath: {{ dir $cfg.audit.fleet.dsn_file }}
      readOnly: true
    {{- end }}
    {{- if $signingKey }}
    - name: audit-signing-key
      mountPath: {{ dir $signingKey }}
      readOnly: true
    {{- end }}
    - name: state
      mountPath: {{ $cfg.state_dir }}
    - name: tmp
      mountPath: /tmp
    {{- with .Values.agent.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "rollback-agent.sidecar.volumes" -}}
{{- include "rollback-agent.checks" . -}}
{{- $cfg := include "rollback-agent.agentConfig" . | fromYaml -}}
{{- $fullname := include "rollback-agent.fullname" . -}}
{{- $tokenFile := $cfg.control.token_file | default "" | toString -}}
{{- $tokensFile := $cfg.control.tokens_file | default "" | toString -}}
{{- $persistence := .Values.state.persistence -}}
{{- $fleet := .Values.fleetAudit -}}
{{- $signingKey := "" -}}
{{- if include "rollback-agent.signing" . -}}
{{- $signingKey = $cfg.audit.signing.key_file | toString -}}
{{- end -}}
- name: agent-config
  configMap:
    name: {{ $fullname }}-agent
- name: rules
  configMap:
    {{- if .Values.rules.existingConfigMap }}
    name: {{ .Values.rules.existingConfigMap }}
    {{- else }}
    name: {{ $fullname }}-rules
    {{- if include "rollback-agent.rulesNested" . }}
    # Keys cannot hold '/': project "tiers__x.yaml" back to tiers/x.yaml.
    items:
      {{- range $name, $_ := .Values.rules.files }}
      - key: {{ include "rollback-agent.ruleKey" $name }}
        path: {{ $name }}
      {{- end }}
    {{- end }}
    {{- end }}
{{- if include "rollback-agent.registryEnabled" . }}
- name: registry
  configMap:
    name: {{ .Values.registry.existingConfigMap | default (printf "%s-registry" $fullname) }}
    items:
      - key: {{ .Values.registry.existingConfigMapKey | default "registry.yaml" }}
        path: registry.yaml
{{- end }}
{{- if $tokenFile }}
- name: control-token
  secret:
    secretName: {{ include "rollback-agent.tokenSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "rollback-agent.tokenSecretKey" . }}
        path: {{ base $tokenFile }}
{{- end }}
{{- if $tokensFile }}
- name: control-tokens
  secret:
    secretName: {{ .Values.controlTokens.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.controlTokens.existingSecretKey | default "tokens.yaml" }}
        path: {{ base $tokensFile }}
{{- end }}
{{- if $fleet.enabled }}
- name: fleet-dsn
  secret:
    secretName: {{ $fleet.existingSecret | default (printf "%s-fleet-dsn" $fullname) }}
    defaultMode: 0440
    items:
      - key: {{ if $fleet.existingSecret }}{{ $fleet.existingSecretKey | default "dsn" }}{{ else }}dsn{{ end }}
        path: {{ base $cfg.audit.fleet.dsn_file }}
{{- end }}
{{- if $signingKey }}
- name: audit-signing-key
  secret:
    secretName: {{ .Values.audit.signing.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.audit.signing.existingSecretKey | default "audit-key" }}
        path: {{ base $signingKey }}
{{- end }}
{{- if not .Values.state.statefulSet.enabled }}
- name: state
  {{- if $persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ $persistence.existingClaim | default (printf "%s-state" $fullname) }}
  {{- else }}
  emptyDir:
    {{- toYaml .Values.state.emptyDir | nindent 4 }}
  {{- end }}
{{- end }}
- name: envoy-bootstrap
  emptyDir:
    sizeLimit: 1Mi
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.agent.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}
