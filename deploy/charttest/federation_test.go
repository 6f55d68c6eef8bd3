package charttest

import (
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// upstreamsRefs returns the variables the upstreams file of container c
// names as ${NAME}, after checking that UPSTREAMS_FILE, when set, is a file
// of a ConfigMap mounted read-only; nil without UPSTREAMS_FILE.
func (m *manifest) upstreamsRefs(t *testing.T, d *appsv1.Deployment, c corev1.Container, env map[string]string) []string {
	t.Helper()
	file, ok := env["UPSTREAMS_FILE"]
	if !ok {
		return nil
	}
	cm, key := m.mountedConfigMap(t, d, c, file)
	if cm == nil {
		return nil
	}
	var refs []string
	for _, r := range varRef.FindAllStringSubmatch(cm.Data[key], -1) {
		refs = append(refs, r[1])
	}
	return refs
}

// mountedConfigMap returns the ConfigMap, and its key, that container c of
// d sees at file, failing t unless it is mounted read-only there.
func (m *manifest) mountedConfigMap(t *testing.T, d *appsv1.Deployment, c corev1.Container, file string) (*corev1.ConfigMap, string) {
	t.Helper()
	dir, key := path.Split(file)
	for _, vm := range c.VolumeMounts {
		if path.Clean(vm.MountPath) != path.Clean(dir) {
			continue
		}
		if !vm.ReadOnly {
			t.Errorf("Deployment %s: %s is mounted writable", d.Name, vm.MountPath)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				cm := m.configMap(t, v.ConfigMap.Name)
				if _, ok := cm.Data[key]; !ok {
					t.Errorf("Deployment %s: ConfigMap %s mounted at %s has no key %s", d.Name, cm.Name, dir, key)
				}
				return cm, key
			}
		}
	}
	t.Errorf("Deployment %s: %s is not in a ConfigMap mounted in container %s", d.Name, file, c.Name)
	return nil, ""
}

// upstreamsFile is the upstreams file as the gateway reads it.
type upstreamsFile struct {
	Identity struct {
		SigningKeyFile   string   `json:"signing_key_file"`
		PreviousKeyFiles []string `json:"previous_key_files"`
		TTL              string   `json:"ttl"`
	} `json:"identity"`
	BuiltinTools *bool            `json:"builtin_tools"`
	Upstreams    []map[string]any `json:"upstreams"`
}

