package report

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshproof/meshproof/evidence"
)

// StrictReadinessReport answers "can this destination's PeerAuthentication
// go to STRICT without breaking a client?".
type StrictReadinessReport struct {
	Destination string    `json:"destination"`
	Since       time.Time `json:"since,omitzero"`
	Until       time.Time `json:"until"`
	// Ready is true only when traffic was seen and every request was mTLS.
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
	// Hosts are the destination hosts the answer covers: the destination
	// itself, or the hosts a destination principal served.
	Hosts    []string         `json:"hosts"`
	Total    int64            `json:"total"`
	Counts   Counts           `json:"counts"`
	Blocking []BlockingClient `json:"blocking"`
	// AuthnPolicy is the PeerAuthentication mode the destination is
	// configured for (see TLSCheckRow); only with a Configuration.
	AuthnPolicy *Setting `json:"authn_policy,omitempty"`
}

// BlockingClient is a client that sent the destination requests STRICT
// would refuse (plaintext, TLS without a client certificate) or that are
// suspect (mtls_mismatch, xfcc_unverified). Count is how many, FirstSeen,
// LastSeen and ExampleID are theirs ("has it stopped?"); Counts, Total,
// Allowed and Denied are all of the client's requests to the destination.
type BlockingClient struct {
	Client
	Count int64 `json:"count"`
	// NoSidecar: the client's workload runs without Istio's proxy, so it
	// cannot send mTLS at all and will break under STRICT (a DestinationRule
	// will not help). Only with a Configuration and a resolved workload.
	NoSidecar bool `json:"no_sidecar,omitempty"`
}

// ErrNoDestination is returned when StrictReadiness is asked about no
// destination.
var ErrNoDestination = errors.New("report: strict readiness needs a destination (host:port or principal)")

// StrictReadiness reports whether every request to destination (a host as
// in :authority, or a destination principal) in [since, until) was mTLS,
// and lists the clients that were not, most requests first. A destination
// principal is widened to the hosts it served, because plaintext requests
// carry no destination principal. With cfg (nil for none) each blocking
// client is named by its workload, those without a sidecar are said to
// break under STRICT, and the destination's configured mode is given.
func StrictReadiness(ctx context.Context, r evidence.Reader, destination string, since, until time.Time, cfg Configuration) (StrictReadinessReport, error) {
	if destination == "" {
		return StrictReadinessReport{}, ErrNoDestination
	}
	since, until = window(since, until)
	groups, hosts, err := traffic(ctx, r, since, until, destination)
	if err != nil {
		return StrictReadinessReport{}, err
	}
	j := judgeGroups(groups)
	rep := StrictReadinessReport{Destination: destination, Since: since, Until: until, Hosts: hosts, Counts: j.counts,
		Total: j.total, Blocking: j.blocking}
	if rep.Hosts == nil {
		rep.Hosts = []string{}
	}
	rep.Ready = rep.Total > 0 && len(rep.Blocking) == 0
	rep.Reason = reason(rep, j.clients)
	if cfg != nil {
		if err := configureReadiness(ctx, &examples{r: r}, cfg, &rep); err != nil {
			return StrictReadinessReport{}, err
		}
	}
	return rep, nil
}

// reason says in one sentence why rep is ready or not.
func reason(rep StrictReadinessReport, clientCount int) string {
	if rep.Total == 0 {
		return fmt.Sprintf("no traffic to %s since %s: nothing shows that STRICT would break no client, nor that it would", rep.Destination, rep.Since.Format(time.RFC3339))
	}
	if len(rep.Blocking) == 0 {
		return fmt.Sprintf("every request was mTLS: %s from %s since %s",
			plural(int(min(rep.Total, 1<<31)), "request", "requests"), plural(clientCount, "client", "clients"), rep.Since.Format(time.RFC3339))
	}
	var plain, susp int
	tlsOnly, bare := false, false
	for _, b := range rep.Blocking {
		if b.Counts[evidence.Plaintext]+b.Counts[evidence.TLSServerOnly] > 0 {
			plain++
			tlsOnly = tlsOnly || b.Counts[evidence.TLSServerOnly] > 0
			bare = bare || b.Counts[evidence.Plaintext] > 0
		}
		if b.Counts[evidence.MTLSMismatch]+b.Counts[evidence.XFCCUnverified] > 0 {
			susp++
		}
	}
	var parts []string
	if plain > 0 {
		what := "plaintext"
		switch {
		case tlsOnly && bare:
			what = "plaintext or TLS without a client certificate"
		case tlsOnly:
			what = "TLS without a client certificate"
		}
		verb := " still send "
		if plain == 1 {
			verb = " still sends "
		}
		parts = append(parts, plural(plain, "client", "clients")+verb+what)
	}
	if susp > 0 {
		parts = append(parts, plural(susp, "client", "clients")+" sent suspect requests (mtls_mismatch or xfcc_unverified)")
	}
	return strings.Join(parts, ", and ")
}
