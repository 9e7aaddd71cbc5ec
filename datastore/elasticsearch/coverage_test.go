package elasticsearch

import (
	"strings"
	"testing"
)

func TestCoverage(t *testing.T) {
	rows := newProfile(t).Coverage(orders())
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Endpoint == "" || r.Request == "" || r.Treatment == "" || r.Why == "" {
			t.Errorf("incomplete row %+v", r)
		}
		if !strings.HasPrefix(r.Endpoint, "elasticsearch.") {
			t.Errorf("endpoint %q", r.Endpoint)
		}
		if r.Refused != strings.HasPrefix(r.Treatment, "refused") {
			t.Errorf("row %s: Refused %v with treatment %q", r.Endpoint, r.Refused, r.Treatment)
		}
		seen[r.Endpoint] = true
	}
	for _, ep := range []string{EpPath, EpServer, EpUnknown, EpOptions, EpIndex, EpDoc, EpUpdate, EpBulk, EpMget, EpSearch,
		EpMsearch, EpTemplate, EpScroll, EpAdmin, EpSettings, EpAlias, EpCopy, EpAnalyze, EpTermVectors, EpQueryText,
		EpReindex, EpByQuery, EpPipeline, EpScript, EpTemplates, EpSnapshot, EpJobs, EpSQL} {
		if !seen[ep] {
			t.Errorf("no coverage row for %s", ep)
		}
	}
	refused := func(allow []string, ep string) bool {
		for _, r := range newProfile(t, allow...).Coverage(orders()) {
			if r.Endpoint == ep {
				return r.Refused
			}
		}
		t.Fatalf("no row %s", ep)
		return false
	}
	if !refused(nil, EpReindex) || refused([]string{OpReindex}, EpReindex) {
		t.Error("allow: reindex not reflected")
	}
}
