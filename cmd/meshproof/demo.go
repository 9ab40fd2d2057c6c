package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	networkingapiv1 "istio.io/api/networking/v1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshproof/meshproof/api/client"
	"github.com/meshproof/meshproof/cluster/workload"
	"github.com/meshproof/meshproof/evidence"
	"github.com/meshproof/meshproof/internal/meshsim"
)

const demoDoc = `Run meshproof with a simulated Istio mesh sending it traffic, to see real evidence
within seconds without a mesh: an embedded serve (policy builtin:deny-suspect,
loopback ports, a temporary SQLite store) and, on loopback, namespace mtls-pg:
httpbin behind a PERMISSIVE sidecar that calls meshproof's ext_authz, sleep over
mTLS, a legacy client in plaintext, now and then a forged x-forwarded-client-cert
header (denied) and a curl with a client certificate but no Istio ALPN (its TLS
handshake fails on the plaintext chain, so meshproof never sees it: curl's exit code
35). A simulated cluster stands behind the loopback addresses (pods, ReplicaSets and
Deployments, read through serve --kubernetes's informers), so every record names its
peers' workloads. It prints the page's URL and commands to try, writes the certificate
its curl uses with the commands that repeat that call by hand, and runs until
interrupted.`

// demoOptions is the command line of `meshproof demo`.
type demoOptions struct {
	store              string
	grpcAddr, httpAddr string
	interval           time.Duration
	log                logOptions
}

// demoCommand is `meshproof demo`.
func demoCommand(stdout, stderr io.Writer) *cobra.Command {
	d := demoOptions{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", interval: 200 * time.Millisecond, log: defaultLogOptions()}
	d.log.Level = "warn"
	cmd := leaf("demo", "run serve with a simulated Istio mesh sending it traffic, to see evidence at once", demoDoc,
		func(cmd *cobra.Command) error { return d.run(cmd.Context(), stdout, stderr) })
	fs := cmd.Flags()
	fs.StringVar(&d.store, "store", d.store, "evidence store (sqlite:PATH or postgres://...); a temporary SQLite file, removed on exit, when unset")
	fs.StringVar(&d.grpcAddr, "grpc-addr", d.grpcAddr, "ext_authz gRPC listener (port 0: one the OS picks)")
	fs.StringVar(&d.httpAddr, "http-addr", d.httpAddr, "HTTP listener of the API and the page (port 0: one the OS picks)")
	fs.DurationVar(&d.interval, "interval", d.interval, "how often sleep sends a request; the others follow its pace")
	logFlags(fs, &d.log)
	return cmd
}

func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return execute(ctx, demoCommand(stdout, stderr), args)
}

func (d demoOptions) run(ctx context.Context, stdout, stderr io.Writer) error {
	if d.interval <= 0 {
		return usageError{errors.New("--interval must be positive")}
	}
	podAddrs := loopbackDemoAddrs()
	var cluster *demoClusterObjects
	if podAddrs.distinct() {
		cluster = demoClusterAt(podAddrs)
	}
	o, cleanup, err := d.serveOptions(cluster)
	if err != nil {
		return err
	}
	defer cleanup()
	log, err := o.Log.logger(stderr)
	if err != nil {
		return usageError{err}
	}

	type addrs struct{ grpc, http net.Addr }
	bound := make(chan addrs, 1)
	o.onListen = func(g, h net.Addr) { bound <- addrs{g, h} }
	// serve stops after the mesh, so that no request of the demo sees it go.
	serveCtx, stopServe := context.WithCancel(context.Background())
	defer stopServe()
	served := make(chan error, 1)
	go func() { served <- serve(serveCtx, o, log) }()
	var a addrs
	select {
	case a = <-bound:
	case err := <-served:
		return err
	case <-ctx.Done():
		stopServe()
		return <-served
	}

	cfg := meshsim.DefaultConfig()
	cfg.AuthzAddr = a.grpc.String()
	if cluster != nil {
		cfg.Addr = net.JoinHostPort(podAddrs.httpbin, "0") // httpbin's pod
	}
	// Envoy's 200 ms would do; the demo shares the machine with whatever
	// else runs there.
	cfg.Timeout = time.Second
	var stats trafficStats
	cfg.AccessLog = stats.record
	m, err := meshsim.Start(ctx, cfg)
	if err != nil {
		stopServe()
		return errors.Join(err, <-served)
	}
	tlsDir, err := writeDemoTLS(m)
	if err != nil {
		m.Close()
		stopServe()
		return errors.Join(err, <-served)
	}
	defer os.RemoveAll(tlsDir)
	server := "http://" + a.http.String()
	printDemoBanner(stdout, server, a.grpc.String(), o.Evidence.Store, d.store == "", m, d.interval, cluster != nil)
	printDemoByHand(stdout, server, tlsDir, m)
	api, err := client.New(server, client.Options{Timeout: 5 * time.Second})
	if err != nil {
		m.Close()
		stopServe()
		return errors.Join(err, <-served)
	}
	generate(ctx, m, d.interval, &stats, api, stdout)

	merr := m.Close()
	stopServe()
	serr := <-served
	fmt.Fprintf(stdout, "\nStopped. %s\n", stats.summary(m.Sidecar.Stats()))
	return errors.Join(merr, serr)
}

