package workload

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"

	"github.com/meshproof/meshproof/evidence"
)

// Reason says why Lookup found no workload for an address; it is empty when
// it found one. Besides the constants: "host network (node NAME)" for an
// address of a node (a host-network pod's, or a node's own), "pod terminated
// (NAMESPACE/POD, PHASE)" for the last pod to hold it when that pod has
// stopped and no running pod holds it, and `invalid address "S"`.
type Reason string

// ReasonUnknown: no pod or node the index has seen holds the address.
const ReasonUnknown Reason = "unknown address"

// goneKept is how many deleted UIDs the index remembers, so that an update
// arriving after its object's delete does not bring the object back.
const goneKept = 4096

// Index maps pod IPs to workloads. It is safe for concurrent use: Lookup
// and Resolve take a read lock and allocate nothing (each pod's Workload is
// built once, when the pod or its owner changes, and shared by every
// Resolve); updates take the write lock.
//
// When two pods claim one IP (a reused IP whose old pod's end the index has
// not seen yet, or events out of order), the running pod with the newest
// resourceVersion wins. A resourceVersion is the store's revision of the
// write, so across pods it orders the writes that put each claim in
// status.podIPs: an IP is freed before it is handed out again, so the
// later claim is the true one. Creation time would not do: it is when the pod
// was created, not when it got the IP (a pod pending for an hour can get the
// IP of one created a minute ago), and it has one-second resolution. Where
// resourceVersions do not compare (not the API server's integers), the newer
// creationTimestamp and then the later update decide.
type Index struct {
	mu     sync.RWMutex
	pods   map[types.UID]*pod
	byIP   map[netip.Addr]*claims
	hosts  map[netip.Addr]*hostClaims
	owners map[types.UID]owner // ReplicaSets and Jobs
	// byOwner are the pods whose workload an owner's change renames: those
	// whose controller is that ReplicaSet or Job.
	byOwner map[types.UID][]*pod

	gone      map[types.UID]struct{}
	goneOrder []types.UID
	goneNext  int

	seq uint64
}

// pod is what the index keeps of a Pod.
type pod struct {
	// w is published to Resolve's callers: never changed once set, only
	// replaced (publish) when the pod or its owner changes.
	w       *Workload
	labels  map[string]string // the Pod's own map: never written
	owner   ownerRef
	rv      string
	created time.Time
	seq     uint64 // order of arrival, the last tie-breaker

	ips     []netip.Addr // claimed pod IPs; none for host-network pods
	hostIPs []netip.Addr // the node's addresses (and a host-network pod's own)
	node    string

	terminal bool
	ended    Reason // set when terminal
}

// claims are the pods holding one IP, the winner first.
type claims struct{ pods []*pod }

// hostClaims are the nodes an address has belonged to, the latest last,
// each with how many indexed pods name it.
type hostClaims struct{ nodes []hostClaim }

type hostClaim struct {
	node   string
	reason Reason
	pods   int
}

// owner is a ReplicaSet or Job: its kind and its own controller.
type owner struct {
	kind  string
	rv    string
	owner ownerRef
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	return &Index{
		pods:    make(map[types.UID]*pod),
		byIP:    make(map[netip.Addr]*claims),
		hosts:   make(map[netip.Addr]*hostClaims),
		owners:  make(map[types.UID]owner),
		byOwner: make(map[types.UID][]*pod),
		gone:    make(map[types.UID]struct{}),
	}
}

// Len returns how many pods the index holds, terminated ones included.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.pods)
}

// Lookup returns the workload of the pod that holds addr, or the reason there
// is none. An IPv4-mapped IPv6 address is looked up as its IPv4 address.
func (ix *Index) Lookup(addr netip.Addr) (Workload, Reason) {
	w, reason := ix.lookup(addr)
	if w == nil {
		return Workload{}, reason
	}
	return *w, ""
}

// lookup is Lookup, the workload shared.
func (ix *Index) lookup(addr netip.Addr) (*Workload, Reason) {
	addr = addr.Unmap().WithZone("")
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var ended Reason
	if c := ix.byIP[addr]; c != nil {
		p := c.pods[0]
		if !p.terminal {
			return p.w, ""
		}
		ended = p.ended
	}
	if h := ix.hosts[addr]; h != nil {
		return nil, h.nodes[len(h.nodes)-1].reason
	}
	if ended != "" {
		return nil, ended
	}
	return nil, ReasonUnknown
}

