package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshproof/meshproof/authz"
	"github.com/meshproof/meshproof/authz/authztest"
	"github.com/meshproof/meshproof/cluster/istio"
	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/evidence/report"
	"github.com/meshproof/meshproof/internal/kubetest"
)

// TestServeKubernetes: serve --kubernetes --kubeconfig against a real API
// server records the workload of a Check's source pod, as the cluster
// named it when the Check was made, and why the destination has none.
func TestServeKubernetes(t *testing.T) {
	cs := kubetest.Clientset(t) // skips without a test API server
	kubeconfig := os.Getenv("MESHPROOF_TEST_KUBECONFIG")
	ns := kubetest.Namespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sleep"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The address authztest's requests come from; no other test's pod has it.
	const ip = "10.0.0.1"
	runPod(ctx, t, cs, ns, "sleep", ip, map[string]string{"app": "sleep"}, "sleep")

	store := "sqlite:" + filepath.Join(t.TempDir(), "evidence.db")
	o, err := parseServe(t, "--store", store, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--replica", "r1", "--kubernetes", "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	addr, served := startServe(t, sctx, o)
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, authztest.NewRequest())
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetDynamicMetadata().GetFields()[authz.MetadataEvidenceID].GetStringValue()
	if !informersRunning() {
		t.Fatal("no informer goroutine while serve runs: the check below would prove nothing")
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	// serve's Close waited for its informers.
	if informersRunning() {
		t.Error("informer goroutines left once serve --kubernetes returned")
	}

	s, err := evidence.Open(context.Background(), store, evidence.Options{Existing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	want := evidence.Workload{Namespace: ns, Kind: "Pod", Name: "sleep", Pod: "sleep", ServiceAccount: "sleep", App: "sleep"}
	if rec.Source.Workload == nil || *rec.Source.Workload != want {
		t.Errorf("stored source workload %+v, want %+v", rec.Source.Workload, want)
	}
	if !slices.ContainsFunc(rec.Reasons, func(r string) bool { return strings.HasPrefix(r, "destination workload: ") }) {
		t.Errorf("reasons %q: none says why the destination (10.0.0.2, no pod) has no workload", rec.Reasons)
	}
}

// TestServeKubernetesUnreachable: an API server that cannot be reached
// stops serve at start with the address and the flag to look at, within
// --kubernetes-sync-timeout.
func TestServeKubernetesUnreachable(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0") // a port nothing answers on once closed
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+dead+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseServe(t, "--store", "sqlite:"+filepath.Join(dir, "e.db"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--kubernetes", "--kubeconfig", kc, "--kubernetes-sync-timeout", "1s")
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), o, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), "--kubernetes-sync-timeout") {
		t.Fatalf("serve with an unreachable API server: %v, want an error naming %s and --kubernetes-sync-timeout", err, dead)
	}
}

// informersRunning reports whether a goroutine runs client-go's informer
// machinery (package tools/cache).
func informersRunning() bool {
	buf := make([]byte, 8<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("k8s.io/client-go/tools/cache."))
}

// TestWatchWorkloadsStop: the stop serve's Close calls returns only once
// the informers have, from an API server and from the demo's static
// cluster alike.
func TestWatchWorkloadsStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    func(t *testing.T) kubeOptions
	}{
		{"api server", func(t *testing.T) kubeOptions {
			kubetest.Config(t) // skips without a test API server
			return kubeOptions{Enabled: true, Kubeconfig: os.Getenv("MESHPROOF_TEST_KUBECONFIG"), SyncTimeout: time.Minute}
		}},
		{"demo", func(t *testing.T) kubeOptions {
			src := demoCluster().Sources()
			return kubeOptions{Enabled: true, SyncTimeout: time.Minute, static: &src}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.k(t)
			if informersRunning() {
				t.Fatal("informer goroutines before the watch")
			}
			_, stop, err := watchWorkloads(context.Background(), k, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if !informersRunning() {
				t.Fatal("no informer goroutine while watching: the check below would prove nothing")
			}
			stop()
			if informersRunning() {
				t.Error("informer goroutines left once stop returned")
			}
		})
	}
}

// TestWatchIstioStop: the Istio watch's stop, too, returns only once its
// informers have, from an API server and from the demo's static cluster;
// the demo's PERMISSIVE policy and ISTIO_MUTUAL rule are in its Config.
func TestWatchIstioStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    func(t *testing.T) kubeOptions
	}{
		{"api server", func(t *testing.T) kubeOptions {
			kubetest.Config(t) // skips without a test API server
			return kubeOptions{Enabled: true, Kubeconfig: os.Getenv("MESHPROOF_TEST_KUBECONFIG"), SyncTimeout: time.Minute}
		}},
		{"demo", func(t *testing.T) kubeOptions {
			c := demoCluster()
			src, istioSrc := c.Sources(), c.IstioSources()
			return kubeOptions{Enabled: true, SyncTimeout: time.Minute, static: &src, staticIstio: &istioSrc}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := tc.k(t)
			if informersRunning() {
				t.Fatal("informer goroutines before the watch")
			}
			ix, stopPods := workload.NewIndex(), func() {}
			if k.static != nil { // the demo's pods, for its policy's selector
				var err error
				if ix, stopPods, err = watchWorkloads(context.Background(), k, zerolog.Nop()); err != nil {
					t.Fatal(err)
				}
			}
			cfg, stop, err := watchIstio(context.Background(), k, ix, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if !informersRunning() {
				t.Fatal("no informer goroutine while watching: the check below would prove nothing")
			}
			if tc.name == "demo" {
				peer := cfg.PeerAuthentication(demoNamespace, &evidence.Workload{Namespace: demoNamespace, Kind: "Deployment", Name: "httpbin"}, 8000)
				rule := cfg.DestinationRule(demoNamespace, "httpbin."+demoNamespace+".svc.cluster.local", 8000)
				if peer.Mode != "PERMISSIVE" || peer.Name == "" || rule.Mode != "ISTIO_MUTUAL" {
					t.Errorf("the demo's configuration: %+v, %+v; want its PERMISSIVE policy and ISTIO_MUTUAL rule", peer, rule)
				}
			}
			stop()
			stopPods()
			if informersRunning() {
				t.Error("informer goroutines left once stop returned")
			}
		})
	}
}