// serveOptions are the embedded serve's options, with cluster (when not
// nil) as what --kubernetes watches; cleanup removes the temporary store.
func (d demoOptions) serveOptions(cluster *demoClusterObjects) (serveOptions, func(), error) {
	o := defaultServeOptions()
	o.GRPC.Addr, o.HTTP.Addr = d.grpcAddr, d.httpAddr
	o.Policy.Policies = []string{"builtin:deny-suspect"}
	o.Policy.Decision = "envoy/authz/decision" // the object decision: denials say why
	o.Authz.Replica = "demo"
	o.Log = d.log
	o.Grace = 5 * time.Second
	if cluster != nil {
		src := cluster.Sources()
		o.Kube.Enabled, o.Kube.static = true, &src
	}
	cleanup := func() {}
	o.Evidence.Store = d.store
	if d.store == "" {
		dir, err := os.MkdirTemp("", "meshproof-demo-")
		if err != nil {
			return o, cleanup, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		o.Evidence.Store = "sqlite:" + filepath.Join(dir, "evidence.db")
	}
	if err := o.validate(); err != nil {
		cleanup()
		return o, func() {}, usageError{err}
	}
	return o, cleanup, nil
}

func printDemoBanner(w io.Writer, server, grpcAddr, store string, temporary bool, m *meshsim.Mesh, interval time.Duration, cluster bool) {
	kept := ""
	if temporary {
		kept = " (removed on exit; --store keeps one)"
	}
	workloads := `Deployments httpbin and sleep (mtls-pg, with Istio's sidecar) and legacy
                (namespace legacy, no sidecar), pods curl (mtls-pg) and forger (legacy), at the
                clients' addresses, read through serve --kubernetes's informers: each record
                names its peers' workloads`
	if !cluster {
		workloads = "none: this host cannot bind 127.0.0.n, so no address names a pod"
	}
	fmt.Fprintf(w, `meshproof demo: a simulated Istio namespace mtls-pg sends traffic through meshproof.

  meshproof     ext_authz gRPC %s, policy builtin:deny-suspect
  evidence      %s%s
  cluster       %s
  httpbin       %s, its sidecar at %s (%s, %s)
  clients       sleep     mTLS as %s, every %s
                legacy    plaintext from %s, every %s
                forger    plaintext from %s with a forged XFCC claiming %s (denied), every %s
                curl      TLS with a client certificate but no Istio ALPN, every %s: its handshake fails
                          (curl's exit code 35)

The page:  %s/ui/

Try:
  meshproof query --server %s --mtls=false
  meshproof query --server %s --verdict xfcc_unverified --output json
  meshproof report tls-check --server %s
  meshproof report strict-readiness --server %s --destination %s

`,
		grpcAddr, store, kept, workloads,
		meshsim.Host, m.Sidecar.Addr(), m.Sidecar.Mode(), m.Sidecar.ForwardClientCert(),
		meshsim.SleepID, interval, m.Legacy.LocalIP(), interval*legacyEvery, m.Forger.LocalIP(), meshsim.ForgedID, interval*oddEvery, interval*oddEvery,
		server, server, server, server, server, meshsim.Host)
}

// The files writeDemoTLS writes: the curl client's certificate and key,
// and the mesh's root certificate.
const (
	demoCertFile = "curl-cert.pem"
	demoKeyFile  = "curl-key.pem"
	demoRootFile = "root-cert.pem"
)

// writeDemoTLS writes the curl client's certificate and key (0600) and the
// mesh's root into a new directory (0700), so that the reader can repeat
// its call by hand; the caller removes it.
func writeDemoTLS(m *meshsim.Mesh) (string, error) {
	dir, err := os.MkdirTemp("", "meshproof-demo-tls-")
	if err != nil {
		return "", err
	}
	id := m.Curl.Identity()
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{demoCertFile, id.CertPEM, 0o644},
		{demoKeyFile, id.KeyPEM, 0o600},
		{demoRootFile, m.CA.PEM, 0o644},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("demo: writing the client certificate for curl: %w", err)
		}
	}
	return dir, nil
}