// LookupString is Lookup of an address in text, as Envoy reports it.
func (ix *Index) LookupString(s string) (Workload, Reason) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return Workload{}, Reason(fmt.Sprintf("invalid address %q", s))
	}
	return ix.Lookup(addr)
}

// publish gives p a workload naming its top owner as the index knows it
// now: at UpsertPod, and again when its ReplicaSet or Job changes, so that
// a Deployment is named as soon as its ReplicaSet is known, whichever came
// first (until then the ReplicaSet, or Job, itself is named). The workload
// is replaced, never changed: Resolve's callers hold it without a lock. An
// unchanged name keeps the one published.
func (ix *Index) publish(p *pod) {
	kind, name := p.owner.kind, p.owner.name
	switch p.owner.kind {
	case "":
		kind, name = KindPod, p.w.Pod
	case KindReplicaSet, KindJob:
		if o, ok := ix.owners[p.owner.uid]; ok && o.kind == p.owner.kind && o.owner.kind != "" {
			kind, name = o.owner.kind, o.owner.name
		}
	}
	if p.w.Kind == "" {
		// newPod's, not yet published: filled in place.
		p.w.Kind, p.w.Name = kind, name
		return
	}
	if p.w.Kind == kind && p.w.Name == name {
		return
	}
	w := *p.w
	w.Kind, w.Name = kind, name
	p.w = &w
}

// owned reports whether p's workload depends on its owner's entry in
// ix.owners, and under which key.
func owned(p *pod) (types.UID, bool) {
	switch p.owner.kind {
	case KindReplicaSet, KindJob:
		return p.owner.uid, true
	}
	return "", false
}

// republish publishes again the pods of the owner keyed key.
func (ix *Index) republish(key types.UID) {
	for _, p := range ix.byOwner[key] {
		ix.publish(p)
	}
}

// UpsertPod adds or updates a pod. An update older than the one held (by
// resourceVersion) and an update of a deleted pod are ignored. A pod without
// a UID is keyed by namespace/name.
func (ix *Index) UpsertPod(in *corev1.Pod) {
	p := newPod(in)
	key := uidOf(&in.ObjectMeta)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.gone[key]; ok {
		return
	}
	old := ix.pods[key]
	if old != nil {
		if c, err := resourceversion.CompareResourceVersion(p.rv, old.rv); err == nil && c < 0 {
			return
		}
		ix.unlink(old)
	}
	ix.seq++
	p.seq = ix.seq
	ix.publish(p)
	ix.pods[key] = p
	ix.link(p)
}

// DeletePod removes a pod and releases its IPs.
func (ix *Index) DeletePod(in *corev1.Pod) {
	key := uidOf(&in.ObjectMeta)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old := ix.pods[key]; old != nil {
		ix.unlink(old)
		delete(ix.pods, key)
	}
	ix.forget(&in.ObjectMeta)
}

// UpsertReplicaSet records whose the ReplicaSet is (a Deployment's, usually).
func (ix *Index) UpsertReplicaSet(rs *appsv1.ReplicaSet) {
	ix.upsertOwner(KindReplicaSet, &rs.ObjectMeta)
}

// DeleteReplicaSet forgets a ReplicaSet; its pods name it from then on.
func (ix *Index) DeleteReplicaSet(rs *appsv1.ReplicaSet) { ix.deleteOwner(&rs.ObjectMeta) }

// UpsertJob records whose the Job is (a CronJob's, or nobody's).
func (ix *Index) UpsertJob(j *batchv1.Job) { ix.upsertOwner(KindJob, &j.ObjectMeta) }

// DeleteJob forgets a Job; its pods name it from then on.
func (ix *Index) DeleteJob(j *batchv1.Job) { ix.deleteOwner(&j.ObjectMeta) }

func (ix *Index) upsertOwner(kind string, m *metav1.ObjectMeta) {
	o := owner{kind: kind, rv: m.ResourceVersion, owner: controllerOf(m.OwnerReferences)}
	key := uidOf(m)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.gone[key]; ok {
		return
	}
	if old, ok := ix.owners[key]; ok {
		if c, err := resourceversion.CompareResourceVersion(o.rv, old.rv); err == nil && c < 0 {
			return
		}
	}
	ix.owners[key] = o
	ix.republish(key)
}

