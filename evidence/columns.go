package evidence

import "time"

// Columns are the values stores index a record by, derived from it the same
// way by every backend (and by Verify's check that the columns still match
// the record).
type Columns struct {
	TimeNS                                    int64
	ID                                        string
	Replica                                   string
	Seq                                       int64
	SourcePrincipal                           string
	DestinationPrincipal                      string
	SourceTrustDomain, DestinationTrustDomain string
	SourceNamespace, DestinationNamespace     string
	// SourceKey is the source identity for reports: the principal, or the
	// address when there is none.
	SourceKey string
	Verdict   string
	Allowed   bool
	Method    string
	Host      string
	Path      string
	RequestID string
}

// ColumnsOf derives a record's index columns.
func ColumnsOf(r *Record) Columns {
	c := Columns{
		TimeNS: Nanos(r.Time), ID: r.ID, Replica: r.Replica, Seq: int64(r.Chain.Seq),
		SourcePrincipal: r.Source.Principal, DestinationPrincipal: r.Destination.Principal,
		SourceKey: SourceKey(r),
		Verdict:   string(r.Verdict), Allowed: r.Decision.Allowed,
		Method: r.Request.Method, Host: r.Request.Host, Path: r.Request.Path, RequestID: r.RequestID,
	}
	if s := r.Source.SPIFFE; s != nil {
		c.SourceTrustDomain, c.SourceNamespace = s.TrustDomain, s.Namespace
	}
	if s := r.Destination.SPIFFE; s != nil {
		c.DestinationTrustDomain, c.DestinationNamespace = s.TrustDomain, s.Namespace
	}
	return c
}

// SourceKey is who sent the request, for reports: the source principal, or
// its address when the connection carried no identity.
func SourceKey(r *Record) string {
	if r.Source.Principal != "" {
		return r.Source.Principal
	}
	return r.Source.Address
}

// RollupKey is the per-minute rollup a record counts in.
type RollupKey struct {
	Minute               int64 // Unix minutes
	Replica              string
	Source               string // SourceKey
	DestinationHost      string
	DestinationPrincipal string
	Verdict              string
	Allowed              bool
}

// RollupOf is the rollup key of a record.
func RollupOf(r *Record) RollupKey {
	return RollupKey{
		Minute: minuteOf(r.Time), Replica: r.Replica, Source: SourceKey(r),
		DestinationHost: r.Request.Host, DestinationPrincipal: r.Destination.Principal,
		Verdict: string(r.Verdict), Allowed: r.Decision.Allowed,
	}
}

// RollupDeltas calls fn with each rollup key r's arrival changes, and by
// how much, so that the rollups count each request once, with its
// effective outcome: a record adds one to RollupOf(r); an amendment that
// changes the amended record's decision.allowed adds one to its own key and
// takes one from the amended record's (the same minute, edge and verdict:
// the amendment carries them); an amendment that does not change it counts
// nothing. The amendment has its amended record's time, so both deltas land
// in the same minute and no range of whole minutes sees a negative count.
func RollupDeltas(r *Record, fn func(k RollupKey, delta int64)) {
	k := RollupOf(r)
	if r.Amends == nil {
		fn(k, 1)
		return
	}
	if r.Amends.Allowed == k.Allowed {
		return
	}
	fn(k, 1)
	k.Allowed = r.Amends.Allowed
	fn(k, -1)
}

// MinuteTime is the start of a rollup minute, for a minute an int64
// nanosecond time can fall in (a stored minute beyond is read as the
// nearest such).
func MinuteTime(minute int64) time.Time {
	return time.Unix(min(max(minute, minMinute), maxMinute)*60, 0).UTC()
}