// printDemoByHand tells what the demo's curl meets and how to repeat it:
// the seed's reader saw curl's exit code 35 from a port that takes mTLS
// and took it for mTLS being off.
func printDemoByHand(w io.Writer, server, dir string, m *meshsim.Mesh) {
	file := func(name string) string { return shellQuote(filepath.Join(dir, name)) }
	sidecar := m.Sidecar.Addr()
	fmt.Fprintf(w, `
By hand: the files curl uses are in %s (removed on exit):
its certificate (%s), its key and the mesh's root.
curl's call, as the demo's curl makes it:
  curl -k --cert %s --key %s -H 'Host: %s' https://%s/headers; echo "exit $?"
ends with exit code 35, with a client certificate or without: httpbin's sidecar is
PERMISSIVE and takes a TLS client to its mTLS chain only when it offers an Istio ALPN
(istio-http/1.1, istio, ...), which curl cannot; its ClientHello lands on the plaintext
chain and the handshake fails. mTLS is not off: that is PERMISSIVE at work (under STRICT
the same curl gets through). Offering the ALPN, the same certificate gets through over
mTLS and is recorded (httpbin echoes the headers it got: X-Meshproof-Evidence-Id is
the record's id, for meshproof query --server %s --id ID):
  printf 'GET /headers HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' | openssl s_client -quiet -connect %s -alpn istio-http/1.1 -cert %s -key %s -CAfile %s

Ctrl-C stops the demo.
`,
		shellQuote(dir), meshsim.CurlID,
		file(demoCertFile), file(demoKeyFile), meshsim.Host, sidecar,
		server,
		meshsim.Host, sidecar, file(demoCertFile), file(demoKeyFile), file(demoRootFile))
}

// The traffic's pace, in sleep's ticks: legacy every fifth, the forger and
// curl every 25th (the first ones early, so that a newcomer sees them).
const (
	legacyEvery  = 5
	oddEvery     = 25
	statusPeriod = 10 * time.Second
)

// generate sends the demo's traffic, one request at a time, until ctx is
// done, and prints a status line every statusPeriod.
func generate(ctx context.Context, m *meshsim.Mesh, interval time.Duration, stats *trafficStats, api *client.Client, w io.Writer) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	status := time.NewTicker(statusPeriod)
	defer status.Stop()
	paths := []string{"/headers", "/get?show_env=1", "/status/200"}
	for n := 0; ; n++ {
		stats.send(ctx, m.Sleep, paths[n%len(paths)])
		if n%legacyEvery == 1 {
			stats.send(ctx, m.Legacy, "/get")
		}
		if n%oddEvery == 3 {
			// The forged header reaches meshproof only through a sidecar
			// that passes a client's XFCC on (ALWAYS_FORWARD_ONLY, a
			// misconfiguration): httpbin's has it for this one request,
			// and no other is in flight.
			m.Sidecar.SetForwardClientCert(meshsim.AlwaysForwardOnly)
			stats.send(ctx, m.Forger, "/headers")
			m.Sidecar.SetForwardClientCert(meshsim.AppendForward)
		}
		if n%oddEvery == 4 {
			stats.send(ctx, m.Curl, "/headers")
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				waiting = false
			case <-status.C:
				fmt.Fprintf(w, "%s  %s\n", time.Now().UTC().Format(time.RFC3339), stats.status(ctx, api, m.Sidecar.Stats()))
			}
		}
	}
}

