package charttest

import (
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// binaryOf is the binary each container runs.
var binaryOf = map[string]string{"authz": "authz", "mcp-gateway": "mcp-gateway", "devauth": "devauth"}

// TestChart renders each values set and checks the chart's promises.
func TestChart(t *testing.T) {
	t.Parallel()
	for _, set := range valuesSets {
		t.Run(set.name, func(t *testing.T) {
			t.Parallel()
			vals := set.vals(t)
			m := render(t, vals)
			checkSelectors(t, m)
			checkPods(t, m)
			checkAuthzAddr(t, m)
			checkNetworkPolicies(t, m)
			checkNoSecretInConfigMaps(t, m)
		})
	}
}

// TestLint runs Helm's linter (`helm lint`) over the chart with each values
// set: no warning, no error.
func TestLint(t *testing.T) {
	t.Parallel()
	for _, set := range valuesSets {
		t.Run(set.name, func(t *testing.T) {
			t.Parallel()
			l := lint.RunAll(chartDir, set.vals(t), namespace)
			for _, msg := range l.Messages {
				if msg.Severity >= support.WarningSev {
					t.Errorf("helm lint: %v", msg)
				} else {
					t.Logf("helm lint: %v", msg)
				}
			}
		})
	}
}

// TestRefusedValues: values that cannot work fail the render with one line
// naming them, instead of pods that crash or run insecurely.
func TestRefusedValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, values, want string
	}{
		{"devauth with a real authorization server", `{devauth: {enabled: true}, authorizationServer: {authURL: "https://auth.example.com"}}`, "devauth.enabled: the demo authorization server replaces"},
		{"devauth with real credentials", `{devauth: {enabled: true}, credentials: {existingSecret: creds}}`, "devauth.enabled: the demo authorization server replaces"},
		{"TLS without authz's certificate", `{tls: {enabled: true, gatewaySecret: g}}`, "tls.authzSecret must name"},
		{"TLS without the gateway's certificate", `{tls: {enabled: true, authzSecret: a}}`, "tls.gatewaySecret must name"},
		{"caller restrictions without mutual TLS", `{tls: {enabled: true, mutual: false, authzSecret: a, gatewaySecret: g, getUserCallers: billing}}`, "need mutual TLS"},
		{"a secret in authz.env", `{authz: {env: {REQUEST_VALIDATION_CLIENT_SECRET: x}}}`, "authz.env.REQUEST_VALIDATION_CLIENT_SECRET: a secret"},
		{"REDIS_URL in gateway.env", `{gateway: {env: {REDIS_URL: "redis://:pw@r:6379"}}}`, "gateway.env.REDIS_URL: a secret"},
		{"a variable the chart sets", `{gateway: {env: {AUTHZ_ADDR: "authz:50051"}}}`, "gateway.env.AUTHZ_ADDR: set by the chart"},
		{"an ingress without a host", `{gateway: {ingress: {enabled: true}}}`, "gateway.ingress.host is required"},
		{"two sources of the client secret", `{credentials: {existingSecret: creds, clientSecret: s}}`, "credentials.existingSecret and credentials.clientSecret"},
		{"two sources of REDIS_URL", `{redis: {url: "redis://r:6379", existingSecret: r}}`, "redis.url and redis.existingSecret"},
		{"a misspelt key (values.schema.json)", `{gatway: {replicaCount: 3}}`, "gatway"},
		{"a misspelt nested key", `{authz: {autoscaling: {enable: true}}}`, "enable"},
		{"a count that is not a number", `{authz: {replicaCount: "two"}}`, "replicaCount"},
		{"a grace period shorter than preStop", `{authz: {terminationGracePeriodSeconds: 5, preStopSleepSeconds: 5}}`, "authz.terminationGracePeriodSeconds must exceed"},
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
}