func (ix *Index) deleteOwner(m *metav1.ObjectMeta) {
	key := uidOf(m)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	delete(ix.owners, key)
	ix.republish(key)
	ix.forget(m)
}

// forget remembers that m's object was deleted, keeping the last goneKept.
// An object without a UID is not remembered: its name may come back as a
// new object.
func (ix *Index) forget(m *metav1.ObjectMeta) {
	key := m.UID
	if key == "" {
		return
	}
	if _, ok := ix.gone[key]; ok {
		return
	}
	if len(ix.goneOrder) < goneKept {
		ix.goneOrder = append(ix.goneOrder, key)
	} else {
		delete(ix.gone, ix.goneOrder[ix.goneNext])
		ix.goneOrder[ix.goneNext] = key
		ix.goneNext = (ix.goneNext + 1) % goneKept
	}
	ix.gone[key] = struct{}{}
}

// uidOf keys an object by UID, which the API server never reuses; objects
// built without one (tests, fixtures) by namespace/name.
func uidOf(m *metav1.ObjectMeta) types.UID {
	if m.UID != "" {
		return m.UID
	}
	return types.UID(m.Namespace + "/" + m.Name)
}

// newPod reduces a Pod to what the index keeps.
func newPod(in *corev1.Pod) *pod {
	app, version := appVersion(in.Labels)
	p := &pod{
		w: &Workload{
			Namespace:      in.Namespace,
			Pod:            in.Name,
			ServiceAccount: in.Spec.ServiceAccountName,
			App:            app,
			Version:        version,
			Sidecar:        hasSidecar(&in.Spec),
		},
		labels:   in.Labels,
		owner:    controllerOf(in.OwnerReferences),
		rv:       in.ResourceVersion,
		created:  in.CreationTimestamp.Time,
		node:     in.Spec.NodeName,
		terminal: terminal(in.Status.Phase),
	}
	if p.terminal {
		p.ended = Reason(fmt.Sprintf("pod terminated (%s/%s, %s)", in.Namespace, in.Name, in.Status.Phase))
	}
	podIPs := addrs(in.Status.PodIP, in.Status.PodIPs, func(a corev1.PodIP) string { return a.IP })
	p.hostIPs = addrs(in.Status.HostIP, in.Status.HostIPs, func(a corev1.HostIP) string { return a.IP })
	if in.Spec.HostNetwork {
		// A host-network pod's IPs are its node's: they say which node,
		// never which workload.
		for _, a := range podIPs {
			if !slices.Contains(p.hostIPs, a) {
				p.hostIPs = append(p.hostIPs, a)
			}
		}
	} else {
		p.ips = podIPs
	}
	if p.node == "" {
		p.hostIPs = nil // not scheduled: no node to name
	}
	return p
}

// addrs parses the dual-stack list, or the single field when the list is
// empty (objects from before dual-stack). Unparseable entries are skipped:
// they could not match a looked-up address anyway.
func addrs[T any](single string, list []T, ip func(T) string) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	for _, e := range list {
		add(ip(e))
	}
	if len(list) == 0 && single != "" {
		add(single)
	}
	return slices.Clip(out)
}

// link adds p's claims, and p to its owner's pods.
func (ix *Index) link(p *pod) {
	if key, ok := owned(p); ok {
		ix.byOwner[key] = append(ix.byOwner[key], p)
	}
	for _, a := range p.ips {
		c := ix.byIP[a]
		if c == nil {
			c = &claims{}
			ix.byIP[a] = c
		}
		c.pods = append(c.pods, p)
		slices.SortFunc(c.pods, rank)
	}
	for _, a := range p.hostIPs {
		h := ix.hosts[a]
		if h == nil {
			h = &hostClaims{}
			ix.hosts[a] = h
		}
		i := slices.IndexFunc(h.nodes, func(c hostClaim) bool { return c.node == p.node })
		if i < 0 {
			h.nodes = append(h.nodes, hostClaim{node: p.node, reason: Reason("host network (node " + p.node + ")")})
			i = len(h.nodes) - 1
		}
		h.nodes[i].pods++
	}
}

