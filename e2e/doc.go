// Package e2e tests the repository the way a user meets it: the docker compose
// topology (docker-compose.yml, docker-compose.propelauth.yml, .env.example, the
// Dockerfiles), and `make run` (scripts/run-stack.sh) against the real binaries.
//
// No Docker engine is needed: the compose files are loaded and checked with
// compose-go, the library docker compose itself uses, and every variable they set
// is compared with what the binaries report through -list-env.
package e2e
