// Package istio computes the mTLS mode a cluster is configured for, to put
// beside the traffic meshproof observes: the server side from
// PeerAuthentication (istioctl's old AUTHN POLICY column) and the client side
// from DestinationRule (its DESTINATION RULE column). The decisions are pure
// functions over the typed Istio objects; Watch keeps a Config of them
// current from the cluster through informers of those two kinds alone
// (REST clients of their two API groups, no clientset), rebuilt on every
// change and read without a lock. Reports live elsewhere.
//
// PeerAuthentication, as Istio composes it for a sidecar
// (pilot's ComposePeerAuthentication; the PeerAuthentication reference and
// the security concepts page):
//   - three levels, narrowest first: workload (a selector with at least one
//     label, in the workload's namespace), namespace (no selector, or one with
//     no labels, in the workload's namespace), mesh (no selector, in the root
//     namespace);
//   - a selector policy in the root namespace is ignored, for every workload,
//     the root namespace's own included;
//   - several candidates at one level: the oldest wins, then the lowest name
//     (Istio sorts by creation time, name, namespace);
//   - mode UNSET, or no mtls at all, inherits from the next level up; nothing
//     set anywhere is PERMISSIVE;
//   - portLevelMtls counts only in the chosen workload-level policy and is
//     keyed by the workload's (container) port; an UNSET port inherits the
//     workload's resolved mode.
//
// Not modelled: ambient mode (ztunnel ignores DISABLE), the mesh config's own
// mTLS settings, and the retired v1alpha1 Policy/MeshPolicy.
//
// DestinationRule, as Istio looks one up for a client sidecar (pilot's
// PushContext.destinationRule):
//   - a rule's host is resolved relative to its namespace: a name with no dot
//     becomes name.<rule ns>.svc.cluster.local; "*", IP addresses and any
//     name with a dot are taken as written;
//   - exportTo: absent or "*" is every namespace (the mesh config's default,
//     assumed "*"), "." the rule's own namespace, other entries namespaces by
//     name; "~" (or any list naming no real namespace) hides it everywhere;
//   - the client's namespace first (its rules visible to itself; for a client
//     in the root namespace, only the root namespace's private rules), then
//     the service's namespace, then the root namespace, each only through
//     rules exported to the client;
//   - within one namespace the most specific host wins (exact, then the
//     longest wildcard); when that host's rules are all hidden from the
//     client, the search moves to the next namespace, not to a less specific
//     host (as Istio does);
//   - several rules for one host in one namespace are merged by Istio: the
//     oldest rule that has a trafficPolicy supplies it (all the rules the
//     client can see are merged here; pilot may keep rules with different
//     exportTo lists apart);
//   - portLevelSettings for the service port replace the rule's tls when
//     they carry one; one without tls leaves the rule's tls in force, as
//     pilot's MergeTrafficPolicy does (the reference says port-level
//     settings inherit nothing; for tls the code says otherwise).
//
// Not modelled: subsets (and their traffic policies), rules with a
// workloadSelector (skipped), DestinationRule inheritance
// (PILOT_ENABLE_DESTINATION_RULE_INHERITANCE), a cluster domain other than
// cluster.local, a mesh default exportTo other than "*", and the auto mTLS
// outcome itself: with no TLS configured the decision says so with an empty
// Mode, and whether the client then sends mTLS depends on the server.
package istio
