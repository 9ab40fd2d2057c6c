package api

import (
	"context"
	"net/http"
	"time"

	"github.com/meshproof/meshproof/api/params"
	"github.com/meshproof/meshproof/evidence/report"
)

// Default windows, as openapi.json documents them.
const (
	day              = 24 * time.Hour
	tlsCheckWindow   = day
	readinessWindow  = 7 * day
	statsWindow      = day
	timeseriesWindow = day
)

func (s *Server) tlsCheck(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), tlsCheckParams)
	if err != nil {
		return err
	}
	rq := report.Query{Destination: q.get("destination"), Namespace: q.get("namespace"), Config: s.cfg.Istio}
	if rq.Since, err = q.timeParam("since", tlsCheckWindow); err != nil {
		return err
	}
	if rq.Until, err = q.timeParam("until", 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	rep, err := report.TLSCheck(ctx, s.store, rq)
	if err != nil {
		return err
	}
	if rep.Rows == nil {
		rep.Rows = []report.TLSCheckRow{}
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// strictReadiness answers one destination (destination=) with the
// StrictReadinessReport, or namespaces (namespace=, all_namespaces=true)
// with the NamespaceReadinessReport.
func (s *Server) strictReadiness(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), readinessParams)
	if err != nil {
		return err
	}
	since, err := q.timeParam("since", readinessWindow)
	if err != nil {
		return err
	}
	until, err := q.timeParam("until", 0)
	if err != nil {
		return err
	}
	all := q.get("all_namespaces") == "true"
	if v := q.get("all_namespaces"); v != "" && v != "true" && v != "false" {
		return badParamf("all_namespaces", quote(v)+" is neither true nor false")
	}
	destination, namespace := q.get("destination"), q.get("namespace")
	switch {
	case destination != "" && (namespace != "" || all):
		return badParamf("destination", "give destination, or namespace or all_namespaces, not both")
	case destination == "" && namespace == "" && !all:
		return badParamf("destination", "required, or namespace, or all_namespaces=true: a host:port as in :authority or a destination principal; a namespace; or every namespace")
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	if destination == "" {
		if until.IsZero() {
			until = q.now // known_since's default counts from it
		}
		nq := report.NamespaceQuery{Namespace: namespace, All: all, Since: since, Until: until, Config: s.cfg.Istio}
		if nq.KnownSince, err = q.timeParam("known_since", 0); err != nil {
			return err
		}
		rep, err := report.StrictReadinessByNamespace(ctx, s.store, nq)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, rep)
		return nil
	}
	if q.get("known_since") != "" {
		return badParamf("known_since", "goes with namespace or all_namespaces, not destination")
	}
	rep, err := report.StrictReadiness(ctx, s.store, destination, since, until, s.cfg.Istio)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// timeseries answers the mTLS share and plaintext requests of destinations
// over time, from the rollups.
func (s *Server) timeseries(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), timeseriesParams)
	if err != nil {
		return err
	}
	tq := report.TimeseriesQuery{Destination: q.get("destination"), Namespace: q.get("namespace")}
	if tq.Since, err = q.timeParam("since", timeseriesWindow); err != nil {
		return err
	}
	if tq.Until, err = q.timeParam("until", 0); err != nil {
		return err
	}
	if tq.Until.IsZero() {
		tq.Until = q.now
	}
	if v := q.get("step"); v != "" {
		if tq.Step, err = params.ParseAgo(v); err != nil {
			return badParamf("step", quote(v)+" is not a duration (1m, 5m, 1h, 1d)")
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	ts, err := report.TimeseriesOf(ctx, s.store, tq)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ts)
	return nil
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), statsParams)
	if err != nil {
		return err
	}
	since, err := q.timeParam("since", statsWindow)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	st, err := s.store.Stats(ctx, since)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