// trafficStats count what the demo's clients got.
type trafficStats struct {
	mu                        sync.Mutex
	allowed, denied, failures int
	lastFailure               string
}

// record is the sidecar's access log.
func (s *trafficStats) record(e meshsim.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Allowed {
		s.allowed++
	} else {
		s.denied++
	}
}

// send sends one request; a failed handshake is what curl is for, any
// other failure is counted.
func (s *trafficStats) send(ctx context.Context, c *meshsim.Client, path string) {
	_, err := c.Get(ctx, path)
	var he *meshsim.HandshakeError
	if err == nil || ctx.Err() != nil || c.Transport() == meshsim.TLSWithoutIstioALPN && errors.As(err, &he) {
		return
	}
	s.mu.Lock()
	s.failures++
	s.lastFailure = err.Error()
	s.mu.Unlock()
}

func (s *trafficStats) summary(st meshsim.Stats) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := fmt.Sprintf("requests: %d allowed, %d denied; curl's handshake failed %d times (no Istio ALPN)", s.allowed, s.denied, st.TLSOnPlaintext)
	if s.failures > 0 {
		line += fmt.Sprintf("; %d other failures, the last: %s", s.failures, s.lastFailure)
	}
	return line
}

// status is the summary and what meshproof's API says it recorded.
func (s *trafficStats) status(ctx context.Context, api *client.Client, st meshsim.Stats) string {
	line := s.summary(st)
	es, err := api.Stats(ctx, "1h")
	if err != nil {
		return line + "; evidence: " + err.Error()
	}
	var parts []string
	for _, v := range evidence.Verdicts {
		if n := es.ByVerdict[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", v, n))
		}
	}
	return fmt.Sprintf("%s; meshproof recorded %d (%s)", line, es.Records, strings.Join(parts, ", "))
}

// demoAddrs are the loopback addresses of the demo's pods: httpbin's
// sidecar listens on its own (not 127.0.0.1, where a curl typed by hand comes
// from, outside the cluster), and each client sends from the one meshsim
// gives it (Start's LoopbackIP numbers).
type demoAddrs struct{ httpbin, sleep, legacy, curl, forger string }

func loopbackDemoAddrs() demoAddrs {
	return demoAddrs{
		httpbin: meshsim.LoopbackIP(10),
		sleep:   meshsim.LoopbackIP(11),
		legacy:  meshsim.LoopbackIP(12),
		curl:    meshsim.LoopbackIP(13),
		forger:  meshsim.LoopbackIP(66),
	}
}

// distinct reports whether every pod has an address of its own: where the
// host cannot bind 127.0.0.n, all are 127.0.0.1 and no address names a pod.
func (a demoAddrs) distinct() bool {
	all := []string{a.httpbin, a.sleep, a.legacy, a.curl, a.forger}
	for i, x := range all {
		if x == "127.0.0.1" || slices.Contains(all[i+1:], x) {
			return false
		}
	}
	return true
}

// demoClusterObjects are the cluster the demo's mesh stands for, as the API
// server would list it: what workload.Watch reads (Pods, ReplicaSets; no
// Jobs), the Deployments those ReplicaSets belong to, and the Istio
// configuration of the seed story (PERMISSIVE PeerAuthentication
// httpbin.mtls-pg, DestinationRule ISTIO_MUTUAL), for an Istio watch to read
// through workload.StaticSource as the pods are.
type demoClusterObjects struct {
	Pods                corev1.PodList
	ReplicaSets         appsv1.ReplicaSetList
	Jobs                batchv1.JobList
	Deployments         appsv1.DeploymentList
	PeerAuthentications securityv1.PeerAuthenticationList
	DestinationRules    networkingv1.DestinationRuleList
}

// The namespaces of the demo's story: httpbin and sleep (whose SPIFFE
// identities say mtls-pg) in mtls-pg, with curl's pod; the legacy client and
// the forger, which have no sidecar, in legacy.
const (
	demoNamespace       = "mtls-pg"
	demoLegacyNamespace = "legacy"
)

// Sources feed workload.Watch from the objects, which never change.
func (c *demoClusterObjects) Sources() workload.Sources {
	return workload.Sources{
		Pods:        workload.StaticSource(&c.Pods),
		ReplicaSets: workload.StaticSource(&c.ReplicaSets),
		Jobs:        workload.StaticSource(&c.Jobs),
	}
}

