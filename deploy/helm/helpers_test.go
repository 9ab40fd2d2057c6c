package helm

// dig reads a nested value of merged Helm values; the zero T when absent.
func dig[T any](vals map[string]any, path ...string) T {
	var cur any = vals
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			var zero T
			return zero
		}
		cur = m[p]
	}
	v, _ := cur.(T)
	return v
}
