package service

import "fmt"

// NonNegative is the error for a configuration field that holds a negative
// number, or nil. Zero means "the default" in every Meridian Config; a
// negative value is a mistake, never a silent default.
func NonNegative[T ~int | ~int64](field string, v T) error {
	if v < 0 {
		return fmt.Errorf("%s %v must not be negative", field, v)
	}
	return nil
}

// Default sets *v to d when *v is its zero value: the "zero field means
// the documented Default* constant" rule of every withDefaults.
func Default[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// First returns the first non-nil error, so that Validate reports one
// problem on one line.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// In names the Config field whose own Validate returned err ("Rollups:
// MaxAge -1s must not be negative"), or returns nil.
func In(field string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", field, err)
}
