package storekit

import "context"

// ScanPages drives a paged scan: it calls fetch with the cursor of the
// page to read (the zero C for the first), then fn with each item of the
// page, and goes on while fetch says there is more. It stops at fn's first
// error and when ctx is done, between items: the stores read a page, let
// go of their connection, then call fn.
func ScanPages[T, C any](ctx context.Context, fetch func(after C) (items []T, next C, more bool, err error), fn func(T) error) error {
	var after C
	for {
		items, next, more, err := fetch(after)
		if err != nil {
			return err
		}
		for _, it := range items {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(it); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
		after = next
	}
}
