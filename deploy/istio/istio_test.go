package istio

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/meshproof/meshproof/deploy/envoy"
	"github.com/meshproof/meshproof/deploy/internal/deploytest"
	"github.com/meshproof/meshproof/deploy/kubernetes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	"istio.io/api/networking/v1alpha3"
	securityv1 "istio.io/api/security/v1"
	typev1beta1 "istio.io/api/type/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

const providerName = "meshproof"

func readObject(t *testing.T, file string) *Object {
	t.Helper()
	docs := deploytest.Docs(t, readFile(t, file))
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", file, len(docs))
	}
	o, err := DecodeObject(docs[0])
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return o
}

func readFile(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func spec[M proto.Message](t *testing.T, o *Object) M {
	t.Helper()
	m, ok := o.Spec.(M)
	if !ok {
		t.Fatalf("%s %s: spec is a %T", o.Kind, o.Metadata.Name, o.Spec)
	}
	return m
}

// meshproofInstall renders deploy/kubernetes/base, where the provider and
// the PeerAuthentication of meshproof itself point.
func meshproofInstall(t *testing.T) *kubernetes.Install {
	t.Helper()
	in, err := kubernetes.NewInstall(deploytest.Objects(t, deploytest.Kustomize(t, "kubernetes/base",
		map[string]string{"kubernetes/base/api-tokens": "0123456789abcdef0123456789abcdef\n"})))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func provider(t *testing.T) *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider {
	t.Helper()
	mc, err := DecodeMeshConfigValues(readFile(t, "meshconfig.yaml"))
	if err != nil {
		t.Fatalf("meshconfig.yaml: %v", err)
	}
	for _, p := range mc.GetExtensionProviders() {
		if p.GetName() == providerName {
			if g := p.GetEnvoyExtAuthzGrpc(); g != nil {
				return g
			}
		}
	}
	t.Fatalf("meshconfig.yaml: no envoyExtAuthzGrpc provider named %s", providerName)
	return nil
}

func TestExtensionProvider(t *testing.T) {
	g := provider(t)
	in := meshproofInstall(t)
	svc := in.Services["meshproof"]
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; g.GetService() != want {
		t.Errorf("provider service %q, want the Service of deploy/kubernetes, %q", g.GetService(), want)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Port == int32(g.GetPort()) && p.AppProtocol != nil && *p.AppProtocol == "grpc"
	}) {
		t.Errorf("provider port %d is not the Service's gRPC port", g.GetPort())
	}
	if d := g.GetTimeout().AsDuration(); d < 100*time.Millisecond || d > time.Second {
		t.Errorf("provider timeout %v: want 100ms to 1s (Istio's default is 600s)", d)
	}
	if g.GetFailOpen() {
		t.Error("failOpen: requests would pass unchecked, with no evidence, when meshproof is away")
	}
	// Istio accepts a statusOnError only if it names an Envoy StatusCode.
	code, err := strconv.Atoi(g.GetStatusOnError())
	if _, known := typev3.StatusCode_name[int32(code)]; g.GetStatusOnError() != "" && (err != nil || !known || code < 400) {
		t.Errorf("statusOnError %q: want an HTTP error status Envoy knows", g.GetStatusOnError())
	}
}

func TestAuthorizationPolicy(t *testing.T) {
	o := readObject(t, "authorizationpolicy.yaml")
	ap := spec[*securityv1.AuthorizationPolicy](t, o)
	if ap.GetAction() != securityv1.AuthorizationPolicy_CUSTOM || ap.GetProvider().GetName() != providerName {
		t.Errorf("action %v, provider %q: want CUSTOM with the %s provider", ap.GetAction(), ap.GetProvider().GetName(), providerName)
	}
	// Only requests that match a CUSTOM rule reach ext_authz: one empty rule
	// matches them all.
	if r := ap.GetRules(); len(r) != 1 || !proto.Equal(r[0], &securityv1.Rule{}) {
		t.Errorf("rules %v: want exactly one empty rule, so that every request is checked", r)
	}
	if len(ap.GetSelector().GetMatchLabels()) == 0 {
		t.Error("no selector: the policy would apply to the whole namespace")
	}
	provider(t) // the provider it names exists
}

func TestPeerAuthentications(t *testing.T) {
	ap := spec[*securityv1.AuthorizationPolicy](t, readObject(t, "authorizationpolicy.yaml"))
	var names []string
	for file, mode := range map[string]securityv1.PeerAuthentication_MutualTLS_Mode{
		"peerauthentication-permissive.yaml": securityv1.PeerAuthentication_MutualTLS_PERMISSIVE,
		"peerauthentication-strict.yaml":     securityv1.PeerAuthentication_MutualTLS_STRICT,
	} {
		o := readObject(t, file)
		pa := spec[*securityv1.PeerAuthentication](t, o)
		if pa.GetMtls().GetMode() != mode || len(pa.GetPortLevelMtls()) > 0 {
			t.Errorf("%s: mode %v (port-level %v), want %v for every port", file, pa.GetMtls().GetMode(), pa.GetPortLevelMtls(), mode)
		}
		if !maps.Equal(pa.GetSelector().GetMatchLabels(), ap.GetSelector().GetMatchLabels()) {
			t.Errorf("%s selects %v, the AuthorizationPolicy %v", file, pa.GetSelector().GetMatchLabels(), ap.GetSelector().GetMatchLabels())
		}
		names = append(names, o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	if names[0] != names[1] {
		t.Errorf("PERMISSIVE and STRICT are %v: with one name, applying STRICT replaces PERMISSIVE", names)
	}
}

func TestDestinationRule(t *testing.T) {
	o := readObject(t, "destinationrule.yaml")
	dr := spec[*networkingv1.DestinationRule](t, o)
	if dr.GetTrafficPolicy().GetTls().GetMode() != networkingv1.ClientTLSSettings_ISTIO_MUTUAL {
		t.Errorf("tls mode %v, want ISTIO_MUTUAL", dr.GetTrafficPolicy().GetTls().GetMode())
	}
	ap := readObject(t, "authorizationpolicy.yaml")
	app := spec[*securityv1.AuthorizationPolicy](t, ap).GetSelector().GetMatchLabels()["app"]
	if want := app + "." + ap.Metadata.Namespace + ".svc.cluster.local"; dr.GetHost() != want {
		t.Errorf("host %q, want the policy's workload %q", dr.GetHost(), want)
	}
}

func TestMeshproofPeerAuthentication(t *testing.T) {
	o := readObject(t, "meshproof-peerauthentication.yaml")
	pa := spec[*securityv1.PeerAuthentication](t, o)
	d := meshproofInstall(t).Deployments["meshproof"]
	if o.Metadata.Namespace != d.Namespace || !selects(pa.GetSelector(), d.Spec.Template.Labels) {
		t.Fatalf("it does not select meshproof's pods (%s, %v)", d.Namespace, d.Spec.Template.Labels)
	}
	if pa.GetMtls().GetMode() != securityv1.PeerAuthentication_MutualTLS_STRICT {
		t.Errorf("mode %v, want STRICT for the ext_authz port", pa.GetMtls().GetMode())
	}
	ports := map[string]uint32{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = uint32(p.ContainerPort)
	}
	if _, ok := pa.GetPortLevelMtls()[ports["grpc"]]; ok {
		t.Error("the gRPC port has a port-level exception")
	}
	if m := pa.GetPortLevelMtls()[ports["http"]]; m.GetMode() != securityv1.PeerAuthentication_MutualTLS_PERMISSIVE || len(pa.GetPortLevelMtls()) != 1 {
		t.Errorf("port-level %v: want PERMISSIVE on the http container port %d only", pa.GetPortLevelMtls(), ports["http"])
	}
}

func selects(sel *typev1beta1.WorkloadSelector, labels map[string]string) bool {
	for k, v := range sel.GetMatchLabels() {
		if labels[k] != v {
			return false
		}
	}
	return len(sel.GetMatchLabels()) > 0
}

func TestEnvoyFilter(t *testing.T) {
	o := readObject(t, "envoyfilter-peer-certificate.yaml")
	ef := spec[*v1alpha3.EnvoyFilter](t, o)
	ap := readObject(t, "authorizationpolicy.yaml")
	if o.Metadata.Namespace != ap.Metadata.Namespace ||
		!maps.Equal(ef.GetWorkloadSelector().GetLabels(), spec[*securityv1.AuthorizationPolicy](t, ap).GetSelector().GetMatchLabels()) {
		t.Error("the EnvoyFilter does not select the AuthorizationPolicy's workloads")
	}
	cps := ef.GetConfigPatches()
	if len(cps) != 1 {
		t.Fatalf("%d patches, want 1", len(cps))
	}
	cp := cps[0]
	fm := cp.GetMatch().GetListener().GetFilterChain().GetFilter()
	if cp.GetApplyTo() != v1alpha3.EnvoyFilter_HTTP_FILTER || cp.GetMatch().GetContext() != v1alpha3.EnvoyFilter_SIDECAR_INBOUND ||
		fm.GetName() != "envoy.filters.network.http_connection_manager" || fm.GetSubFilter().GetName() != "envoy.filters.http.ext_authz" {
		t.Errorf("match %v: want the ext_authz HTTP filter of the inbound HTTP connection manager", cp.GetMatch())
	}
	if cp.GetPatch().GetOperation() != v1alpha3.EnvoyFilter_Patch_MERGE {
		t.Errorf("operation %v: anything but MERGE would drop Istio's own ext_authz settings", cp.GetPatch().GetOperation())
	}

	// The patch value is an HttpFilter fragment: decode it with Envoy's types.
	js, err := protojson.Marshal(cp.GetPatch().GetValue())
	if err != nil {
		t.Fatal(err)
	}
	var hf hcmv3.HttpFilter
	if err := (protojson.UnmarshalOptions{Resolver: envoy.Resolver()}).Unmarshal(js, &hf); err != nil {
		t.Fatalf("patch value: %v", err)
	}
	var ea extauthzv3.ExtAuthz
	if err := hf.GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatalf("patch typed_config: %v", err)
	}
	var set []string
	ea.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		set = append(set, string(fd.Name()))
		return true
	})
	slices.Sort(set)
	if want := []string{"include_peer_certificate", "include_tls_session"}; !slices.Equal(set, want) || !ea.GetIncludePeerCertificate() || !ea.GetIncludeTlsSession() {
		t.Errorf("the patch sets %v, want exactly %v, true (anything else would override Istio's provider settings)", set, want)
	}
}

