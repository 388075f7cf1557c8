{{/*
Names and labels.
*/}}
{{- define "rollback-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rollback-agent.fullname" -}}
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

{{- define "rollback-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollback-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The labels of the pods that run the agent: the chart's own (allInOne) or those of your Deployment's pods (sidecar).
*/}}
{{- define "rollback-agent.podSelector" -}}
{{- if eq (include "rollback-agent.mode" .) "sidecar" -}}
{{- toYaml .Values.sidecar.podSelector -}}
{{- else -}}
{{- include "rollback-agent.selectorLabels" . -}}
{{- end -}}
{{- end -}}

{{- define "rollback-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rollback-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
rollback-agent/model: {{ regexReplaceAll "[^A-Za-z0-9]+$" (.Values.model.name | toString | trunc 63) "" | quote }}
{{- end -}}

{{/*
Fixed paths inside the pod. The agent image's CMD reads /etc/rollback-agent/agent.yaml.
*/}}
{{- define "rollback-agent.configPath" -}}/etc/rollback-agent/agent.yaml{{- end -}}
{{- define "rollback-agent.bootstrapDir" -}}/etc/envoy-bootstrap{{- end -}}
{{- define "rollback-agent.bootstrapPath" -}}/etc/envoy-bootstrap/envoy.yaml{{- end -}}

{{/*
"allInOne" (the chart owns the model Deployment) or "sidecar" (a parent chart's Deployment includes the agent's part).
*/}}
{{- define "rollback-agent.mode" -}}
{{- $mode := .Values.mode | default "allInOne" | toString -}}
{{- if not (has $mode (list "allInOne" "sidecar")) -}}
{{- fail (printf "mode: %q is not a mode: allInOne (the chart runs your model servers) or sidecar (your chart's Deployment includes the agent)" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}

{{/*
The version registry file (docs/registry.md): "true" when one is mounted, from registry.file or a ConfigMap of yours.
*/}}
{{- define "rollback-agent.registryEnabled" -}}
{{- $r := .Values.registry | default dict -}}
{{- if and $r.file $r.existingConfigMap -}}
{{- fail "registry: set either registry.file or registry.existingConfigMap, not both" -}}
{{- else if or $r.file $r.existingConfigMap -}}
true
{{- end -}}
{{- end -}}
{{- define "rollback-agent.registryDir" -}}/etc/rollback-agent/registry{{- end -}}

{{- define "rollback-agent.image" -}}
{{- $tag := .image.tag | default .default | toString -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The control API token: the Secret the agent reads it from, and the key in it. There is deliberately no generated
default: a random token would change on every upgrade (and `lookup` does not work in dry runs or GitOps renders).
*/}}
{{- define "rollback-agent.tokenSecretName" -}}
{{- $t := .Values.controlToken -}}
{{- if and $t.existingSecret $t.value -}}
{{- fail "controlToken: set either controlToken.existingSecret or controlToken.value, not both" -}}
{{- else if $t.existingSecret -}}
{{- $t.existingSecret -}}
{{- else if $t.value -}}
{{- printf "%s-control-token" (include "rollback-agent.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else if not .Values.controlTokens.existingSecret -}}
{{- fail "controlToken: the agent's control API needs a bearer token. Set controlToken.existingSecret to a Secret you manage (the token under the key controlToken.existingSecretKey, default \"token\"), e.g. kubectl create secret generic my-token --from-literal=token=$(openssl rand -hex 32); or set controlToken.value and the chart creates the Secret. The chart never generates one: it would change on every helm upgrade." -}}
{{- end -}}
{{- end -}}

{{- define "rollback-agent.tokenSecretKey" -}}
{{- if .Values.controlToken.existingSecret -}}
{{- .Values.controlToken.existingSecretKey | default "token" -}}
{{- else -}}
token
{{- end -}}
{{- end -}}

{{/*
"true" when the audit chain is signed with a key from audit.signing.existingSecret; fails on a half-set value.
*/}}
{{- define "rollback-agent.signing" -}}
{{- $s := (default dict .Values.audit).signing | default dict -}}
{{- $mode := $s.mode | default "none" | toString -}}
{{- if and (ne $mode "none") (not $s.existingSecret) -}}
{{- fail (printf "audit.signing: mode %s needs its key: set audit.signing.existingSecret to a Secret you manage (the key under audit.signing.existingSecretKey, default \"audit-key\"), e.g. kubectl create secret generic credit-audit-key --from-file=audit-key=./audit-key" $mode) -}}
{{- else if and (eq $mode "none") $s.existingSecret -}}
{{- fail "audit.signing: existingSecret is set but mode is none: set audit.signing.mode to hmac or ed25519 (or remove existingSecret)" -}}
{{- else if ne $mode "none" -}}
true
{{- end -}}
{{- end -}}

{{/*
agent.yaml, as YAML text: generated from the chart's values, then `agent.config` merged over it. Every template that
needs a port or a path reads it from this (through fromYaml), so the pod spec always matches the agent's config.
*/}}
{{- define "rollback-agent.agentConfig" -}}
{{- $v := .Values -}}
{{- if not $v.model.name -}}
{{- fail "model.name is required: the model's name (letters, digits, '.', '_', '-'), e.g. --set model.name=credit-scoring" -}}
{{- end -}}
{{- if not $v.versions -}}
{{- fail "versions: list at least one model version, e.g. versions: [{tag: v1, port: 8081}] (the port the model server listens on inside the pod)" -}}
{{- end -}}
{{- $tags := list -}}
{{- $versions := list -}}
{{- range $i, $ver := $v.versions -}}
{{- if or (not $ver.tag) (not $ver.port) -}}
{{- fail (printf "versions[%d]: each version needs a tag and a port, got %s" $i (toJson $ver)) -}}
{{- end -}}
{{- $item := dict "tag" (toString $ver.tag) "endpoint" (printf "%s:%d" (default "127.0.0.1" $ver.host) (int $ver.port)) -}}
{{- if $ver.oipVersion -}}
{{- $_ := set $item "oip_version" (toString $ver.oipVersion) -}}
{{- end -}}
{{- if $ver.server -}}
{{- $_ := set $item "server" $ver.server -}}
{{- end -}}
{{- if $ver.metricsPath -}}
{{- $_ := set $item "metrics_path" $ver.metricsPath -}}
{{- end -}}
{{- if $ver.memoryLimitMb -}}
{{- $_ := set $item "memory_limit_mb" $ver.memoryLimitMb -}}
{{- end -}}
{{- $versions = append $versions $item -}}
{{- $tags = append $tags (toString $ver.tag) -}}
{{- end -}}
{{- $stable := toString $v.stable -}}
{{- if not (has $stable $tags) -}}
{{- fail (printf "stable: %q must be one of the versions' tags %s" $stable (toJson $tags)) -}}
{{- end -}}
{{- $cfg := dict
  "model" (dict "name" (toString $v.model.name) "tier" (default "critical" $v.model.tier))
  "versions" $versions
  "stable" $stable
  "envoy" (dict
    "listener" (dict "address" (toString $v.envoy.listenAddress) "port" (int $v.envoy.port))
    "admin" (dict "address" "127.0.0.1" "port" (int $v.envoy.adminPort)))
  "xds" (dict "address" "127.0.0.1" "port" (int $v.agent.ports.xds))
  "http" (dict "address" (toString $v.agent.httpAddress) "port" (int $v.agent.ports.http))
  "control" (dict "listen" (dict "address" "127.0.0.1" "port" (int $v.agent.ports.control)))
  "state_dir" "/var/lib/rollback-agent"
-}}
{{- if include "rollback-agent.tokenSecretName" . -}}
{{- $_ := set $cfg.control "token_file" "/var/run/secrets/rollback-agent/token" -}}
{{- end -}}
{{- if $v.controlTokens.existingSecret -}}
{{- $_ := set $cfg.control "tokens_file" "/var/run/secrets/rollback-agent-tokens/tokens.yaml" -}}
{{- end -}}
{{- $audit := dict -}}
{{- if $v.fleetAudit.enabled -}}
{{- $fleet := dict "dsn_file" "/var/run/secrets/rollback-agent-fleet/dsn" "batch" (int $v.fleetAudit.batch) "interval_s" $v.fleetAudit.intervalSeconds -}}
{{- $_ := set $audit "fleet" $fleet -}}
{{- end -}}
{{- if include "rollback-agent.signing" . -}}
{{- $signing := dict "mode" (toString $v.audit.signing.mode) "key_file" "/var/run/secrets/rollback-agent-audit-key/audit-key" -}}
{{- if $v.audit.signing.keyId -}}
{{- $_ := set $signing "key_id" (toString $v.audit.signing.keyId) -}}
{{- end -}}
{{- $_ := set $audit "signing" $signing -}}
{{- end -}}
{{- if $audit -}}
{{- $_ := set $cfg "audit" $audit -}}
{{- end -}}
{{- if $v.candidate -}}
{{- $candidate := toString $v.candidate -}}
{{- if not (has $candidate $tags) -}}
{{- fail (printf "candidate: %q must be one of the versions' tags %s" $candidate (toJson $tags)) -}}
{{- end -}}
{{- $_ := set $cfg "candidate" $candidate -}}
{{- end -}}
{{- if $v.initialWeights -}}
{{- $weights := dict -}}
{{- range $tag, $weight := $v.initialWeights -}}
{{- $_ := set $weights $tag (int $weight) -}}
{{- end -}}
{{- $_ := set $cfg "initial_weights" $weights -}}
{{- end -}}
{{- if include "rollback-agent.registryEnabled" . -}}
{{- $_ := set $cfg "registry_file" (printf "%s/registry.yaml" (include "rollback-agent.registryDir" .)) -}}
{{- end -}}
{{- with $v.constraints -}}
{{- $constraints := dict -}}
{{- range $key, $name := dict "memoryMb" "memory_mb" "cpu" "cpu" "gpu" "gpu" "runtimes" "runtimes" "featureSchema" "feature_schema" -}}
{{- if hasKey $.Values.constraints $key -}}
{{- $_ := set $constraints $name (get $.Values.constraints $key) -}}
{{- end -}}
{{- end -}}
{{- if $constraints -}}
{{- $_ := set $cfg "constraints" $constraints -}}
{{- end -}}
{{- end -}}
{{- if $v.rules.ruleFile -}}
{{- $rules := dict "file" (printf "%s/%s" $v.rules.mountPath $v.rules.ruleFile) -}}
{{- if $v.rules.customTiers -}}
{{- $_ := set $rules "tiers_dir" (printf "%s/tiers" $v.rules.mountPath) -}}
{{- end -}}
{{- $_ := set $cfg "rules" $rules -}}
{{- end -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy (default dict $v.agent.config)) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
Rule files: a ConfigMap key cannot contain '/', so "tiers/critical.yaml" is stored under "tiers__critical.yaml"
and projected back to its path by the volume's items.
*/}}
{{- define "rollback-agent.ruleKey" -}}
{{- replace "/" "__" . -}}
{{- end -}}

{{- define "rollback-agent.rulesNested" -}}
{{- range $name, $_ := .Values.rules.files -}}
{{- if contains "/" $name -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Checks that need more than one value; rendered (for its failures only) by the Deployment.
*/}}
{{- define "rollback-agent.checks" -}}
{{- $v := .Values -}}
{{- $cfg := include "rollback-agent.agentConfig" . | fromYaml -}}
{{- if eq (include "rollback-agent.mode" .) "allInOne" -}}
{{- if not $v.modelServers -}}
{{- fail "modelServers: add at least one model-server container (a Kubernetes container spec) listening on the versions' ports" -}}
{{- end -}}
{{- else -}}
{{- if $v.modelServers -}}
{{- fail "modelServers: in mode sidecar your own Deployment runs the model servers; leave modelServers empty" -}}
{{- end -}}
{{- if not ((($v.sidecar | default dict).podSelector) | default dict) -}}
{{- fail "sidecar.podSelector: in mode sidecar, give the labels of your model Deployment's pods (e.g. {app: credit-model}): the metrics Service and the PodMonitor select them" -}}
{{- end -}}
{{- if $v.state.statefulSet.enabled -}}
{{- fail "state.statefulSet: in mode sidecar your chart owns the workload; use state.persistence.existingClaim or an emptyDir" -}}
{{- end -}}
{{- end -}}
{{- $reserved := list "agent-config" "rules" "registry" "control-token" "control-tokens" "fleet-dsn" "audit-signing-key" "state" "envoy-bootstrap" "tmp" -}}
{{- range concat ($v.agent.extraVolumes | default list) ($v.extraVolumes | default list) -}}
{{- if has .name $reserved -}}
{{- fail (printf "extraVolumes: the volume name %q is taken by the chart (its volumes: %s)" .name (join ", " $reserved)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.state.persistence.enabled (not $v.state.statefulSet.enabled) (gt (int $v.replicaCount) 1) -}}
{{- fail "state.persistence: a PersistentVolumeClaim holds one agent's state; with it, replicaCount must be 1 (or set state.statefulSet.enabled: one PVC per pod)" -}}
{{- end -}}
{{- if and $v.state.statefulSet.enabled $v.state.persistence.existingClaim -}}
{{- fail "state.statefulSet: each pod gets a PVC of its own from state.persistence; state.persistence.existingClaim cannot be shared" -}}
{{- end -}}
{{- if $v.fleetAudit.enabled -}}
{{- if and $v.fleetAudit.existingSecret $v.fleetAudit.dsn -}}
{{- fail "fleetAudit: set either fleetAudit.existingSecret or fleetAudit.dsn, not both" -}}
{{- else if not (or $v.fleetAudit.existingSecret $v.fleetAudit.dsn) -}}
{{- fail "fleetAudit: the fleet audit store needs its DSN: set fleetAudit.existingSecret to a Secret you manage (the DSN under fleetAudit.existingSecretKey, default \"dsn\"), or fleetAudit.dsn" -}}
{{- end -}}
{{- end -}}
{{- $owners := dict -}}
{{- $ports := list
  (list "envoy listener (envoy.port)" $cfg.envoy.listener.port)
  (list "envoy admin (envoy.adminPort)" $cfg.envoy.admin.port)
  (list "agent xds (agent.ports.xds)" $cfg.xds.port)
  (list "agent http (agent.ports.http)" $cfg.http.port)
  (list "agent control (agent.ports.control)" $cfg.control.listen.port)
-}}
{{- $shared := dict -}}
{{- range $cfg.versions -}}
{{- if hasPrefix "127.0.0.1:" .endpoint -}}
{{- $port := regexFind "[0-9]+$" .endpoint -}}
{{- if .oip_version -}}
{{- /* versions of one model in one server (oipVersion) share its port: counted once */ -}}
{{- if not (hasKey $shared $port) -}}
{{- $ports = append $ports (list (printf "model server of version %s" .tag) $port) -}}
{{- $_ := set $shared $port true -}}
{{- end -}}
{{- else -}}
{{- $ports = append $ports (list (printf "version %s" .tag) $port) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $ports -}}
{{- $port := toString (int (index . 1)) -}}
{{- if hasKey $owners $port -}}
{{- fail (printf "port %s is used by both the %s and the %s: every port in the pod must differ" $port (get $owners $port) (index . 0)) -}}
{{- end -}}
{{- $_ := set $owners $port (index . 0) -}}
{{- end -}}
{{- range $v.modelServers -}}
{{- if has .name (list "envoy" "agent" "envoy-bootstrap") -}}
{{- fail (printf "modelServers: the container name %q is taken by the chart" .name) -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $name, $_ := $v.rules.files -}}
{{- if not (regexMatch "^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$" $name) -}}
{{- fail (printf "rules.files: %q is not a usable file name (letters, digits, '.', '_', '-'; '/' between directories; no leading '.')" $name) -}}
{{- end -}}
{{- $key := include "rollback-agent.ruleKey" $name -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "rules.files: %q and %q map to the same ConfigMap key %q" (get $seen $key) $name $key) -}}
{{- end -}}
{{- $_ := set $seen $key $name -}}
{{- end -}}
{{- range list (list "state_dir" $cfg.state_dir) (list "control.token_file" ($cfg.control.token_file | default "/")) (list "control.tokens_file" ($cfg.control.tokens_file | default "/")) (list "rules.mountPath" $v.rules.mountPath) -}}
{{- if not (isAbs (toString (index . 1))) -}}
{{- fail (printf "%s: must be an absolute path in the pod, got %q" (index . 0) (toString (index . 1))) -}}
{{- end -}}
{{- end -}}
{{- if and $cfg.control.token_file $cfg.control.tokens_file (eq (dir (toString $cfg.control.token_file)) (dir (toString $cfg.control.tokens_file))) -}}
{{- fail "control.tokens_file: use a directory other than control.token_file's (each is a Secret mounted as a directory)" -}}
{{- end -}}
{{- if eq (clean $v.rules.mountPath) "/etc/rollback-agent" -}}
{{- fail "rules.mountPath: use a directory of its own (e.g. /etc/rollback-agent/rules), not the agent.yaml directory" -}}
{{- end -}}
{{- if and $v.rules.existingConfigMap $v.rules.files -}}
{{- fail "rules: set either rules.files or rules.existingConfigMap, not both" -}}
{{- end -}}
{{- end -}}
