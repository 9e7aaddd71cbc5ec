package keycache

// Cached reports whether the cache could seal with every named key right
// now without the HSM: the last primary version it learned for each name is
// cached and unexpired. Readiness uses it: a sidecar whose HSM is briefly
// unreachable keeps serving while its keys last, and reports not-ready
// once they expire (fail closed).
func (c *Cache) Cached(names []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	for _, name := range names {
		p, ok := c.primaries[name]
		if !ok {
			return false
		}
		e, ok := c.lru.Peek(ref{name: name, version: p.version})
		if !ok || e.key.Zeroed() || (!e.notAfter.IsZero() && !c.opts.Now().Before(e.notAfter)) {
			return false
		}
	}
	return true
}