// demoCluster is the demo's cluster at the addresses meshsim uses.
func demoCluster() *demoClusterObjects { return demoClusterAt(loopbackDemoAddrs()) }

// demoClusterAt builds the demo's cluster with its pods at a: Deployments
// httpbin (service account default, as ServerID says) and sleep in mtls-pg
// with Istio's sidecar, legacy in legacy without one; bare pods curl
// (mtls-pg) and forger (legacy), neither with a sidecar. Each Deployment has
// the ReplicaSet and the one running pod its controller and a kubelet would
// have made; UIDs and resourceVersions are fixed, as an API server would
// have given them.
func demoClusterAt(a demoAddrs) *demoClusterObjects {
	c := &demoClusterObjects{}
	created := metav1.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	controller := true
	meta := func(ns, name, uid string, labels map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), ResourceVersion: "1", CreationTimestamp: created, Labels: labels}
	}
	pod := func(ns, name, sa, ip string, labels map[string]string, sidecar bool, owner *metav1.OwnerReference) {
		image := "docker.io/curlimages/curl:8.10.1"
		if labels["app"] == "httpbin" {
			image = "docker.io/kong/httpbin:0.2.3"
		}
		containers := []corev1.Container{{Name: labels["app"], Image: image}}
		if sidecar {
			containers = append(containers, corev1.Container{Name: workload.ProxyContainer, Image: "docker.io/istio/proxyv2:1.28.0"})
		}
		p := corev1.Pod{
			ObjectMeta: meta(ns, name, "demo-pod-"+name, labels),
			Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: "demo-node", Containers: containers},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
				HostIP: "192.0.2.1", HostIPs: []corev1.HostIP{{IP: "192.0.2.1"}}}, // TEST-NET-1: no loopback address
		}
		if owner != nil {
			p.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		c.Pods.Items = append(c.Pods.Items, p)
	}
	deployment := func(ns, app, sa, hash, suffix, ip string, sidecar bool) {
		labels := map[string]string{"app": app, "version": "v1"}
		d := appsv1.Deployment{
			ObjectMeta: meta(ns, app, "demo-deployment-"+app, labels),
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}},
			},
		}
		rsLabels := map[string]string{"app": app, "version": "v1", "pod-template-hash": hash}
		rs := appsv1.ReplicaSet{
			ObjectMeta: meta(ns, app+"-"+hash, "demo-replicaset-"+app, rsLabels),
			Spec:       appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: rsLabels}},
		}
		rs.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: &controller}}
		c.Deployments.Items = append(c.Deployments.Items, d)
		c.ReplicaSets.Items = append(c.ReplicaSets.Items, rs)
		pod(ns, rs.Name+"-"+suffix, sa, ip, rsLabels, sidecar,
			&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &controller})
	}
	deployment(demoNamespace, "httpbin", "default", "5b8c7d9f4", "k2x7q", a.httpbin, true)
	deployment(demoNamespace, "sleep", "sleep", "6f8d5c9b7", "w4n2m", a.sleep, true)
	deployment(demoLegacyNamespace, "legacy", "legacy", "7c9d4b8f6", "p9r3t", a.legacy, false)
	pod(demoNamespace, "curl", "curl", a.curl, map[string]string{"app": "curl"}, false, nil)
	pod(demoLegacyNamespace, "forger", "default", a.forger, map[string]string{"app": "forger"}, false, nil)

	c.PeerAuthentications.Items = []*securityv1.PeerAuthentication{{
		ObjectMeta: meta(demoNamespace, "httpbin", "demo-peerauthentication-httpbin", nil),
		Spec: securityv1beta1.PeerAuthentication{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "httpbin"}},
			Mtls:     &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE},
		},
	}}
	c.DestinationRules.Items = []*networkingv1.DestinationRule{{
		ObjectMeta: meta(demoNamespace, "httpbin", "demo-destinationrule-httpbin", nil),
		Spec: networkingapiv1.DestinationRule{
			Host: "httpbin.mtls-pg.svc.cluster.local",
			TrafficPolicy: &networkingapiv1.TrafficPolicy{
				Tls: &networkingapiv1.ClientTLSSettings{Mode: networkingapiv1.ClientTLSSettings_ISTIO_MUTUAL},
			},
		},
	}}
	return c
}