// unlink removes p's claims, and p from its owner's pods.
func (ix *Index) unlink(p *pod) {
	if key, ok := owned(p); ok {
		ps := slices.DeleteFunc(ix.byOwner[key], func(q *pod) bool { return q == p })
		if len(ps) == 0 {
			delete(ix.byOwner, key)
		} else {
			ix.byOwner[key] = ps
		}
	}
	for _, a := range p.ips {
		c := ix.byIP[a]
		if c == nil {
			continue
		}
		c.pods = slices.DeleteFunc(c.pods, func(q *pod) bool { return q == p })
		if len(c.pods) == 0 {
			delete(ix.byIP, a)
		}
	}
	for _, a := range p.hostIPs {
		h := ix.hosts[a]
		if h == nil {
			continue
		}
		i := slices.IndexFunc(h.nodes, func(c hostClaim) bool { return c.node == p.node })
		if i < 0 {
			continue
		}
		if h.nodes[i].pods--; h.nodes[i].pods == 0 {
			h.nodes = slices.Delete(h.nodes, i, i+1)
		}
		if len(h.nodes) == 0 {
			delete(ix.hosts, a)
		}
	}
}

// rank orders claims on one IP, the winner first: a running pod before a
// terminated one, then the newer resourceVersion, then (when those do not
// compare) the newer creationTimestamp, then the later update.
func rank(a, b *pod) int {
	if a.terminal != b.terminal {
		if a.terminal {
			return 1
		}
		return -1
	}
	if c, err := resourceversion.CompareResourceVersion(a.rv, b.rv); err == nil && c != 0 {
		return -c
	}
	if c := b.created.Compare(a.created); c != 0 {
		return c
	}
	return cmp.Compare(b.seq, a.seq)
}

// Resolve is LookupString for a Check's record (authz.Workloads): the
// workload, or nil and the reason. The workload is the pod's, shared by
// every Resolve of its addresses and never changed: read it, do not write
// it. It is not copied, so a Check allocates nothing for it.
func (ix *Index) Resolve(addr string) (*Workload, string) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Sprintf("invalid address %q", addr)
	}
	w, reason := ix.lookup(a)
	return w, string(reason)
}

// CheckIdentity is the package's CheckIdentity for w, the workload address
// resolved to (authz.Workloads), and when they differ the reason also says
// which it most likely is (whichMismatch).
func (ix *Index) CheckIdentity(address string, w *Workload, namespace, serviceAccount string) (bool, string) {
	ok, reason := CheckIdentity(*w, namespace, serviceAccount)
	if ok {
		return true, ""
	}
	return false, reason + "; " + ix.whichMismatch(address, w, namespace, serviceAccount, time.Now())
}

// recentClaim is how recently a pod must have been created for a mismatch
// at its address to read as the address changing hands: an open connection
// of the pod that held it before, rather than a borrowed identity.
const recentClaim = 2 * time.Minute

// whichMismatch says which a SPIFFE identity that is not the pod's most
// likely is, as the index sees address now: stale address data when another
// pod that claims or claimed the address (terminated, or losing the claim)
// runs as that identity, or when the pod holding it was created within
// recentClaim; else a workload presenting another's identity.
func (ix *Index) whichMismatch(address string, w *Workload, namespace, serviceAccount string, now time.Time) string {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return evidence.MismatchEither
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	c := ix.byIP[a.Unmap().WithZone("")]
	if c == nil {
		return evidence.MismatchEither
	}
	for _, p := range c.pods[1:] {
		if p.w.Namespace == namespace && p.w.ServiceAccount == serviceAccount {
			return fmt.Sprintf("%s: pod %s/%s, which runs as that identity, held %s too", evidence.MismatchStaleAddress, p.w.Namespace, p.w.Pod, a)
		}
	}
	if holder := c.pods[0]; holder.w == w && now.Sub(holder.created) < recentClaim {
		return fmt.Sprintf("%s, likely: pod %s/%s, created %s ago, holds %s now", evidence.MismatchStaleAddress, w.Namespace, w.Pod, now.Sub(holder.created).Round(time.Second), a)
	}
	return fmt.Sprintf("%s: pod %s/%s holds %s", evidence.MismatchBorrowedIdentity, w.Namespace, w.Pod, a)
}
