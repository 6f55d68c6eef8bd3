// Package e2e tests the repository the way a user meets it: the docker compose
// topology (docker-compose.yml, docker-compose.propelauth.yml, .env.example, the
// Dockerfiles), and `make run` (scripts/run-stack.sh) against the real binaries.
//
// No Docker engine is needed: the compose files are loaded and checked with
// compose-go, the library docker compose itself uses, and every variable they set
// is compared with what the binaries report through -list-env.
//
// The slow tests (compose, the TypeScript client, make run, the module and
// Docker build checks) skip under `go test -short`; `make test` and CI run
// them all.
package e2e

import "testing"

// slow skips t under -short: it takes seconds, starts Node or make run, or
// lists every module.
func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow: go test without -short (make test) runs it")
	}
}
