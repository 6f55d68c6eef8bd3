// Package cachecompare holds no code, only BenchmarkCompare: internal/clockcache,
// the services' one in-process cache, against github.com/maypok86/otter/v2 on
// authz's L1 workload, so that the choice between them can be measured again
// (go test -run '^$' -bench Compare ./bench/internal/cachecompare).
package cachecompare