// TestFederation: with federation values, the upstreams file is a ConfigMap
// mounted read-only where UPSTREAMS_FILE points, holding the upstreams as
// given and the identity key paths of the signing key Secret, itself
// mounted read-only (group-readable only); the secrets the upstreams' headers
// name come from Secrets; NetworkPolicies admit only the gateway to the
// upstreams named; tracing and audit values reach both services'
// environments. The production example is such a set.
func TestFederation(t *testing.T) {
	t.Parallel()
	vals := parseValues(t, `
federation:
  upstreams:
    - name: billing
      url: http://billing.billing.svc:8080/mcp
      scopes: [read:billing]
      headers: {X-Api-Key: "${BILLING_API_KEY}", Authorization: "Bearer ${BILLING_TOKEN}", X-Tenant: acme}
    - name: docs
      url: http://docs.docs.svc:3001/mcp
      identity: none
  settings: {builtin_tools: false}
  identity:
    signingKeySecret: gw-identity
    signingKeyKey: current.pem
    previousKeyKeys: [old.pem]
    ttl: 2m
  secretEnv:
    BILLING_API_KEY: {secret: billing-mcp, key: api-key}
    BILLING_TOKEN: {secret: billing-mcp, key: token}
  networkPolicies:
    - {name: docs, podSelector: {app: docs-mcp}, ports: [3001]}
    - {name: billing, namespace: billing, podSelector: {app: billing-mcp}, ports: [8080]}
tracing:
  endpoint: http://otel-collector.observability:4317
  protocol: grpc
  sampler: traceidratio
  samplerArg: "0.25"
  headersSecret: otlp
gateway:
  replicaCount: 3
  audit: {log: stdout, arguments: true}
`)
	m := render(t, vals)
	checkPods(t, m)
	checkNoSecretInConfigMaps(t, m)
	checkNetworkPolicies(t, m)
	// The upstreams' policies, in their own namespaces, admit the gateway
	// (checkNetworkPolicies: and no one else).
	got := map[string]string{}
	for _, p := range m.Policies {
		if p.Labels["app.kubernetes.io/component"] == "upstream" {
			got[p.Name] = p.Namespace
		}
	}
	if diff := cmp.Diff(map[string]string{"mcp-mcpauthz-upstream-docs": namespace, "mcp-mcpauthz-upstream-billing": "billing"}, got); diff != "" {
		t.Errorf("upstream NetworkPolicies, name: namespace (-want +got):\n%s", diff)
	}
	gw := m.deployment(t, "gateway")
	c := gw.Spec.Template.Spec.Containers[0]
	env := m.env(t, c)
	cm, key := m.mountedConfigMap(t, gw, c, env["UPSTREAMS_FILE"])
	if cm == nil {
		t.Fatal("no upstreams file")
	}
	var f upstreamsFile
	if err := yaml.UnmarshalStrict([]byte(cm.Data[key]), &f); err != nil {
		t.Fatalf("the upstreams file: %v\n%s", err, cm.Data[key])
	}
	if len(f.Upstreams) != 2 || f.Upstreams[0]["name"] != "billing" || f.Upstreams[1]["identity"] != "none" || f.BuiltinTools == nil || *f.BuiltinTools {
		t.Errorf("the upstreams file:\n%s", cm.Data[key])
	}
	if f.Identity.TTL != "2m" {
		t.Errorf("identity.ttl %q, want 2m", f.Identity.TTL)
	}

	// The signing key: a Secret volume mounted read-only at the directory of
	// signing_key_file, the file and the previous one keys of it.
	var keyMount *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		if vm.MountPath == path.Dir(f.Identity.SigningKeyFile) {
			keyMount = &c.VolumeMounts[i]
		}
	}
	if keyMount == nil || !keyMount.ReadOnly {
		t.Fatalf("signing_key_file %s: no read-only mount there: %+v", f.Identity.SigningKeyFile, c.VolumeMounts)
	}
	var keyVol *corev1.Volume
	for i, v := range gw.Spec.Template.Spec.Volumes {
		if v.Name == keyMount.Name {
			keyVol = &gw.Spec.Template.Spec.Volumes[i]
		}
	}
	if keyVol == nil || keyVol.Secret == nil || keyVol.Secret.SecretName != "gw-identity" {
		t.Fatalf("the key's volume is not the Secret gw-identity: %+v", keyVol)
	}
	if mode := keyVol.Secret.DefaultMode; mode == nil || *mode&0o007 != 0 {
		t.Errorf("the key's files are readable by others: mode %v", mode)
	}
	if path.Base(f.Identity.SigningKeyFile) != "current.pem" || !slices.Equal(f.Identity.PreviousKeyFiles, []string{path.Dir(f.Identity.SigningKeyFile) + "/old.pem"}) {
		t.Errorf("identity key files %s, %v", f.Identity.SigningKeyFile, f.Identity.PreviousKeyFiles)
	}

	want := map[string]string{
		"BILLING_API_KEY":             "secret:billing-mcp/api-key",
		"BILLING_TOKEN":               "secret:billing-mcp/token",
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_TRACES_SAMPLER":         "traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.25",
		"OTEL_EXPORTER_OTLP_HEADERS":  "secret:otlp/OTEL_EXPORTER_OTLP_HEADERS",
		"AUDIT_LOG":                   "stdout",
		"AUDIT_LOG_ARGUMENTS":         "true",
	}
	got = map[string]string{}
	for k := range want {
		got[k] = env[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gateway environment (-want +got):\n%s", diff)
	}
	authzEnv := m.env(t, m.deployment(t, "authz").Spec.Template.Spec.Containers[0])
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_HEADERS"} {
		if authzEnv[k] != want[k] {
			t.Errorf("authz %s = %q, want %q", k, authzEnv[k], want[k])
		}
	}
	// A changed upstreams file rolls the gateway's pods.
	if gw.Spec.Template.Annotations["checksum/upstreams"] == "" {
		t.Error("no checksum/upstreams annotation: pods would keep an old upstreams file")
	}

	// Without federation, tracing or audit values, none of it is set.
	m = render(t, parseValues(t, `{}`))
	for _, d := range m.Deployments {
		for k := range m.env(t, d.Spec.Template.Spec.Containers[0]) {
			if k == "UPSTREAMS_FILE" || k == "AUDIT_LOG" || strings.HasPrefix(k, "OTEL_") {
				t.Errorf("defaults: Deployment %s sets %s", d.Name, k)
			}
		}
	}
}