// checkSelectors: every Deployment selects its own pods; every Service,
// PodDisruptionBudget and HorizontalPodAutoscaler targets a Deployment's pods
// and ports.
func checkSelectors(t *testing.T, m *manifest) {
	t.Helper()
	for _, d := range m.Deployments {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("Deployment %s: selector %v: %v", d.Name, d.Spec.Selector, err)
			continue
		}
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: selector %v does not match its pod labels %v", d.Name, d.Spec.Selector, d.Spec.Template.Labels)
		}
		for _, other := range m.Deployments {
			if other != d && sel.Matches(labels.Set(other.Spec.Template.Labels)) {
				t.Errorf("Deployment %s's selector also matches %s's pods", d.Name, other.Name)
			}
		}
	}
	for _, s := range m.Services {
		ds := matching(m, labels.SelectorFromSet(s.Spec.Selector))
		if len(s.Spec.Selector) == 0 || len(ds) != 1 {
			t.Errorf("Service %s: selector %v matches %d Deployments, want 1", s.Name, s.Spec.Selector, len(ds))
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(ds[0].Spec.Template.Spec.Containers[0], p.TargetPort); !ok {
				t.Errorf("Service %s port %s: targetPort %s is not a port of %s", s.Name, p.Name, p.TargetPort.String(), ds[0].Name)
			}
		}
	}
	for _, p := range m.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", p.Name, err)
			continue
		}
		if ds := matching(m, sel); len(ds) != 1 {
			t.Errorf("PodDisruptionBudget %s selects the pods of %d Deployments, want 1", p.Name, len(ds))
		}
	}
	for _, h := range m.HPAs {
		ref := h.Spec.ScaleTargetRef
		var target *appsv1.Deployment
		for _, d := range m.Deployments {
			if ref.Kind == "Deployment" && ref.APIVersion == "apps/v1" && ref.Name == d.Name {
				target = d
			}
		}
		switch {
		case target == nil:
			t.Errorf("HorizontalPodAutoscaler %s: target %+v is no Deployment of the chart", h.Name, ref)
		case target.Spec.Replicas != nil:
			t.Errorf("Deployment %s sets replicas although %s scales it: every upgrade would reset the count", target.Name, h.Name)
		case target.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu().IsZero():
			t.Errorf("Deployment %s: no CPU request, which %s's utilization target needs", target.Name, h.Name)
		}
	}
	for _, ing := range m.Ingresses {
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				svc := service(m, b.Name)
				if svc == nil {
					t.Errorf("Ingress %s: backend %s is no Service of the chart", ing.Name, b.Name)
					continue
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == b.Port.Name || sp.Port == b.Port.Number }) {
					t.Errorf("Ingress %s: Service %s has no port %+v", ing.Name, b.Name, b.Port)
				}
				if b.Port.Name == "metrics" {
					t.Errorf("Ingress %s routes to the operational port", ing.Name)
				}
			}
		}
	}
}

// checkPods: security, probes on served ports, environment names the binary
// reads, and a termination grace period that covers preStop and the service's
// own shutdown.
func checkPods(t *testing.T, m *manifest) {
	t.Helper()
	known := declaredEnv(t)
	shutdown := shutdownSeconds(t)
	for _, d := range m.Deployments {
		spec := d.Spec.Template.Spec
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("Deployment %s mounts a service account token it never uses", d.Name)
		}
		if len(spec.InitContainers) > 0 || len(spec.Containers) != 1 {
			t.Errorf("Deployment %s: %d containers and %d init containers, want one container", d.Name, len(spec.Containers), len(spec.InitContainers))
		}
		for _, c := range spec.Containers {
			checkSecurity(t, d.Name, spec.SecurityContext, c)
			env := m.env(t, c)
			names := known
			if refs := m.upstreamsRefs(t, d, c, env); len(refs) > 0 {
				// Variables the upstreams file names as ${NAME} are read
				// too (from federation.secretEnv).
				names = maps.Clone(known)
				names[binaryOf[c.Name]] = maps.Clone(known[binaryOf[c.Name]])
				for _, r := range refs {
					names[binaryOf[c.Name]][r] = true
				}
			}
			checkEnvNames(t, d.Name, c, env, names)
			checkProbes(t, d.Name, c, env)
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
				t.Errorf("Deployment %s: container %s lacks a CPU or memory request or a memory limit: %+v", d.Name, c.Name, c.Resources)
			}
		}
		component := d.Spec.Template.Labels["app.kubernetes.io/component"]
		own, drains := shutdown[component]
		if !drains {
			continue
		}
		c := spec.Containers[0]
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("Deployment %s: no preStop sleep: the pod would stop before it leaves the endpoints", d.Name)
			continue
		}
		sleep := c.Lifecycle.PreStop.Sleep.Seconds
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if spec.TerminationGracePeriodSeconds != nil {
			grace = *spec.TerminationGracePeriodSeconds
		}
		if grace <= sleep+own {
			t.Errorf("Deployment %s: terminationGracePeriodSeconds %d does not exceed preStop %ds + the service's own shutdown %ds", d.Name, grace, sleep, own)
		}
		if sleep < 1 {
			t.Errorf("Deployment %s: preStop sleeps %ds", d.Name, sleep)
		}
	}
}

