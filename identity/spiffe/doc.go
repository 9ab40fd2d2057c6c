// Package spiffe parses SPIFFE IDs and matches them against ID prefixes.
//
// [Parse] checks the grammar of the SPIFFE standard with go-spiffe's
// spiffeid package and adds what that package leaves out: the 2048-byte limit
// on a whole ID and the 255-byte limit on its trust domain. For Istio-style
// IDs, spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, it also
// returns the namespace and service account.
//
// [HasPrefix] decides whether an ID lies at or below a configured prefix on a
// path-segment boundary, the way a policy such as "anything under
// spiffe://cluster.local/ns/prod" means it.
package spiffe
