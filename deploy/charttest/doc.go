// Package charttest validates the Helm chart in deploy/helm/mcpauthz without a
// cluster: its tests render the chart with Helm's own Go library over several
// values sets (the defaults, deploy/helm/examples/*.yaml and a few more),
// decode every object strictly into the Kubernetes API types (an unknown or
// misspelt field fails), run Helm's linter, and check the rules the chart
// promises: selectors match pod labels, probes point at the ports the services
// serve, the gateway reaches authz through the headless Service with dns:///,
// no secret sits in a ConfigMap, every container runs as non-root on a
// read-only root with no capabilities, PodDisruptionBudgets and
// NetworkPolicies select the pods they are meant to, and every environment
// variable the chart sets is one the binary reads (as the built binary lists
// them with -list-env=json).
//
// It is a module of its own so that Helm and the Kubernetes API types are
// dependencies of this test only, never of a service.
package charttest