func checkSecurity(t *testing.T, deployment string, pod *corev1.PodSecurityContext, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	nonRoot := sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
	if sc == nil || sc.RunAsNonRoot == nil { // the pod's applies
		nonRoot = pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	}
	uid := sc != nil && sc.RunAsUser != nil && *sc.RunAsUser != 0 || (sc == nil || sc.RunAsUser == nil) && pod != nil && pod.RunAsUser != nil && *pod.RunAsUser != 0
	switch {
	case !nonRoot || !uid:
		t.Errorf("Deployment %s: container %s may run as root", deployment, c.Name)
	case sc == nil:
		t.Errorf("Deployment %s: container %s has no securityContext", deployment, c.Name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("Deployment %s: container %s has a writable root filesystem", deployment, c.Name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("Deployment %s: container %s allows privilege escalation", deployment, c.Name)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("Deployment %s: container %s is privileged", deployment, c.Name)
	case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0:
		t.Errorf("Deployment %s: container %s does not drop every capability: %+v", deployment, c.Name, sc.Capabilities)
	}
}

// goRuntimeEnv are the variables the chart may set that the Go runtime reads
// itself, whatever the binary lists.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true}

// checkEnvNames: every variable set in the container is one its binary (or
// the Go runtime in it) reads.
func checkEnvNames(t *testing.T, deployment string, c corev1.Container, env map[string]string, known map[string]map[string]bool) {
	t.Helper()
	bin, ok := binaryOf[c.Name]
	if !ok {
		t.Errorf("Deployment %s: container %s runs no binary of this repository", deployment, c.Name)
		return
	}
	for name := range env {
		if !known[bin][name] && !goRuntimeEnv[name] {
			t.Errorf("Deployment %s: %s sets %s, which %s does not read (%s -list-env)", deployment, c.Name, name, bin, bin)
		}
	}
}

// checkProbes: every probe names a port the container declares, and that port
// is one the binary listens on (its *_LISTEN variables).
func checkProbes(t *testing.T, deployment string, c corev1.Container, env map[string]string) {
	t.Helper()
	listening := map[int32]string{}
	for name, v := range env {
		if !strings.HasSuffix(name, "_LISTEN") {
			continue
		}
		_, p, err := net.SplitHostPort(v)
		n, err2 := strconv.Atoi(p)
		if err != nil || err2 != nil {
			t.Errorf("Deployment %s: %s=%q is not host:port", deployment, name, v)
			continue
		}
		listening[int32(n)] = name
	}
	for _, p := range c.Ports {
		if _, ok := listening[p.ContainerPort]; !ok {
			t.Errorf("Deployment %s: container port %s (%d) is none of the binary's listen addresses %v", deployment, p.Name, p.ContainerPort, listening)
		}
	}
	probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("Deployment %s: container %s lacks a readiness or liveness probe", deployment, c.Name)
	}
	for kind, p := range probes {
		if p == nil {
			continue
		}
		var port intstr.IntOrString
		switch {
		case p.HTTPGet != nil:
			port = p.HTTPGet.Port
			if !strings.HasPrefix(p.HTTPGet.Path, "/") {
				t.Errorf("Deployment %s: %s probe path %q", deployment, kind, p.HTTPGet.Path)
			}
		case p.GRPC != nil:
			port = intstr.FromInt32(p.GRPC.Port)
			if strings.HasPrefix(env["AUTHZ_TLS_CERT"], "/") && c.Name == "authz" {
				t.Errorf("Deployment %s: gRPC %s probe on a TLS port; kubelet's gRPC probe speaks plaintext only", deployment, kind)
			}
		default:
			t.Errorf("Deployment %s: %s probe is neither HTTP nor gRPC", deployment, kind)
			continue
		}
		if _, ok := containerPort(c, port); !ok {
			t.Errorf("Deployment %s: %s probe port %s is not a port of container %s", deployment, kind, port.String(), c.Name)
		}
	}
	// What each service serves where (docs/configuration.md).
	want := map[string][]string{
		"authz":       {"readiness:" + grpcOr(env, "AUTHZ_LISTEN", "/readyz@AUTHZ_METRICS_LISTEN"), "liveness:/healthz@AUTHZ_METRICS_LISTEN"},
		"mcp-gateway": {"readiness:/readyz@MCP_METRICS_LISTEN", "liveness:/healthz@MCP_LISTEN"},
		"devauth":     {"readiness:/healthz@DEVAUTH_LISTEN", "liveness:/healthz@DEVAUTH_LISTEN"},
	}[c.Name]
	for _, w := range want {
		kind, target, _ := strings.Cut(w, ":")
		if got := describeProbe(c, probes[kind], listening); got != target {
			t.Errorf("Deployment %s: %s probe is %s, want %s", deployment, kind, got, target)
		}
	}
}

// grpcOr is the readiness authz should have: gRPC health on its gRPC port in
// plaintext, else the HTTP fallback.
func grpcOr(env map[string]string, grpcListen, fallback string) string {
	if env["AUTHZ_TLS_CERT"] != "" {
		return fallback
	}
	return "grpc@" + grpcListen
}

// describeProbe names a probe as "<path or grpc>@<listen variable>".
func describeProbe(c corev1.Container, p *corev1.Probe, listening map[int32]string) string {
	if p == nil {
		return "none"
	}
	var what string
	var port intstr.IntOrString
	switch {
	case p.HTTPGet != nil:
		what, port = p.HTTPGet.Path, p.HTTPGet.Port
	case p.GRPC != nil:
		what, port = "grpc", intstr.FromInt32(p.GRPC.Port)
	}
	n, _ := containerPort(c, port)
	return what + "@" + listening[n]
}

// containerPort resolves a port by name or number to a declared container port.
func containerPort(c corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, p := range c.Ports {
		if port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// checkAuthzAddr: the gateway dials dns:/// over a headless Service that
// selects the authz pods and serves their gRPC port.
func checkAuthzAddr(t *testing.T, m *manifest) {
	t.Helper()
	gw := m.deployment(t, "gateway")
	addr := m.env(t, gw.Spec.Template.Spec.Containers[0])["AUTHZ_ADDR"]
	host, port, ok := strings.Cut(strings.TrimPrefix(addr, "dns:///"), ":")
	if !strings.HasPrefix(addr, "dns:///") || !ok {
		t.Fatalf("gateway AUTHZ_ADDR = %q, want dns:///<headless Service>:<port>", addr)
	}
	name, domain, _ := strings.Cut(host, ".")
	if !strings.HasPrefix(domain, namespace+".svc.") {
		t.Errorf("AUTHZ_ADDR %q: host is not <service>.%s.svc.<cluster domain>", addr, namespace)
	}
	svc := service(m, name)
	if svc == nil {
		t.Fatalf("AUTHZ_ADDR %q names no Service of the chart", addr)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s is not headless (clusterIP %q): every gateway would stick to one authz pod", name, svc.Spec.ClusterIP)
	}
	authz := m.deployment(t, "authz")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(authz.Spec.Template.Labels)) {
		t.Errorf("Service %s does not select the authz pods", name)
	}
	grpcListen := m.env(t, authz.Spec.Template.Spec.Containers[0])["AUTHZ_LISTEN"]
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
		return strconv.Itoa(int(p.Port)) == port && ":"+strconv.Itoa(int(p.Port)) == grpcListen
	}) {
		t.Errorf("AUTHZ_ADDR port %s is not the Service's port of authz's AUTHZ_LISTEN %s", port, grpcListen)
	}
}

