{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "serving-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "serving-guard.fullname" -}}
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

{{- define "serving-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "serving-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "serving-guard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "serving-guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: serving-guard
{{- end -}}

{{/* Falco's namespace: where the rules ConfigMap and Falco's certificates go. */}}
{{- define "serving-guard.falcoNamespace" -}}
{{- default .Release.Namespace .Values.falco.namespace -}}
{{- end -}}

{{/* Who the responder is to the API server: the username its ServiceAccount's requests carry. */}}
{{- define "serving-guard.serviceAccountUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "serving-guard.fullname" .) -}}
{{- end -}}

{{- define "serving-guard.sidekickNamespace" -}}
{{- default (include "serving-guard.falcoNamespace" .) .Values.falcosidekick.namespace -}}
{{- end -}}

{{- define "serving-guard.image" -}}
{{- $repository := required "image.repository is not set: build the image from deploy/Dockerfile, push it to your registry and set image.repository (and image.digest) to it; no public image is published (deploy/README.md, Building the image)" .Values.image.repository -}}
{{- if eq $repository "ghcr.io/serving-guard/serving-guard" -}}
{{- fail "image.repository is ghcr.io/serving-guard/serving-guard, chart 0.1.0's default, where no image is published (helm upgrade --reuse-values keeps it): set image.repository (and image.digest) to where you pushed the image built from deploy/Dockerfile (deploy/README.md, Building the image)" -}}
{{- end -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" $repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Service DNS names, short to fully qualified. */}}
{{- define "serving-guard.serviceDnsNames" -}}
{{- $name := include "serving-guard.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) -}}
{{- toJson (concat $names .Values.inputs.http.tls.extraDnsNames | uniq) -}}
{{- end -}}

{{/* Paths inside the container. */}}
{{/* What runs a command in the responder's pod from a workstation: Slack's by-hand commands
(slack.command_prefix) and the alerting rules' annotations give it. */}}
{{- define "serving-guard.execPrefix" -}}
{{- printf "kubectl -n %s exec deploy/%s --" .Release.Namespace (include "serving-guard.fullname" .) -}}
{{- end -}}

{{- define "serving-guard.paths" -}}
config: /etc/serving-guard/config.yaml
tls: /var/run/secrets/serving-guard/tls
grpcTls: /var/run/secrets/serving-guard/grpc-tls
httpToken: /var/run/secrets/serving-guard/http-token
auditToken: /var/run/secrets/serving-guard/audit-token
drillToken: /var/run/secrets/serving-guard/drill-token
slack: /var/run/secrets/serving-guard/slack
journalDir: /var/lib/serving-guard
{{- end -}}

{{/* TLS ----------------------------------------------------------------------------------------- */}}

{{- define "serving-guard.httpTlsEnabled" -}}
{{- if and .Values.inputs.http.enabled (ne .Values.inputs.http.tls.mode "disabled") }}true{{ end -}}
{{- end -}}

{{/* Mutual TLS on the alert input: how Falco's http_output authenticates (it can send no header, so
     no token). Without it, only senders that set headers (Falcosidekick's webhook) carry the token. */}}
{{- define "serving-guard.httpMtls" -}}
{{- if and (include "serving-guard.httpTlsEnabled" .) .Values.inputs.http.tls.requireClientCert }}true{{ end -}}
{{- end -}}

{{- define "serving-guard.httpTlsSecretName" -}}
{{- if eq .Values.inputs.http.tls.mode "certManager" -}}
{{- printf "%s-tls" (include "serving-guard.fullname" .) -}}
{{- else -}}
{{- .Values.inputs.http.tls.secretName -}}
{{- end -}}
{{- end -}}

{{- define "serving-guard.grpcTlsSecretName" -}}
{{- if .Values.inputs.grpc.tls.secretName -}}
{{- .Values.inputs.grpc.tls.secretName -}}
{{- else -}}
{{- printf "%s-grpc-client" (include "serving-guard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Which certificates the chart asks cert-manager for (tls mode certManager). gRPC certificates are
     issued only when the user gave no gRPC Secret: then the chart manages both ends, from one CA. */}}
{{- define "serving-guard.certificates" -}}
{{- $v := .Values -}}
{{- $cm := eq $v.inputs.http.tls.mode "certManager" -}}
{{- $server := and $cm $v.inputs.http.enabled -}}
{{- $grpcClient := and $cm $v.inputs.grpc.enabled (not $v.inputs.grpc.tls.secretName) -}}
{{- /* Falco's client certificate only where the responder asks for one: without mutual TLS nothing
     verifies it, and Falco's http_output cannot authenticate otherwise (no header, so no token). */ -}}
{{- toJson (dict
      "server" $server
      "falcoClient" (and $server $v.inputs.http.tls.requireClientCert $v.inputs.http.tls.falcoClientCertificate.enabled)
      "grpcClient" $grpcClient
      "falcoGrpcServer" (and $grpcClient $v.inputs.grpc.falcoServerCertificate.enabled)) -}}
{{- end -}}

{{- define "serving-guard.issuerRef" -}}
{{- if .Values.certManager.issuerRef.name -}}
{{- toJson (dict "name" .Values.certManager.issuerRef.name "kind" .Values.certManager.issuerRef.kind "group" .Values.certManager.issuerRef.group) -}}
{{- else -}}
{{- toJson (dict "name" (printf "%s-ca" (include "serving-guard.fullname" .)) "kind" "Issuer" "group" "cert-manager.io") -}}
{{- end -}}
{{- end -}}

{{/* True when the chart's issuer can sign certificates in Falco's namespace. */}}
{{- define "serving-guard.canIssueForFalco" -}}
{{- $issuer := include "serving-guard.issuerRef" . | fromJson -}}
{{- if or (eq $issuer.kind "ClusterIssuer") (eq (include "serving-guard.falcoNamespace" .) .Release.Namespace) }}true{{ end -}}
{{- end -}}

{{- define "serving-guard.grpcHost" -}}
{{- $address := .Values.inputs.grpc.address -}}
{{- if hasPrefix "[" $address -}}
{{- regexReplaceAll "^\\[([^\\]]+)\\]:[0-9]+$" $address "${1}" -}}
{{- else -}}
{{- regexReplaceAll ":[0-9]+$" $address "" -}}
{{- end -}}
{{- end -}}

{{/* The name Falco's gRPC server certificate carries and the responder verifies: inputs.grpc.serverName,
     else the address's host. */}}
{{- define "serving-guard.grpcServerName" -}}
{{- default (include "serving-guard.grpcHost" .) .Values.inputs.grpc.serverName -}}
{{- end -}}

{{/* "true" when the name is an IP address: the schema lets only an IPv6 address hold a colon, and an IPv4
     address is a dotted quad (what Python's ipaddress takes: no leading zeros). A certificate names an IP
     address in ipAddresses, which TLS clients check against it, not in dnsNames. */}}
{{- define "serving-guard.isIpAddress" -}}
{{- $octet := "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])" -}}
{{- if or (contains ":" .) (regexMatch (printf "^(%s\\.){3}%s$" $octet $octet) .) }}true{{ end -}}
{{- end -}}

{{/* blockDestination as JSON, with values.yaml's defaults for what an earlier release's values lack (helm
     upgrade --reuse-values): the whole object before blocks existed, keys added since. Key by key, not
     with merge, which would replace a false with the default's true. */}}
{{- define "serving-guard.blockDestination" -}}
{{- $block := deepCopy (.Values.blockDestination | default dict) -}}
{{- $defaults := dict "label" "serving-guard.io/block" "networkPolicyPrefix" "serving-guard-block" "addressFields" (list "fd.rip" "fd.sip") "neverBlock" list "maxPerPod" 32 "escalateToQuarantine" true "ignoreOtherPolicyApis" false -}}
{{- range $key, $default := $defaults -}}
{{- if not (hasKey $block $key) }}{{ $_ := set $block $key $default }}{{ end -}}
{{- end -}}
{{- toJson $block -}}
{{- end -}}

{{/* "true" when the admission policies are rendered. rbac is absent from the values of a release
     installed before them: on, as values.yaml has it. */}}
{{- define "serving-guard.admissionPolicyEnabled" -}}
{{- $enabled := dig "admissionPolicy" "enabled" true (.Values.rbac | default dict) -}}
{{- if $enabled }}true{{ end -}}
{{- end -}}

{{/* An optional token's Secret as JSON ({secretName, key}), or nothing when there is none: .token
     (absent from the values of a release installed before it: helm upgrade --reuse-values) while
     .enabled (the HTTP input). */}}
{{- define "serving-guard.optionalTokenSecret" -}}
{{- $token := .token | default dict -}}
{{- if and .enabled $token.secretName -}}
{{- toJson (dict "secretName" $token.secretName "key" ($token.key | default "token")) -}}
{{- end -}}
{{- end -}}

{{/* The audit readers' token's Secret (optionalTokenSecret). */}}
{{- define "serving-guard.auditTokenSecret" -}}
{{- include "serving-guard.optionalTokenSecret" (dict "token" .Values.inputs.http.auditToken "enabled" .Values.inputs.http.enabled) -}}
{{- end -}}

{{/* The drill token's Secret (optionalTokenSecret). */}}
{{- define "serving-guard.drillTokenSecret" -}}
{{- include "serving-guard.optionalTokenSecret" (dict "token" .Values.inputs.http.drillToken "enabled" .Values.inputs.http.enabled) -}}
{{- end -}}

{{/* Namespaces ---------------------------------------------------------------------------------- */}}

{{- define "serving-guard.protectedNamespaces" -}}
{{- $protected := concat .Values.guardrails.protectedNamespaces (list .Release.Namespace (include "serving-guard.falcoNamespace" .)) -}}
{{- if .Values.falcosidekick.allowIngress -}}
{{- $protected = append $protected (include "serving-guard.sidekickNamespace" .) -}}
{{- end -}}
{{- toJson ($protected | uniq) -}}
{{- end -}}

{{/* The quarantine cuts in use, whose deny-all policies the chart renders in each enforced namespace
(responder/config.py Config.cut_name_problems checks the same set): the cut of both, quarantine.isolate's
cut, and, once a policy cuts otherwise (policies[].isolate), every cut, since two such policies on one pod
widen it to both. */}}
{{- define "serving-guard.quarantineCuts" -}}
{{- $global := .Values.quarantine.isolate | default "both" -}}
{{- $cuts := list "both" -}}
{{- if ne $global "both" }}{{ $cuts = append $cuts $global }}{{ end -}}
{{- range .Values.policies -}}
{{- if and .isolate (ne .isolate $global) }}{{ $cuts = list "both" "egress" "ingress" }}{{ end -}}
{{- end -}}
{{- toJson $cuts -}}
{{- end -}}

{{/* A Kubernetes quantity (2Gi, 500M, 1.5G, 1073741824) in bytes, as a float; empty when it is not one
this parses (an exponent form such as 1e9): the caller then checks nothing. */}}
{{- define "serving-guard.quantityBytes" -}}
{{- $q := toString . -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$" $q -}}
{{- $units := dict "" 1 "m" 0.001 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "E" 1000000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $number $q -}}
{{- mulf (float64 $number) (get $units $unit) -}}
{{- end -}}
{{- end -}}

{{/* Checks that a schema cannot express, with messages that say what to change. ------------------ */}}
{{- define "serving-guard.validate" -}}
{{- $v := .Values -}}
{{- $certs := include "serving-guard.certificates" . | fromJson -}}
{{- if $v.enforcement.allowPodDeletion -}}
{{- fail "enforcement.allowPodDeletion: removed from the chart: no action of the responder deletes pods (responder/cluster/api.py makes no DELETE), and the grant reached every pod of every namespace in scope cluster, beyond the admission policies. Delete the key from your values (deploy/README.md \"Upgrade\")" -}}
{{- end -}}
{{- if and (eq $v.enforcement.scope "namespaced") (not $v.enforcement.namespaces) -}}
{{- fail "enforcement.namespaces: scope namespaced needs at least one namespace to act in (or set enforcement.scope=cluster)" -}}
{{- end -}}
{{- $protected := include "serving-guard.protectedNamespaces" . | fromJsonArray -}}
{{- range $v.enforcement.namespaces -}}
{{- if has . $protected -}}
{{- fail (printf "enforcement.namespaces: %q is a protected namespace (guardrails.protectedNamespaces, the release or Falco namespace): the responder would never act there" .) -}}
{{- end -}}
{{- end -}}
{{- if and (not $v.inputs.http.enabled) (not $v.inputs.grpc.enabled) -}}
{{- fail "inputs: enable inputs.http or inputs.grpc, or the responder receives no alerts" -}}
{{- end -}}
{{- if $v.inputs.http.enabled -}}
{{- $mtls := and (ne $v.inputs.http.tls.mode "disabled") $v.inputs.http.tls.requireClientCert -}}
{{- if not (or $mtls $v.inputs.http.token.secretName $v.inputs.http.allowUnauthenticated) -}}
{{- fail "inputs.http: no authentication: keep inputs.http.tls.requireClientCert (mutual TLS, how Falco authenticates), or set inputs.http.token.secretName, or set inputs.http.allowUnauthenticated=true knowingly" -}}
{{- end -}}
{{- if and $mtls $v.inputs.http.allowUnauthenticated -}}
{{- fail "inputs.http.allowUnauthenticated: with inputs.http.tls.requireClientCert a request without a client certificate would be accepted, so the certificate would prove nothing: set one of them to false" -}}
{{- end -}}
{{- if and (eq $v.inputs.http.tls.mode "secret") (not $v.inputs.http.tls.secretName) -}}
{{- fail "inputs.http.tls.secretName: mode secret needs the name of a Secret with tls.crt, tls.key and ca.crt" -}}
{{- end -}}
{{- if and $v.inputs.http.tls.extraDnsNames (not $certs.server) -}}
{{- fail (printf "inputs.http.tls.extraDnsNames: only the server certificate the chart requests (inputs.http.enabled with tls.mode certManager) takes them, and here it requests none (tls.mode %s): leave extraDnsNames empty, and with mode secret put the names in your own certificate" $v.inputs.http.tls.mode) -}}
{{- end -}}
{{- $auditToken := include "serving-guard.auditTokenSecret" . -}}
{{- if and $v.inputs.http.token.secretName $auditToken -}}
{{- $audit := $auditToken | fromJson -}}
{{- if and (eq $v.inputs.http.token.secretName $audit.secretName) (eq $v.inputs.http.token.key $audit.key) -}}
{{- fail (printf "inputs.http.auditToken: Secret %q key %q is also inputs.http.token's: the audit trail's readers would hold the senders' token, and the senders the readers' (the responder refuses to start). Give the audit token a Secret or key of its own" $audit.secretName $audit.key) -}}
{{- end -}}
{{- end -}}
{{- with include "serving-guard.drillTokenSecret" . -}}
{{- $drill := . | fromJson -}}
{{- $others := dict "inputs.http.token" (ternary (dict "secretName" $v.inputs.http.token.secretName "key" $v.inputs.http.token.key) dict (not (empty $v.inputs.http.token.secretName))) -}}
{{- with $auditToken -}}
{{- $_ := set $others "inputs.http.auditToken" (. | fromJson) -}}
{{- end -}}
{{- range $name, $other := $others -}}
{{- if and $other.secretName (eq $other.secretName $drill.secretName) (eq $other.key $drill.key) -}}
{{- fail (printf "inputs.http.drillToken: Secret %q key %q is also %s's: a drill must be told from Falco's alerts by a token no one else holds (the responder refuses to start). Give the drill token a Secret or key of its own" $drill.secretName $drill.key $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $v.inputs.http.requireSenderMatchesHostname -}}
{{- if not $mtls -}}
{{- fail "inputs.http.requireSenderMatchesHostname: only a client certificate can name the node an alert comes from: it needs inputs.http.tls.requireClientCert (mutual TLS)" -}}
{{- end -}}
{{- if $certs.falcoClient -}}
{{- fail "inputs.http.requireSenderMatchesHostname: the chart issues one client certificate (falco) that every node holds and that names no node, so every alert would be refused (403): give each Falco pod a certificate naming its node, set inputs.http.tls.falcoClientCertificate.enabled=false, and allowedClientNames to null or your nodes' names (deploy/README.md)" -}}
{{- end -}}
{{- if has "falco" ($v.inputs.http.tls.allowedClientNames | default list) -}}
{{- fail "inputs.http.requireSenderMatchesHostname: inputs.http.tls.allowedClientNames admits the name falco, which names no node: a certificate per node needs allowedClientNames null or your nodes' names (each alert is then taken only from the certificate naming its node)" -}}
{{- end -}}
{{- if $v.inputs.http.token.secretName -}}
{{- fail "inputs.http.requireSenderMatchesHostname: token senders (inputs.http.token, Falcosidekick) are refused with it (a token names no node): unset inputs.http.token.secretName, or the binding" -}}
{{- end -}}
{{- end -}}
{{- if and $certs.falcoClient (not (include "serving-guard.canIssueForFalco" .)) -}}
{{- fail (printf "inputs.http.tls.falcoClientCertificate: a namespaced Issuer in %q cannot sign Falco's client certificate in namespace %q: install this chart into Falco's namespace, set certManager.issuerRef to a ClusterIssuer, or set inputs.http.tls.falcoClientCertificate.enabled=false and create the Secret yourself (deploy/README.md)" .Release.Namespace (include "serving-guard.falcoNamespace" .)) -}}
{{- end -}}
{{- end -}}
{{- if $v.inputs.grpc.enabled -}}
{{- if not $v.inputs.grpc.address -}}
{{- fail "inputs.grpc.address: set host:port of Falco's gRPC Service (e.g. falco-grpc.falco.svc:5060)" -}}
{{- end -}}
{{- if gt (len (include "serving-guard.grpcHost" .)) 253 -}}
{{- fail "inputs.grpc.address: the host is longer than a DNS name's 253 characters" -}}
{{- end -}}
{{- if and (not $v.inputs.grpc.tls.secretName) (ne $v.inputs.http.tls.mode "certManager") -}}
{{- fail "inputs.grpc.tls.secretName: Falco's gRPC over TCP requires mutual TLS: name a Secret with ca.crt, tls.crt and tls.key (or use inputs.http.tls.mode=certManager to have it issued)" -}}
{{- end -}}
{{- if and $certs.falcoGrpcServer (not (include "serving-guard.canIssueForFalco" .)) -}}
{{- fail (printf "inputs.grpc.falcoServerCertificate: a namespaced Issuer in %q cannot sign Falco's gRPC server certificate in namespace %q: install into Falco's namespace, use a ClusterIssuer, or set inputs.grpc.falcoServerCertificate.enabled=false" .Release.Namespace (include "serving-guard.falcoNamespace" .)) -}}
{{- end -}}
{{- end -}}
{{- if and (ne $v.slack.mode "disabled") (not $v.slack.secretName) -}}
{{- fail (printf "slack.secretName: mode %s reads its credential from a Secret: name it (the token or URL never goes into the ConfigMap)" $v.slack.mode) -}}
{{- end -}}
{{- if and (eq $v.slack.mode "bot") (not $v.slack.defaultChannel) -}}
{{- fail "slack.defaultChannel: mode bot needs a default channel (e.g. \"#sec-alerts\")" -}}
{{- end -}}
{{- if and (include "serving-guard.admissionPolicyEnabled" .) (not (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version)) -}}
{{- fail (printf "rbac.admissionPolicy.enabled: the ValidatingAdmissionPolicies that confine the responder's ServiceAccount need Kubernetes >= 1.30 (admissionregistration.k8s.io/v1), this cluster is %s (helm template: the version given by --kube-version, or Helm's own): upgrade it, or set rbac.admissionPolicy.enabled=false knowingly (deploy/README.md)" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if and $v.journal.persistence.enabled $v.journal.persistence.existingClaim $v.journal.persistence.storageClassName -}}
{{- fail "journal.persistence: existingClaim and storageClassName exclude each other" -}}
{{- end -}}
{{- /* The journal grows to maxBytes, and its write-ahead log and lock file sit beside it: an emptyDir past
its sizeLimit gets the pod evicted, a full PVC fails every write. An existing claim's size is not known. */ -}}
{{- $volume := "" -}}
{{- $volumeKey := "" -}}
{{- if not $v.journal.persistence.enabled -}}
{{- $volume = $v.journal.emptyDir.sizeLimit -}}
{{- $volumeKey = "journal.emptyDir.sizeLimit" -}}
{{- else if not $v.journal.persistence.existingClaim -}}
{{- $volume = $v.journal.persistence.size -}}
{{- $volumeKey = "journal.persistence.size" -}}
{{- end -}}
{{- $volumeBytes := include "serving-guard.quantityBytes" $volume -}}
{{- if and $volume $volumeBytes -}}
{{- $room := mulf 0.8 (float64 $volumeBytes) -}}
{{- if gt (float64 $v.journal.maxBytes) $room -}}
{{- fail (printf "journal.maxBytes: %.0f bytes leave too little of the journal's volume (%s %s = %.0f bytes) for its write-ahead log and lock file beside it: keep maxBytes at most 80%% of the volume (%.0f), or make %s larger. Past an emptyDir's sizeLimit the kubelet evicts the pod; a full claim fails every write" (float64 $v.journal.maxBytes) $volumeKey (toString $volume) (float64 $volumeBytes) (floor $room) $volumeKey) -}}
{{- end -}}
{{- end -}}
{{- range $suffix := list "-egress" "-ingress" "-both" -}}
{{- if hasSuffix $suffix (toString $v.quarantine.labelValue) -}}
{{- fail (printf "quarantine.labelValue: %q must not end in %s: the other cuts' values are <labelValue>-egress and <labelValue>-ingress (and -both from earlier versions), so another config's cut could have this one" (toString $v.quarantine.labelValue) $suffix) -}}
{{- end -}}
{{- end -}}
{{- range $cut := include "serving-guard.quarantineCuts" . | fromJsonArray -}}
{{- if ne $cut "both" -}}
{{- $why := ternary (printf "quarantine.isolate is %s" $cut) "a policy cuts otherwise than quarantine.isolate (policies[].isolate), so every cut is" (eq $cut ($v.quarantine.isolate | default "both")) -}}
{{- range $name := list (printf "%s-%s" $v.quarantine.networkPolicyName $cut) (printf "%s-%s" $v.quarantine.labelValue $cut) -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "quarantine: the %s cut is in use (%s), whose NetworkPolicy and label value are <networkPolicyName>-%s and <labelValue>-%s, and %q is longer than 63 characters: shorten quarantine.networkPolicyName and quarantine.labelValue to at most %d characters" $cut $why $cut $cut $name (sub 63 (add1 (len $cut)))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Blocks and patched policies leave quarantined pods out by every cut's label value, whatever cut
is in use (the responder refuses the config otherwise: Config.cut_name_problems). */ -}}
{{- $blocks := false -}}
{{- range $policy := $v.policies | default list -}}
{{- if has "block_destination" ($policy.actions | default list) -}}{{- $blocks = true -}}{{- end -}}
{{- end -}}
{{- if or $blocks $v.quarantine.patchOtherPolicies -}}
{{- $needed := ternary "quarantine.patchOtherPolicies" "a policy's block_destination action" (eq $v.quarantine.patchOtherPolicies true) -}}
{{- range $cut := list "egress" "ingress" -}}
{{- $value := printf "%s-%s" $v.quarantine.labelValue $cut -}}
{{- if gt (len $value) 63 -}}
{{- fail (printf "quarantine: %s leaves quarantined pods out by every cut's label value (<labelValue>-<cut>), and %q is longer than 63 characters: shorten quarantine.labelValue to at most 55 characters" $needed $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* The chart's own labels and its config checksum: a value may add to them, never replace one (Helm
would render the key twice, and the last would win: a selector that no longer selects the pod, a config
change that no longer rolls it). */ -}}
{{- $chartLabels := include "serving-guard.labels" . | fromYaml -}}
{{- $chartLabelNames := keys $chartLabels | sortAlpha | join ", " -}}
{{- range $key, $_ := $v.podLabels -}}
{{- if hasKey $chartLabels $key -}}
{{- fail (printf "podLabels: %q is one of the chart's own pod labels (%s): the pod would carry it twice, the last one winning, and the chart's Service, NetworkPolicies and PodDisruptionBudget select the pod by its name and instance labels. Leave it out of podLabels" $key $chartLabelNames) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $v.podAnnotations "checksum/config" -}}
{{- fail "podAnnotations: \"checksum/config\" is the chart's own annotation, the hash of the responder's config that rolls the pod when the config changes: leave it out of podAnnotations" -}}
{{- end -}}
{{- range $key, $_ := $v.serviceMonitor.labels -}}
{{- if hasKey $chartLabels $key -}}
{{- fail (printf "serviceMonitor.labels: %q is one of the chart's own labels (%s): leave it out (add the labels your Prometheus' serviceMonitorSelector matches)" $key $chartLabelNames) -}}
{{- end -}}
{{- end -}}
{{- if and $v.serviceMonitor.enabled (not $v.metrics.allowFrom.namespace) -}}
{{- fail "serviceMonitor.enabled: the responder's NetworkPolicy lets scrapers reach the metrics port only from metrics.allowFrom.namespace, which is empty: Prometheus would scrape nothing. Set metrics.allowFrom.namespace to Prometheus' namespace (and metrics.allowFrom.podSelector to its pods)" -}}
{{- end -}}
{{- /* Absent from an earlier release's values (helm upgrade --reuse-values), or null: off. */ -}}
{{- $prometheusRule := $v.prometheusRule | default dict -}}
{{- range $key, $_ := $prometheusRule.labels -}}
{{- if hasKey $chartLabels $key -}}
{{- fail (printf "prometheusRule.labels: %q is one of the chart's own labels (%s): leave it out (add the labels your Prometheus' ruleSelector matches)" $key $chartLabelNames) -}}
{{- end -}}
{{- end -}}
{{- if and $prometheusRule.enabled (not $v.serviceMonitor.enabled) -}}
{{- fail "prometheusRule.enabled: its alerts select the series of the ServiceMonitor's job (the responder's Service), and serviceMonitor.enabled is false: Prometheus would scrape no such job, and ServingGuardResponderDown would fire for good. Set serviceMonitor.enabled=true" -}}
{{- end -}}
{{- /* Absent from an earlier release's values (helm upgrade --reuse-values): off. */ -}}
{{- $egress := $v.egressPolicy | default dict -}}
{{- $proxy := $v.slack.proxy | default dict -}}
{{- if and $egress.enabled $proxy.httpsProxy (ne $v.slack.mode "disabled") (not $egress.extraEgress) -}}
{{- fail (printf "egressPolicy.extraEgress: slack.proxy.httpsProxy (%s) carries Slack's posts, and egressPolicy lets the responder reach only what it lists: admit the proxy's address and port in egressPolicy.extraEgress ([{to: [{ipBlock: {cidr: ADDRESS/32}}], ports: [{port: PORT, protocol: TCP}]}])" $proxy.httpsProxy) -}}
{{- end -}}
{{- if and $egress.enabled (not $egress.apiServer.cidrs) -}}
{{- fail "egressPolicy.apiServer.cidrs: with egressPolicy.enabled the responder reaches only what is listed, and the API server's addresses differ per cluster: list them, as pods reach them (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes: each address /32 or /128), with egressPolicy.apiServer.ports" -}}
{{- end -}}
{{- $block := include "serving-guard.blockDestination" . | fromJson -}}
{{- if eq $block.label $v.quarantine.label -}}
{{- fail (printf "blockDestination.label: %q is also quarantine.label; a block and a quarantine need labels of their own" $block.label) -}}
{{- end -}}
{{- $policyNames := dict -}}
{{- range $index, $policy := $v.policies -}}
{{- $actions := $policy.actions | default list -}}
{{- if and (has "quarantine" $actions) (has "annotate" $actions) -}}
{{- fail (printf "policies[%d] (%s).actions: quarantine already annotates the pod; use one of quarantine or annotate (the responder refuses the pair)" $index $policy.name) -}}
{{- end -}}
{{- end -}}
{{- range $v.policies -}}
{{- if hasKey $policyNames .name -}}
{{- fail (printf "policies: two policies are named %q; a policy's name is how the journal, Slack and config explain tell them apart" .name) -}}
{{- end -}}
{{- $_ := set $policyNames .name true -}}
{{- end -}}
{{- end -}}

{{/* The responder's config (responder/config.py), rendered from the values. ----------------------- */}}
{{- define "serving-guard.config" -}}
{{- $v := .Values -}}
{{- $paths := include "serving-guard.paths" . | fromYaml -}}
{{- /* A key added since the chart's first release is absent from an earlier release's values (helm upgrade
     --reuse-values), and any key is absent once a value of null deletes it: each such key is defaulted
     here to what values.yaml sets, which the schema cannot do (Helm validates before any default). */ -}}
{{- $maxConnections := $v.inputs.http.maxConnections | default 1024 -}}
{{- /* maxConnectionsPerPeer unset (null, or absent from an earlier release's values): an eighth of the cap, as the responder derives it (config.PEER_SHARE). */ -}}
{{- $perPeer := $v.inputs.http.maxConnectionsPerPeer | default (max 1 (div $maxConnections 8)) -}}
{{- $http := dict "enabled" $v.inputs.http.enabled "listen" "0.0.0.0:8443" "max_body_bytes" $v.inputs.http.maxBodyBytes "max_connections" $maxConnections "max_connections_per_peer" $perPeer "allow_unauthenticated" $v.inputs.http.allowUnauthenticated -}}
{{- /* Absent from an earlier release's values (--reuse-values): off, as before. */ -}}
{{- if $v.inputs.http.requireSenderMatchesHostname -}}
{{- $_ := set $http "require_sender_matches_hostname" true -}}
{{- end -}}
{{- if include "serving-guard.httpTlsEnabled" . -}}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" $paths.tls) "key_file" (printf "%s/tls.key" $paths.tls) -}}
{{- if $v.inputs.http.tls.requireClientCert -}}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" $paths.tls) -}}
{{- /* null (or absent: a release installed before the value, upgraded with --reuse-values): any
     certificate the CA signed, as before. */ -}}
{{- with $v.inputs.http.tls.allowedClientNames -}}
{{- $_ := set $tls "allowed_client_names" . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $http "tls" $tls -}}
{{- end -}}
{{- if and $v.inputs.http.enabled $v.inputs.http.token.secretName -}}
{{- $_ := set $http "token" (dict "file" (printf "%s/token" $paths.httpToken)) -}}
{{- end -}}
{{- if include "serving-guard.auditTokenSecret" . -}}
{{- $_ := set $http "audit_token" (dict "file" (printf "%s/token" $paths.auditToken)) -}}
{{- end -}}
{{- if include "serving-guard.drillTokenSecret" . -}}
{{- $_ := set $http "drill_token" (dict "file" (printf "%s/token" $paths.drillToken)) -}}
{{- end -}}
{{- $grpc := dict "enabled" $v.inputs.grpc.enabled -}}
{{- if $v.inputs.grpc.enabled -}}
{{- $_ := set $grpc "address" $v.inputs.grpc.address -}}
{{- $_ := set $grpc "poll_interval_seconds" $v.inputs.grpc.pollIntervalSeconds -}}
{{- $_ := set $grpc "tls" (dict "ca_file" (printf "%s/ca.crt" $paths.grpcTls) "cert_file" (printf "%s/tls.crt" $paths.grpcTls) "key_file" (printf "%s/tls.key" $paths.grpcTls) "server_name" (include "serving-guard.grpcServerName" .)) -}}
{{- end -}}
{{- $slack := dict "mode" $v.slack.mode "min_priority" $v.slack.minPriority "thread_by_workload" (ternary $v.slack.threadByWorkload true (kindIs "bool" $v.slack.threadByWorkload)) -}}
{{- /* Slack's by-hand commands run in the responder's pod: pasted on a workstation, this reaches it. */ -}}
{{- $_ := set $slack "command_prefix" (include "serving-guard.execPrefix" .) -}}
{{- if $v.slack.defaultChannel -}}
{{- $_ := set $slack "default_channel" $v.slack.defaultChannel -}}
{{- end -}}
{{- if eq $v.slack.mode "bot" -}}
{{- $_ := set $slack "token" (dict "file" (printf "%s/token" $paths.slack)) -}}
{{- else if eq $v.slack.mode "webhook" -}}
{{- $_ := set $slack "webhook_url" (dict "file" (printf "%s/webhook-url" $paths.slack)) -}}
{{- end -}}
{{- $maxBlocks := $v.guardrails.maxBlocks | default dict -}}
{{- $block := include "serving-guard.blockDestination" . | fromJson -}}
{{- /* null (Helm's way to drop a default) or absent: what the responder takes for an absent key. */ -}}
{{- $defaultActions := ternary (list "notify") $v.defaultActions (kindIs "invalid" $v.defaultActions) -}}
{{- $guardrails := dict
      "protected_namespaces" (include "serving-guard.protectedNamespaces" . | fromJsonArray)
      "enforce_namespace_label" (default nil $v.guardrails.enforceNamespaceLabel)
      "max_quarantines" (dict "count" $v.guardrails.maxQuarantines.count "window_seconds" $v.guardrails.maxQuarantines.windowSeconds)
      "max_blocks" (dict "count" ($maxBlocks.count | default 20) "window_seconds" ($maxBlocks.windowSeconds | default 300) "per_pod" ($maxBlocks.perPod | default 5))
      "dry_run" $v.guardrails.dryRun
      "enforce_drills" (default false $v.guardrails.enforceDrills) -}}
{{- $config := dict
      "inputs" (dict "http" $http "grpc" $grpc)
      "server" (dict "metrics_listen" "0.0.0.0:9090")
      "cluster" (dict "verify_node" $v.cluster.verifyNode "cache_ttl_seconds" $v.cluster.cacheTtlSeconds "request_timeout_seconds" $v.cluster.requestTimeoutSeconds "workers" $v.cluster.workers)
      "quarantine" (dict "label" $v.quarantine.label "label_value" $v.quarantine.labelValue "network_policy" $v.quarantine.networkPolicyName "isolate" ($v.quarantine.isolate | default "both") "patch_other_policies" $v.quarantine.patchOtherPolicies "ignore_other_policy_apis" (default false $v.quarantine.ignoreOtherPolicyApis))
      "block_destination" (dict "label" $block.label "network_policy_prefix" $block.networkPolicyPrefix "address_fields" $block.addressFields "never_block" $block.neverBlock "max_per_pod" (int $block.maxPerPod) "escalate_to_quarantine" $block.escalateToQuarantine "ignore_other_policy_apis" $block.ignoreOtherPolicyApis)
      "guardrails" $guardrails
      "dedupe" (dict "window_seconds" $v.dedupe.windowSeconds "max_open_bytes" (int64 (default 67108864 $v.dedupe.maxOpenBytes)) "retry_withheld_seconds" (ternary $v.dedupe.retryWithheldSeconds (list 10 20 40 80 120) (hasKey $v.dedupe "retryWithheldSeconds")))
      "policies" ($v.policies | default list)
      "default_actions" $defaultActions
      "slack" $slack
      "journal" (dict "path" (printf "%s/journal.db" $paths.journalDir) "retention_days" $v.journal.retentionDays "max_bytes" $v.journal.maxBytes "synchronous" ($v.journal.synchronous | default "full") "writer" ($v.journal.writer | default "process"))
      "logging" (dict "level" $v.logging.level "format" $v.logging.format) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* PromQL for "the counter <metric>_total of the series `selector` picks grew within the last
`minutes`", summed by `by`. increase() needs two samples of a series, and the responder's labelled
counters appear only when first counted, with that count: such a series is caught by its
<metric>_created (prometheus_client's time of the series' creation) being that recent. */}}
{{- define "serving-guard.promIncreased" -}}
{{- $total := printf "%s_total{%s}" .metric .selector -}}
{{- $created := printf "%s_created{%s}" .metric .selector -}}
sum by ({{ .by }}) (increase({{ $total }}[{{ .minutes }}m])) > 0
or
sum by ({{ .by }}) ({{ $total }} > 0 and time() - {{ $created }} < {{ mul .minutes 60 }})
{{- end -}}

{{- /* A certificate's common name: the first of (list NAME FALLBACK), or FALLBACK where NAME is past
     X.509's 64 characters (cert-manager refuses such a certificate). For names nobody checks. */}}
{{- define "serving-guard.commonName" -}}
{{- $name := index . 0 -}}
{{- if le (len $name) 64 }}{{ $name }}{{ else }}{{ index . 1 }}{{ end -}}
{{- end -}}
