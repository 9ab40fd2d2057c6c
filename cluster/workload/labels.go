package workload

// Labels returns the labels of a current pod of w, for what selects pods
// by label (PeerAuthentication's selector): w's own pod while the index
// holds it running, else a running pod of the same workload (namespace,
// kind and name), nil when there is none. Pods of one workload share
// their template's labels (a Deployment's differ in pod-template-hash
// across ReplicaSets). It scans the pods: it is for reports, not for each
// Check. The map is the index's: do not change it.
func (ix *Index) Labels(w Workload) map[string]string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var sibling *pod
	for _, p := range ix.pods {
		if p.terminal || p.w.Namespace != w.Namespace || p.w.Kind != w.Kind || p.w.Name != w.Name {
			continue
		}
		if p.w.Pod == w.Pod {
			return p.labels
		}
		if sibling == nil || p.w.Pod < sibling.w.Pod { // the same one each time
			sibling = p
		}
	}
	if sibling == nil {
		return nil
	}
	return sibling.labels
}