// checkNoSecretInConfigMaps: no ConfigMap key is a variable any binary
// declares secret (or REDIS_URL, which may carry a password), and no value of
// a chart-created Secret appears in a ConfigMap.
func checkNoSecretInConfigMaps(t *testing.T, m *manifest) {
	t.Helper()
	secretNames := map[string]bool{"REDIS_URL": true}
	for _, vars := range declaredVars(t) {
		for _, v := range vars {
			if v.Secret {
				secretNames[v.Name] = true
			}
		}
	}
	var secretValues []string
	for _, s := range m.Secrets {
		for _, v := range s.StringData {
			secretValues = append(secretValues, v)
		}
		for _, v := range s.Data {
			secretValues = append(secretValues, string(v))
		}
	}
	secretValues = append(secretValues, clientSecret, apiKey, redisURL, "redis-password-51aa")
	for _, cm := range m.ConfigMaps {
		for k, v := range cm.Data {
			if secretNames[k] {
				t.Errorf("ConfigMap %s holds %s, a secret", cm.Name, k)
			}
			for _, s := range secretValues {
				if s != "" && strings.Contains(v, s) {
					t.Errorf("ConfigMap %s: %s holds a secret value", cm.Name, k)
				}
			}
		}
	}
	for _, d := range m.Deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if secretNames[e.Name] && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
					t.Errorf("Deployment %s: %s is set in the pod spec, not from a Secret", d.Name, e.Name)
				}
			}
		}
	}
}

