package proto

import "testing"

// A metric added without a kind or unit would be downsampled and listed
// wrongly; this fails first.
func TestEveryMetricHasKindAndUnit(t *testing.T) {
	for m := Metric(0); int(m) < NumMetrics; m++ {
		if m.Kind() == KindUnknown || m.Kind().String() == "unknown" {
			t.Errorf("%s has no kind", m)
		}
		if m.Unit() == "" {
			t.Errorf("%s has no unit", m)
		}
	}
	if Metric(NumMetrics).Kind() != KindUnknown || Kind(200).String() != "unknown" {
		t.Error("out-of-range metric or kind is not unknown")
	}
}
