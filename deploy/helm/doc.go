// Package helm holds meshproof's Helm chart (meshproof/) and, in its tests,
// renders it with Helm's own library (helm.sh/helm/v4: lint, and template
// as `helm template` does, with no cluster) and checks what it renders: every
// object decoded strictly, the pod as hardened as deploy/kubernetes/base,
// the flags known to the real binary.
package helm