// TestKustomization builds deploy/istio and decodes what it renders; and no
// YAML file here goes unchecked.
func TestKustomization(t *testing.T) {
	out := deploytest.Kustomize(t, "istio", nil)
	var rendered []string
	for _, doc := range deploytest.Docs(t, out) {
		o, err := DecodeObject(doc)
		if err != nil {
			t.Fatal(err)
		}
		rendered = append(rendered, o.Kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name)
	}
	slices.Sort(rendered)
	want := []string{
		"AuthorizationPolicy mtls-pg/meshproof", "DestinationRule mtls-pg/httpbin",
		"PeerAuthentication meshproof/meshproof", "PeerAuthentication mtls-pg/httpbin",
	}
	if !slices.Equal(rendered, want) {
		t.Errorf("kustomize renders %v, want %v", rendered, want)
	}

	checked := map[string]bool{ // each read by a test above
		"kustomization.yaml": true, "meshconfig.yaml": true, "authorizationpolicy.yaml": true,
		"peerauthentication-permissive.yaml": true, "peerauthentication-strict.yaml": true,
		"destinationrule.yaml": true, "meshproof-peerauthentication.yaml": true,
		"envoyfilter-peer-certificate.yaml": true,
	}
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		if !checked[f] {
			t.Errorf("%s is read by no test", f)
		}
	}
}

