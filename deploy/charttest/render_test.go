package charttest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test, relative to this package.
const chartDir = "../helm/mcpauthz"

// Release is the release name and namespace every values set renders with.
const (
	releaseName = "mcp"
	namespace   = "mcp-prod"
)

// scheme knows every kind the chart may render; a kind outside it fails.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML into the registered API types and fails on unknown or
// duplicated fields.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// manifest is what one values set renders to, decoded.
type manifest struct {
	Objects      []runtime.Object
	Deployments  []*appsv1.Deployment
	Services     []*corev1.Service
	ConfigMaps   []*corev1.ConfigMap
	Secrets      []*corev1.Secret
	PDBs         []*policyv1.PodDisruptionBudget
	HPAs         []*autoscalingv2.HorizontalPodAutoscaler
	Policies     []*networkingv1.NetworkPolicy
	Ingresses    []*networkingv1.Ingress
	ServiceAccts []*corev1.ServiceAccount
}

// readValues reads a values file (YAML) into the map Helm takes.
func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return parseValues(t, string(b))
}

func parseValues(t *testing.T, s string) map[string]any {
	t.Helper()
	v, err := common.ReadValues([]byte(s))
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	return v
}

// renderChart renders the chart as `helm template` would, returning the
// rendered files by name, or Helm's error.
func renderChart(vals map[string]any) (map[string]string, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("loading the chart: %w", err)
	}
	top, err := chartutil.ToRenderValues(ch, vals, common.ReleaseOptions{Name: releaseName, Namespace: namespace, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, top)
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// render renders vals and decodes every object strictly.
func render(t *testing.T, vals map[string]any) *manifest {
	t.Helper()
	files, err := renderChart(vals)
	if err != nil {
		t.Fatalf("rendering: %v", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	m := &manifest{}
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" {
			continue
		}
		for i, doc := range docSep.Split(files[name], -1) {
			j, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s document %d: %v\n%s", name, i, err, doc)
			}
			if string(j) == "null" { // only comments or whitespace
				continue
			}
			obj, _, err := strict.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s document %d does not decode strictly: %v\n%s", name, i, err, doc)
			}
			m.add(t, obj)
		}
	}
	return m
}

func (m *manifest) add(t *testing.T, obj runtime.Object) {
	t.Helper()
	m.Objects = append(m.Objects, obj)
	switch o := obj.(type) {
	case *appsv1.Deployment:
		m.Deployments = append(m.Deployments, o)
	case *corev1.Service:
		m.Services = append(m.Services, o)
	case *corev1.ConfigMap:
		m.ConfigMaps = append(m.ConfigMaps, o)
	case *corev1.Secret:
		m.Secrets = append(m.Secrets, o)
	case *policyv1.PodDisruptionBudget:
		m.PDBs = append(m.PDBs, o)
	case *autoscalingv2.HorizontalPodAutoscaler:
		m.HPAs = append(m.HPAs, o)
	case *networkingv1.NetworkPolicy:
		m.Policies = append(m.Policies, o)
	case *networkingv1.Ingress:
		m.Ingresses = append(m.Ingresses, o)
	case *corev1.ServiceAccount:
		m.ServiceAccts = append(m.ServiceAccts, o)
	default:
		t.Fatalf("unexpected kind %T", obj)
	}
}

func (m *manifest) deployment(t *testing.T, component string) *appsv1.Deployment {
	t.Helper()
	for _, d := range m.Deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			return d
		}
	}
	t.Fatalf("no Deployment of %s", component)
	return nil
}

func (m *manifest) configMap(t *testing.T, name string) *corev1.ConfigMap {
	t.Helper()
	for _, c := range m.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no ConfigMap %s", name)
	return nil
}

// env is a container's environment as the kubelet would assemble it, by name:
// envFrom ConfigMaps first, then env (which wins). A value from a Secret reads
// "secret:<name>/<key>", one from the container's own resources
// "resource:<resource>".
func (m *manifest) env(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, src := range c.EnvFrom {
		if src.ConfigMapRef == nil {
			t.Errorf("container %s: envFrom other than a ConfigMap: %+v", c.Name, src)
			continue
		}
		for k, v := range m.configMap(t, src.ConfigMapRef.Name).Data {
			out[src.Prefix+k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			out[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		case e.ValueFrom.ResourceFieldRef != nil:
			if r := e.ValueFrom.ResourceFieldRef; r.ContainerName != c.Name {
				t.Errorf("container %s: %s from container %q's resources", c.Name, e.Name, r.ContainerName)
			}
			out[e.Name] = "resource:" + e.ValueFrom.ResourceFieldRef.Resource
		default:
			t.Errorf("container %s: %s from something other than a Secret", c.Name, e.Name)
		}
	}
	return out
}

// valuesSet is one set of values the chart must render.
type valuesSet struct {
	name string
	vals func(t *testing.T) map[string]any
}

func fromFile(file string) func(t *testing.T) map[string]any {
	return func(t *testing.T) map[string]any { return readValues(t, filepath.Join("..", "helm", "examples", file)) }
}

func fromYAML(s string) func(t *testing.T) map[string]any {
	return func(t *testing.T) map[string]any { return parseValues(t, s) }
}

// Secret values of createdSecrets: none may appear outside a Secret.
const (
	clientSecret = "client-secret-4b7e2f"
	apiKey       = "api-key-9c31d0"
	redisURL     = "rediss://default:redis-password-51aa@redis.example.com:6380/0"
)

var valuesSets = []valuesSet{
	{"defaults", fromYAML("{}")},
	{"production", fromFile("production.yaml")},
	{"demo", fromFile("demo.yaml")},
	{"createdSecrets", fromYAML(`
authorizationServer: {authURL: "https://auth.example.com"}
credentials: {clientID: c1, clientSecret: ` + clientSecret + `, apiKey: ` + apiKey + `}
redis: {url: "` + redisURL + `"}
gateway:
  publicURL: https://mcp.example.com
  ingress: {enabled: true, host: mcp.example.com}
tls: {enabled: true, mutual: false, authzSecret: a, gatewaySecret: g, serverName: authz.example}
networkPolicy: {enabled: false}
`)},
}
