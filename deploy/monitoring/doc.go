// Package monitoring holds the tests of the chart's alert rules
// (helm/meshproof/files/alerts.yaml, with promtool) and Grafana dashboard
// (helm/meshproof/files/dashboard.json): every rule is unit-tested, and
// every series the rules and the dashboard's PromQL name is one a running
// meshproof serve exports.
package monitoring