// TestServeKubernetesConflict: serve --kubernetes puts Istio's configuration
// beside the traffic in the API's reports. The destination pod is selected
// by a STRICT PeerAuthentication (by its label, which only the pods' index
// knows) and a DestinationRule sets ISTIO_MUTUAL for its service; a
// plaintext Check to it from a pod without a sidecar is a CONFLICT in
// tls-check, and strict-readiness says that client will break under STRICT.
func TestServeKubernetesConflict(t *testing.T) {
	cs := kubetest.Clientset(t) // skips without a test API server
	kubeconfig := os.Getenv("MESHPROOF_TEST_KUBECONFIG")
	ns := kubetest.Namespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, sa := range []string{"sleep", "app"} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// authztest's requests go from 10.0.0.1 to 10.0.0.2:8080, host app:8080.
	runPod(ctx, t, cs, ns, "sleep", "10.0.0.1", map[string]string{"app": "sleep"}, "sleep")
	runPod(ctx, t, cs, ns, "app", "10.0.0.2", map[string]string{"app": "httpbin", "tier": "backend"}, "httpbin", "istio-proxy")

	ic, err := istio.NewClients(kubetest.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	post := func(c any, resource, body string) {
		t.Helper()
		if err := c.(*rest.RESTClient).Post().Namespace(ns).Resource(resource).Body([]byte(body)).Do(ctx).Error(); err != nil {
			t.Fatalf("create %s: %v", resource, err)
		}
	}
	post(ic.Security, "peerauthentications", `{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication",
		"metadata":{"name":"backend"},"spec":{"selector":{"matchLabels":{"tier":"backend"}},"mtls":{"mode":"STRICT"}}}`)
	post(ic.Networking, "destinationrules", `{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule",
		"metadata":{"name":"app"},"spec":{"host":"app","trafficPolicy":{"tls":{"mode":"ISTIO_MUTUAL"}}}}`)

	o, err := parseServe(t, "--store", "sqlite:"+filepath.Join(t.TempDir(), "evidence.db"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--replica", "r1", "--evidence-durability", "sync", "--kubernetes", "--kubeconfig", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	bound := make(chan [2]net.Addr, 1)
	o.onListen = func(g, h net.Addr) { bound <- [2]net.Addr{g, h} }
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(sctx, o, zerolog.Nop()) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var addrs [2]net.Addr
	select {
	case addrs = <-bound:
	case err := <-served:
		t.Fatalf("serve: %v", err)
	}
	conn, err := grpc.NewClient(addrs[0].String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, authztest.NewRequest()); err != nil {
		t.Fatal(err)
	}

	get := func(path string, into any) {
		t.Helper()
		resp, err := http.Get("http://" + addrs[1].String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", path, resp.Status, body)
		}
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	var tc report.TLSCheckReport
	get("/v1/reports/tls-check?since=2020-01-01T00:00:00Z", &tc)
	if len(tc.Rows) != 1 {
		t.Fatalf("tls-check rows %+v, want app:8080's", tc.Rows)
	}
	row := tc.Rows[0]
	sleep := evidence.Workload{Namespace: ns, Kind: "Pod", Name: "sleep", Pod: "sleep", ServiceAccount: "sleep", App: "sleep"}
	if row.Status != report.StatusConflict || row.AuthnPolicy == nil || *row.AuthnPolicy != (report.Setting{Name: "backend." + ns, Mode: "STRICT"}) ||
		row.DestinationRule == nil || *row.DestinationRule != (report.Setting{Name: "app." + ns, Mode: "ISTIO_MUTUAL"}) ||
		len(row.Clients) != 1 || row.Clients[0].Workload == nil || *row.Clients[0].Workload != sleep {
		t.Errorf("tls-check row %+v (authn %+v, rule %+v), want CONFLICT from backend.%s STRICT, rule app.%[4]s ISTIO_MUTUAL, client %+[5]v",
			row, row.AuthnPolicy, row.DestinationRule, ns, sleep)
	}
	var sr report.StrictReadinessReport
	get("/v1/reports/strict-readiness?destination=app:8080&since=2020-01-01T00:00:00Z", &sr)
	if sr.Ready || len(sr.Blocking) != 1 || !sr.Blocking[0].NoSidecar || !strings.Contains(sr.Reason, "will break under STRICT") ||
		sr.AuthnPolicy == nil || sr.AuthnPolicy.Mode != "STRICT" {
		t.Errorf("strict-readiness %+v (authn %+v), want sleep blocking without a sidecar under STRICT", sr, sr.AuthnPolicy)
	}
	// The Check counted under its destination's configured mode, what the
	// PlaintextToStrict alert reads.
	resp, err := http.Get("http://" + addrs[1].String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	want := `meshproof_destination_checks_total{mode="STRICT",namespace="` + ns + `",source="ext_authz",verdict="plaintext"} 1`
	if !strings.Contains(string(metrics), want+"\n") {
		t.Errorf("/metrics has no %s:\n%s", want, grepLines(string(metrics), "meshproof_destination_checks_total"))
	}
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestServeKubernetesFlagsAlone: the flags that only mean something with
// --kubernetes are refused without it, naming themselves, rather than
// ignored.
func TestServeKubernetesFlagsAlone(t *testing.T) {
	for _, flag := range [][]string{{"--kubeconfig", "/nonexistent/kubeconfig"}, {"--istio-root-namespace", "mesh-config"}} {
		dir := t.TempDir()
		o, err := parseServe(t, append([]string{"--store", "sqlite:" + filepath.Join(dir, "e.db"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, flag...)...)
		if err != nil {
			t.Fatal(err)
		}
		err = serve(context.Background(), o, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), flag[0]+" is for --kubernetes") {
			t.Errorf("serve %s without --kubernetes: %v, want it refused by name", flag[0], err)
		}
	}
}

// BenchmarkPeerMode is what serve --kubernetes adds to a Check for the
// destination's mode label: PeerMode of a workload already asked about
// (the cache) against the PeerAuthentication lookup it saves ("uncached").
// The demo's cluster: httpbin's PERMISSIVE policy, by its selector.
func BenchmarkPeerMode(b *testing.B) {
	c := demoCluster()
	src, istioSrc := c.Sources(), c.IstioSources()
	k := kubeOptions{Enabled: true, SyncTimeout: time.Minute, static: &src, staticIstio: &istioSrc}
	ix, stopPods, err := watchWorkloads(context.Background(), k, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer stopPods()
	cfg, stop, err := watchIstio(context.Background(), k, ix, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	w := &evidence.Workload{Namespace: demoNamespace, Kind: "Deployment", Name: "httpbin"}
	if m := cfg.PeerMode(w, 8000); m != "PERMISSIVE" {
		b.Fatalf("PeerMode = %q, want the demo's PERMISSIVE", m)
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cfg.PeerMode(w, 8000)
		}
	})
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cfg.PeerAuthentication(demoNamespace, w, 8000)
		}
	})
}

// runPod creates pod name in ns (service account name, the containers
// named) and marks it running at ip, as a kubelet would: no controller
// runs against the test API server. It is deleted at once when the test
// ends: nothing collects a deleted namespace's pods here, and its IP must
// not outlive the test.
func runPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, name, ip string, labels map[string]string, containers ...string) {
	t.Helper()
	spec := corev1.PodSpec{ServiceAccountName: name}
	for _, c := range containers {
		spec.Containers = append(spec.Containers, corev1.Container{Name: c, Image: "registry.example/" + c})
	}
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods(ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
