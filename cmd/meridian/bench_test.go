package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseSweep(t *testing.T) {
	tests := []struct {
		in      []string
		points  []int
		subs    int
		wantErr string
	}{
		{[]string{"10000"}, []int{}, 10000, ""},
		{[]string{"5000", " 10000", "19936"}, []int{5000, 10000}, 19936, ""},
		{nil, nil, 0, "want a count"},
		{[]string{"5000", "5000"}, nil, 0, "ascending"},
		{[]string{"10000", "5000"}, nil, 0, "ascending"},
		{[]string{"0"}, nil, 0, "not a positive count"},
		{[]string{"5k"}, nil, 0, "not a positive count"},
	}
	for _, tt := range tests {
		points, subs, err := parseSweep(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseSweep(%q) error %v, want one mentioning %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(points, tt.points) || subs != tt.subs {
			t.Errorf("parseSweep(%q) = %v, %d, %v; want %v, %d", tt.in, points, subs, err, tt.points, tt.subs)
		}
	}
}
