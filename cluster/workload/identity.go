package workload

import "fmt"

// CheckIdentity compares the workload an address belonged to with the
// namespace and service account of the SPIFFE ID its peer presented
// (Istio-style, spiffe://TD/ns/NS/sa/SA; identity/spiffe.Parse gives both).
// Istio issues a pod the ID of its namespace and service account, so a
// difference means the address and the certificate are not the same
// workload: a stale address, a reused IP, or a borrowed certificate. The
// reason names each side that differs, with both values.
func CheckIdentity(w Workload, spiffeNamespace, spiffeServiceAccount string) (ok bool, reason string) {
	switch {
	case w.Namespace == "" && w.Pod == "":
		return false, "no workload to compare"
	case spiffeNamespace == "" || spiffeServiceAccount == "":
		return false, "the SPIFFE ID names no namespace and service account (not Istio-style)"
	}
	nsDiffers := w.Namespace != spiffeNamespace
	saDiffers := w.ServiceAccount != spiffeServiceAccount
	switch {
	case nsDiffers && saDiffers:
		return false, fmt.Sprintf("namespace and service account differ: workload %s/%s, SPIFFE ID %s/%s",
			w.Namespace, w.ServiceAccount, spiffeNamespace, spiffeServiceAccount)
	case nsDiffers:
		return false, fmt.Sprintf("namespace differs: workload %q, SPIFFE ID %q", w.Namespace, spiffeNamespace)
	case saDiffers:
		return false, fmt.Sprintf("service account differs: workload %q, SPIFFE ID %q", w.ServiceAccount, spiffeServiceAccount)
	}
	return true, ""
}
