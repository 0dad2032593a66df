package alo

import (
	"slices"
	"strings"
)

// Webhook event types, spelled as ALO's docs spell them. The docs use two
// spellings for the status change and two for the URL handshake; both of
// each are accepted everywhere.
const (
	TypeActionCreated           = "action_created"
	TypeActionUpdated           = "action_updated"
	TypeActionStatusUpdated     = "action_status_updated"
	TypeActionStatusChanged     = "action_status_changed" // alias of TypeActionStatusUpdated
	TypeActionAssignmentChanged = "action_assignment_changed"
	TypeActionMessageAdded      = "action_message_added"
	TypeURLVerification         = "webhook_url_verification" // the docs' example body
	TypeURLValidation           = "webhook_url_validation"   // the docs' type table
)

// EventTypes lists the normalised action event types, in the docs' order.
var EventTypes = []string{
	TypeActionCreated,
	TypeActionUpdated,
	TypeActionStatusUpdated,
	TypeActionAssignmentChanged,
	TypeActionMessageAdded,
}

// spellings is every known type string; the order breaks ties in Suggest, so
// canonical names come before aliases.
var spellings = []string{
	TypeActionCreated,
	TypeActionUpdated,
	TypeActionStatusUpdated,
	TypeActionAssignmentChanged,
	TypeActionMessageAdded,
	TypeActionStatusChanged,
	TypeURLVerification,
	TypeURLValidation,
}

// NormalizeType folds aliases into one name, so that rules naming either
// spelling of the status change see the same events. Every other string,
// including unknown types and both handshake spellings, is returned
// unchanged: unknown types are stored and matchable, never rejected.
func NormalizeType(t string) string {
	if t == TypeActionStatusChanged {
		return TypeActionStatusUpdated
	}
	return t
}

// IsHandshake reports whether t is the URL verification handshake, in either
// spelling.
func IsHandshake(t string) bool {
	return t == TypeURLVerification || t == TypeURLValidation
}

// KnownType reports whether t is a documented type: an action type in either
// spelling, or a handshake. Matching is exact, as ALO sends the names.
func KnownType(t string) bool {
	return slices.Contains(spellings, t)
}

// maxSuggestDistance is the largest edit distance Suggest treats as a typo;
// the known names differ from each other by far more.
const maxSuggestDistance = 2

// Suggest returns the known type t was most likely meant to be: the closest
// spelling (ignoring case) within two edits, counting an adjacent
// transposition as one. It returns "" when t is already known or nothing is
// close, so the rules engine can warn "did you mean ...?" only on likely
// typos.
func Suggest(t string) string {
	if t == "" || KnownType(t) || len(t) > 64 {
		return ""
	}
	lt := strings.ToLower(t)
	best, bestDist := "", maxSuggestDistance+1
	for _, s := range spellings {
		if abs(len(lt)-len(s)) > maxSuggestDistance {
			continue
		}
		if d := editDistance(lt, s); d < bestDist {
			best, bestDist = s, d
		}
	}
	return best
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes each cost
// one. Type names are ASCII, so bytes are enough.
func editDistance(a, b string) int {
	// Three rows: the one before the previous is needed for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