// TestDecodeRejects shows the decoders fail on what they exist to catch.
func TestDecodeRejects(t *testing.T) {
	for _, c := range []struct {
		name, file, old, new, want string
	}{
		{"a header list the gRPC provider does not have", "meshconfig.yaml", "failOpen: false",
			"failOpen: false\n      includeRequestHeadersInCheck: [x-forwarded-client-cert]", "includeRequestHeadersInCheck"},
		{"unknown spec field", "authorizationpolicy.yaml", "action: CUSTOM", "action: CUSTOM\n  actions: CUSTOM", "actions"},
		{"bad enum", "peerauthentication-strict.yaml", "mode: STRICT", "mode: STRICTER", "STRICTER"},
		{"unknown metadata field", "destinationrule.yaml", "namespace: mtls-pg", "namespace: mtls-pg\n  namespaces: x", "namespaces"},
		{"unknown kind", "destinationrule.yaml", "kind: DestinationRule", "kind: DestinationRules", "DestinationRules"},
	} {
		t.Run(c.name, func(t *testing.T) {
			good := string(readFile(t, c.file))
			if !strings.Contains(good, c.old) {
				t.Fatalf("%s no longer has %q: update this case", c.file, c.old)
			}
			bad := []byte(strings.Replace(good, c.old, c.new, 1))
			var err error
			if c.file == "meshconfig.yaml" {
				_, err = DecodeMeshConfigValues(bad)
			} else {
				_, err = DecodeObject(bad)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}
