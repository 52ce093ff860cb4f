package edge

import (
	"slices"
	"sort"

	"github.com/meridian-metrics/meridian/proto"
)

// closestScopes returns the n scopes of known (in the canonical order:
// cluster, regions, instances by name) whose names are closest to target
// by edit distance, closest first, ties in known's order. It serves the
// unknown-scope error of a cluster with very many scopes, so it costs one
// bounded distance per scope: once n candidates are held, a scope is
// abandoned as soon as it cannot beat the worst of them.
func closestScopes(known []proto.Scope, target string, n int) []proto.Scope {
	type ranked struct {
		scope proto.Scope
		dist  int
	}
	if n <= 0 {
		return nil
	}
	best := make([]ranked, 0, n)
	row := make([]int, len(target)+1)
	for _, s := range known {
		limit := len(target) + maxScopeNameLen // more than any distance
		if len(best) == n {
			limit = best[n-1].dist - 1 // must beat the worst held
			if limit < 0 {
				break
			}
		}
		d := editDistance(s.String(), target, limit, row)
		if d > limit {
			continue
		}
		i := sort.Search(len(best), func(i int) bool { return best[i].dist > d })
		if len(best) == n {
			best = best[:n-1]
		}
		best = slices.Insert(best, i, ranked{s, d})
	}
	out := make([]proto.Scope, len(best))
	for i, r := range best {
		out[i] = r.scope
	}
	return out
}

// maxScopeNameLen bounds Scope.String: "instance." and a 64-byte token.
const maxScopeNameLen = len("instance.") + 64

// editDistance is the Levenshtein distance between a and b (bytes), or
// limit+1 once it is certain to exceed limit. row is scratch space of at
// least len(b)+1 ints.
func editDistance(a, b string, limit int, row []int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	row = row[:len(b)+1]
	for j := range row {
		row[j] = j
	}
	for i := 1; i <= len(a); i++ {
		diag := row[0] // the cell up-left of the one being computed
		row[0] = i
		rowMin := row[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			up := row[j]
			row[j] = min(up+1, row[j-1]+1, diag+cost)
			diag = up
			rowMin = min(rowMin, row[j])
		}
		if rowMin > limit {
			return limit + 1
		}
	}
	return min(row[len(b)], limit+1)
}