// checkNetworkPolicies: authz's gRPC port admits the gateway and the labelled
// callers only; Redis admits authz and the gateway only; an upstream's policy
// admits the gateway only; every policy selects pods.
func checkNetworkPolicies(t *testing.T, m *manifest) {
	t.Helper()
	if len(m.Policies) == 0 {
		return
	}
	authz := m.deployment(t, "authz")
	gateway := m.deployment(t, "gateway")
	caller := pod{ns: namespace, labels: map[string]string{"mcpauthz.io/authz-client": "true"}}
	stranger := pod{ns: namespace, labels: map[string]string{"app": "other"}}
	// A pod of the same release that is neither authz nor the gateway.
	sibling := pod{ns: namespace, labels: maps.Clone(authz.Spec.Template.Labels)}
	sibling.labels["app.kubernetes.io/component"] = "other"
	authzPod := pod{ns: namespace, labels: authz.Spec.Template.Labels}
	gatewayPod := pod{ns: namespace, labels: gateway.Spec.Template.Labels}
	pods := []pod{authzPod, gatewayPod}
	var devauthPod *pod
	for _, d := range m.Deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "devauth" {
			devauthPod = &pod{ns: namespace, labels: d.Spec.Template.Labels}
			pods = append(pods, *devauthPod)
		}
	}
	var authzPolicy, redisPolicy *networkingv1.NetworkPolicy
	var upstreamPolicies []*networkingv1.NetworkPolicy
	for _, p := range m.Policies {
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil || sel.Empty() {
			t.Errorf("NetworkPolicy %s selects every pod (%v): %v", p.Name, p.Spec.PodSelector, err)
			continue
		}
		if !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("NetworkPolicy %s: no Ingress policy type", p.Name)
		}
		switch {
		case sel.Matches(labels.Set(authz.Spec.Template.Labels)):
			authzPolicy = p
		case p.Labels["app.kubernetes.io/component"] == "redis":
			redisPolicy = p
		case p.Labels["app.kubernetes.io/component"] == "upstream":
			upstreamPolicies = append(upstreamPolicies, p)
			continue
		}
		if len(matching(m, sel)) == 0 && p != redisPolicy {
			t.Errorf("NetworkPolicy %s selects no pod of the chart", p.Name)
		}
	}
	if authzPolicy == nil {
		t.Fatal("no NetworkPolicy selects authz")
	}
	grpc := authz.Spec.Template.Spec.Containers[0].Ports[0]
	if grpc.Name != "grpc" {
		t.Fatalf("authz's first port is %s, want grpc", grpc.Name)
	}
	// A caller in the policy's namespace, unless the values confine callers to
	// other namespaces.
	callerAllowed := allows(authzPolicy, caller, grpc)
	for _, ns := range []string{namespace, "billing"} {
		c := caller
		c.ns = ns
		if allows(authzPolicy, c, grpc) {
			callerAllowed = true
		}
	}
	if !callerAllowed {
		t.Errorf("NetworkPolicy %s keeps a labelled caller out of authz's gRPC port", authzPolicy.Name)
	}
	if !allows(authzPolicy, gatewayPod, grpc) {
		t.Errorf("NetworkPolicy %s keeps the gateway out of authz's gRPC port", authzPolicy.Name)
	}
	for name, p := range map[string]pod{"an unlabelled pod": stranger, "an unlabelled pod elsewhere": {ns: "elsewhere"}, "another pod of the release": sibling} {
		if allows(authzPolicy, p, grpc) {
			t.Errorf("NetworkPolicy %s lets %s call authz", authzPolicy.Name, name)
		}
	}
	if devauthPod != nil && allows(authzPolicy, *devauthPod, grpc) {
		t.Errorf("NetworkPolicy %s lets devauth call authz", authzPolicy.Name)
	}
	for _, p := range upstreamPolicies {
		if len(p.Spec.Ingress) != 1 || len(p.Spec.Ingress[0].Ports) == 0 || p.Spec.Ingress[0].Ports[0].Port == nil {
			t.Errorf("NetworkPolicy %s: want one ingress rule with ports: %+v", p.Name, p.Spec.Ingress)
			continue
		}
		port := corev1.ContainerPort{ContainerPort: p.Spec.Ingress[0].Ports[0].Port.IntVal}
		if !allows(p, gatewayPod, port) {
			t.Errorf("NetworkPolicy %s keeps the gateway out of its upstream", p.Name)
		}
		self := pod{ns: p.Namespace, labels: p.Spec.PodSelector.MatchLabels}
		for _, other := range []pod{authzPod, stranger, caller, sibling, self, {ns: p.Namespace}} {
			if allows(p, other, port) {
				t.Errorf("NetworkPolicy %s lets %v reach its upstream", p.Name, other)
			}
		}
	}
	if redisPolicy != nil {
		redis := corev1.ContainerPort{ContainerPort: 6379}
		for _, p := range []pod{authzPod, gatewayPod} {
			if !allows(redisPolicy, p, redis) {
				t.Errorf("NetworkPolicy %s keeps %s out of Redis", redisPolicy.Name, p.labels["app.kubernetes.io/component"])
			}
		}
		others := []pod{stranger, caller, sibling, {ns: redisPolicy.Namespace}}
		if devauthPod != nil {
			others = append(others, *devauthPod)
		}
		self := pod{ns: redisPolicy.Namespace, labels: redisPolicy.Spec.PodSelector.MatchLabels}
		if !allows(redisPolicy, self, corev1.ContainerPort{ContainerPort: 16379}) {
			t.Errorf("NetworkPolicy %s cuts Redis off from itself (replication, Sentinels, the Cluster bus)", redisPolicy.Name)
		}
		for _, p := range others {
			if allows(redisPolicy, p, redis) {
				t.Errorf("NetworkPolicy %s lets %v reach Redis", redisPolicy.Name, p)
			}
		}
	}
}

