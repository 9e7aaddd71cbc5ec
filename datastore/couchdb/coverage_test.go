package couchdb

import (
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/datastore"
)

func TestCoverage(t *testing.T) {
	p := newProfile(t)
	rows := p.Coverage(clinic())
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Endpoint == "" || r.Request == "" || r.Treatment == "" || r.Why == "" {
			t.Errorf("incomplete row %+v", r)
		}
		if !strings.HasPrefix(r.Endpoint, "couchdb.") {
			t.Errorf("endpoint %q", r.Endpoint)
		}
		if r.Refused != strings.HasPrefix(r.Treatment, "refused") {
			t.Errorf("row %s: Refused %v with treatment %q", r.Endpoint, r.Refused, r.Treatment)
		}
		seen[r.Endpoint] = true
	}
	for _, ep := range []string{EpPath, EpServer, EpReplicate, EpConfig, EpRewrite, EpRestart, EpReshard, EpUnknown,
		EpDB, EpDoc, EpLocal, EpDesign, EpDesignFunction, EpAttachment, EpBulkDocs, EpAllDocs, EpBulkGet, EpRevs,
		EpPurge, EpFind, EpIndex, EpChanges, EpView, EpAdmin, EpPartition, EpTempView, EpOptions} {
		if !seen[ep] {
			t.Errorf("no coverage row for %s", ep)
		}
	}

	refused := func(rows []datastore.Coverage, ep, req string) bool {
		for _, r := range rows {
			if r.Endpoint == ep && strings.HasPrefix(r.Request, req) {
				return r.Refused
			}
		}
		t.Fatalf("no row %s %s", ep, req)
		return false
	}
	if !refused(rows, EpAttachment, "PUT /{db}/{docid}") || !refused(rows, EpDesign, "PUT|DELETE|COPY") {
		t.Error("clinic refuses attachments and design documents")
	}
	if !strings.Contains(rowFor(rows, EpView).Why, "app/by_email") {
		t.Error("declared views not listed")
	}
	open := p.Coverage(open())
	if refused(open, EpAttachment, "PUT /{db}/{docid}") || refused(open, EpDesign, "PUT|DELETE|COPY") || refused(open, EpAttachment, "PUT /{db}/_design") {
		t.Error("tenant-* allows attachments and design documents")
	}
	if !refused(rows, EpReplicate, "POST /_replicate") {
		t.Error("replication not refused")
	}
	allowed := newProfile(t, OpReplicate).Coverage(clinic())
	if refused(allowed, EpReplicate, "POST /_replicate") || !refused(allowed, EpConfig, "PUT") {
		t.Error("allow: replicate not reflected")
	}
}

func rowFor(rows []datastore.Coverage, ep string) datastore.Coverage {
	for _, r := range rows {
		if r.Endpoint == ep {
			return r
		}
	}
	return datastore.Coverage{}
}
