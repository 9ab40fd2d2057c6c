package evidence

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBound(t *testing.T) {
	shared := &XFCC{Raw: strings.Repeat("a", MaxRawBytes+10), Elements: []XFCCElement{{URI: []string{"spiffe://x/\xff"}}}}
	workload := &Workload{Namespace: "shop", Kind: "Deployment", Name: "web", App: strings.Repeat("w", MaxFieldBytes+1), Version: "v\x00"}
	clean := &Workload{Namespace: "shop", Kind: "Deployment", Name: "web", Pod: "web-7d9c-x2x", Sidecar: true}
	tests := []struct {
		name      string
		rec       func() *Record
		truncated bool
		reasons   []string
		check     func(t *testing.T, r *Record)
	}{
		{"clean record untouched", func() *Record {
			return &Record{ID: "a", Request: Request{Path: "/é"}, Reasons: []string{"x"}}
		}, false, []string{"x"}, nil},
		{"invalid UTF-8 and NUL replaced", func() *Record {
			return &Record{RequestID: "id\xff\x00", Reasons: []string{"r\xfe"}}
		}, false, []string{"r\uFFFD", ReasonReplacedBytes}, func(t *testing.T, r *Record) {
			if r.RequestID != "id\uFFFD\uFFFD" {
				t.Errorf("request id %q", r.RequestID)
			}
		}},
		{"long field cut on a character boundary", func() *Record {
			return &Record{Request: Request{Path: strings.Repeat("é", MaxFieldBytes)}}
		}, true, []string{ReasonTruncated}, func(t *testing.T, r *Record) {
			if len(r.Request.Path) > MaxFieldBytes || !utf8.ValidString(r.Request.Path) {
				t.Errorf("path %d bytes, valid %v", len(r.Request.Path), utf8.ValidString(r.Request.Path))
			}
		}},
		{"shared XFCC copied, not modified", func() *Record { return &Record{XFCC: shared} }, true,
			[]string{ReasonTruncated, ReasonReplacedBytes}, func(t *testing.T, r *Record) {
				if r.XFCC == shared || len(shared.Raw) != MaxRawBytes+10 || shared.Elements[0].URI[0] != "spiffe://x/\xff" {
					t.Error("the shared XFCC was modified in place")
				}
				if len(r.XFCC.Raw) != MaxRawBytes {
					t.Errorf("raw kept %d bytes", len(r.XFCC.Raw))
				}
			}},
		{"shared workload copied, not modified", func() *Record { return &Record{Source: Peer{Workload: workload}} }, true,
			[]string{ReasonTruncated, ReasonReplacedBytes}, func(t *testing.T, r *Record) {
				if r.Source.Workload == workload || len(workload.App) != MaxFieldBytes+1 || workload.Version != "v\x00" {
					t.Error("the shared workload was modified in place")
				}
				if len(r.Source.Workload.App) != MaxFieldBytes || r.Source.Workload.Version != "v\uFFFD" {
					t.Errorf("workload kept app of %d bytes, version %q", len(r.Source.Workload.App), r.Source.Workload.Version)
				}
			}},
		{"clean workload kept as it is", func() *Record { return &Record{Destination: Peer{Workload: clean}} }, false, nil,
			func(t *testing.T, r *Record) {
				if r.Destination.Workload != clean {
					t.Error("a clean workload was copied")
				}
			}},
		{"too many reasons", func() *Record { return &Record{Reasons: make([]string, MaxListItems+5)} }, true, nil,
			func(t *testing.T, r *Record) {
				if len(r.Reasons) != MaxListItems+1 || r.Reasons[MaxListItems] != ReasonTruncated {
					t.Errorf("%d reasons, last %q", len(r.Reasons), r.Reasons[len(r.Reasons)-1])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.rec()
			Bound(r)
			if r.Truncated != tt.truncated {
				t.Errorf("truncated = %v", r.Truncated)
			}
			if tt.reasons != nil && strings.Join(r.Reasons, "|") != strings.Join(tt.reasons, "|") {
				t.Errorf("reasons %q, want %q", r.Reasons, tt.reasons)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
			before := string(r.Canonical())
			Bound(r) // a bounded record stays as it is
			if string(r.Canonical()) != before {
				t.Error("Bound is not idempotent")
			}
		})
	}
}