// pod is a peer a NetworkPolicy judges: its namespace and labels.
type pod struct {
	ns     string
	labels map[string]string
}

// allows reports whether policy p admits traffic from peer to port of a pod
// it selects, by the NetworkPolicy semantics of ingress rules.
func allows(p *networkingv1.NetworkPolicy, peer pod, port corev1.ContainerPort) bool {
	for _, r := range p.Spec.Ingress {
		portOK := len(r.Ports) == 0
		for _, rp := range r.Ports {
			if rp.Port == nil || rp.Port.Type == intstr.String && rp.Port.StrVal == port.Name || rp.Port.Type == intstr.Int && rp.Port.IntVal == port.ContainerPort {
				portOK = true
			}
		}
		if !portOK {
			continue
		}
		if len(r.From) == 0 {
			return true
		}
		for _, from := range r.From {
			if peerMatches(p.Namespace, from, peer) {
				return true
			}
		}
	}
	return false
}

func peerMatches(policyNS string, from networkingv1.NetworkPolicyPeer, peer pod) bool {
	if from.IPBlock != nil {
		return false // pods are not judged by address here
	}
	if policyNS == "" {
		policyNS = namespace
	}
	nsOK := peer.ns == policyNS
	if from.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(from.NamespaceSelector)
		nsOK = err == nil && sel.Matches(labels.Set{"kubernetes.io/metadata.name": peer.ns})
	}
	podOK := true
	if from.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(from.PodSelector)
		podOK = err == nil && sel.Matches(labels.Set(peer.labels))
	}
	return nsOK && podOK
}

func matching(m *manifest, sel labels.Selector) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range m.Deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

func service(m *manifest, name string) *corev1.Service {
	for _, s := range m.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// TestGoMemLimit: each Go container gets GOMEMLIMIT from its own memory limit,
// none without a limit, and the component's env wins when it sets one.
func TestGoMemLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want string // GOMEMLIMIT of both containers; "" unset
	}{
		{"defaults", ``, "resource:limits.memory"},
		{"no limit", "authz: {resources: {limits: null}}\ngateway: {resources: {limits: null}}\n", ""},
		{"set in env", "authz: {env: {GOMEMLIMIT: 300MiB}}\ngateway: {env: {GOMEMLIMIT: 300MiB}}\n", "300MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, parseValues(t, tt.yaml))
			for _, comp := range []string{"authz", "gateway"} {
				d := m.deployment(t, comp)
				c := d.Spec.Template.Spec.Containers[0]
				if got := m.env(t, c)["GOMEMLIMIT"]; got != tt.want {
					t.Errorf("%s: GOMEMLIMIT = %q, want %q", comp, got, tt.want)
				}
			}
		})
	}
}
