package api

import (
	"context"
	"net/http"
	"time"

	"github.com/meshproof/meshproof/evidence/report"
)

// Default windows, as openapi.json documents them.
const (
	day             = 24 * time.Hour
	tlsCheckWindow  = day
	readinessWindow = 7 * day
	statsWindow     = day
)

func (s *Server) tlsCheck(w http.ResponseWriter, r *http.Request) error {
	q, err := parseQuery(r.URL.RawQuery, s.now(), tlsCheckParams)
	if err != nil {
		return err
	}
	rq := report.Query{Destination: q.get("destination")}
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
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	rep, err := report.StrictReadiness(ctx, s.store, q.get("destination"), since, until)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
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
