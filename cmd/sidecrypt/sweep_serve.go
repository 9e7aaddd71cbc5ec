package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/sidecrypt/sidecrypt/datastore/sweep"
	"github.com/sidecrypt/sidecrypt/internal/admin"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/metrics"
	"github.com/sidecrypt/sidecrypt/keycache"
)

// newSweepJobs builds serve's background store sweeps (datastore/sweep.Jobs),
// which the admin API controls (/v1/sweeps) and the leading sidecar runs.
// It returns nil in forward mode (no one datastore to sweep); with
// version 1 rules the jobs exist and refuse to start, saying why.
func newSweepJobs(cfg config.Config, env *keyEnv, cache *keycache.Cache, src ruleSource, leader func() bool, m *metrics.Metrics, log *slog.Logger) *sweep.Jobs {
	if cfg.Upstream == "" {
		return nil
	}
	var jobs *sweep.Jobs
	sm := m.RegisterSweep(func() bool { return jobs != nil && jobs.Active() != "" })
	inventory := func(ctx context.Context) {
		if states, err := sweep.ListStates(ctx, env.manager); states != nil || err == nil {
			sm.Inventory(states)
		}
	}
	open := func() (*sweep.Runner, error) {
		target, err := sweepTarget(cfg)
		if err != nil {
			return nil, err
		}
		plan := src.Current()
		prof, err := sweepProfile(plan)
		if err != nil {
			return nil, err
		}
		sw, err := prof.Sweeper(target)
		if err != nil {
			return nil, err
		}
		return sweep.NewRunner(sweep.Config{
			Sweeper: sw,
			Rules: func() sweep.Rules {
				p := src.Current()
				return sweep.Rules{Schema: p.Schema, Hash: p.Hash}
			},
			Keys: cache, KeyInfo: env.manager, Notes: env.manager, Audit: env.audit, Logger: log,
			Hooks: sweep.Hooks{Page: sm.Page, Finished: func(*sweep.State) { inventory(context.Background()) }},
		})
	}
	jobs = sweep.NewJobs(sweep.JobsConfig{Open: open, Notes: env.manager, Leader: leader, Logger: log})
	inventory(context.Background())
	return jobs
}

// adminSweeps is jobs as the admin API's Sweeps, nil when there are none
// (a nil *sweep.Jobs in the interface would not compare equal to nil).
func adminSweeps(jobs *sweep.Jobs) admin.Sweeps {
	if jobs == nil {
		return nil
	}
	return jobs
}

// withSweeps runs the scheduler and the background sweeps side by side
// in one leadership term (one campaign, one context that ends when
// leadership is lost), until ctx ends.
func withSweeps(run func(context.Context) error, jobs *sweep.Jobs) func(context.Context) error {
	if jobs == nil {
		return run
	}
	return func(ctx context.Context) error {
		var wg sync.WaitGroup
		var serr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			serr = jobs.Run(ctx)
		}()
		err := run(ctx)
		wg.Wait()
		if err == nil {
			err = serr
		}
		return err
	}
}