// TestFederationRefused: an upstreams file the gateway's replicas cannot
// share, or one that would put a secret in a ConfigMap, fails the render
// with one line naming the values. A secretEnv entry without a key, an audit
// log other than stdout and an unknown sampler are refused by
// values.schema.json (the chart's templates do not check them again).
func TestFederationRefused(t *testing.T) {
	t.Parallel()
	const one = `upstreams: [{name: billing, url: "http://billing:8080/mcp"}]`
	tests := []struct {
		name, values, want string
	}{
		{"several replicas without a signing key", `{federation: {` + one + `}, gateway: {replicaCount: 2}}`, "federation.identity.signingKeySecret is required with more than one gateway replica"},
		{"autoscaling without a signing key", `{federation: {` + one + `}, gateway: {replicaCount: 1, autoscaling: {enabled: true}}}`, "federation.identity.signingKeySecret is required"},
		{"the default replica count without a signing key", `{federation: {` + one + `}}`, "federation.identity.signingKeySecret is required"},
		{"a literal API key in a header", `{federation: {upstreams: [{name: b, url: "http://b/mcp", identity: none, headers: {X-Api-Key: abc123}}]}}`, "federation.upstreams[0].headers.X-Api-Key: looks like a secret"},
		{"a literal token in a stdio env", `{federation: {upstreams: [{name: b, command: [b], identity: none, env: {GITHUB_TOKEN: ghp_x}}]}}`, "federation.upstreams[0].env.GITHUB_TOKEN: looks like a secret"},
		{"a signing key without upstreams", `{federation: {identity: {signingKeySecret: k}}}`, "set without federation.upstreams"},
		{"secretEnv without a key", `{federation: {upstreams: [{name: b, url: "http://b/mcp", identity: none}], secretEnv: {B_KEY: {secret: s}}}}`, "at '/federation/secretEnv/B_KEY': missing property 'key'"},
		{"UPSTREAMS_FILE in gateway.env", `{gateway: {env: {UPSTREAMS_FILE: /x.yaml}}}`, "gateway.env.UPSTREAMS_FILE: set by the chart"},
		{"AUDIT_LOG in gateway.env", `{gateway: {env: {AUDIT_LOG: stdout}}}`, "gateway.env.AUDIT_LOG: set by the chart"},
		{"an audit log file", `{gateway: {audit: {log: /var/log/audit.jsonl}}}`, "at '/gateway/audit/log': value must be one of '', 'stdout'"},
		{"OTLP headers in authz.env", `{authz: {env: {OTEL_EXPORTER_OTLP_HEADERS: "api-key=x"}}}`, "authz.env.OTEL_EXPORTER_OTLP_HEADERS: a secret"},
		{"the OTLP endpoint in gateway.env", `{gateway: {env: {OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318"}}}`, "gateway.env.OTEL_EXPORTER_OTLP_ENDPOINT: set by the chart"},
		{"OTLP headers without an endpoint", `{tracing: {headersSecret: otlp}}`, "tracing.headersSecret: set without tracing.endpoint"},
		{"an unknown sampler", `{tracing: {endpoint: "http://c:4318", sampler: jaeger_remote}}`, "at '/tracing/sampler': value must be one of 'always_on'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderChart(parseValues(t, tt.values))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// One replica may use a generated key; an upstream without identity
	// needs none; a ${NAME} reference is no secret.
	for _, ok := range []string{
		`{federation: {` + one + `}, gateway: {replicaCount: 1}}`,
		`{federation: {upstreams: [{name: b, url: "http://b/mcp", identity: none, headers: {X-Api-Key: "${B_KEY}"}}], secretEnv: {B_KEY: {secret: s, key: k}}}}`,
	} {
		if _, err := renderChart(parseValues(t, ok)); err != nil {
			t.Errorf("render %s: %v", ok, err)
		}
	}
}
