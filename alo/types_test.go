package alo_test

import (
	"slices"
	"testing"

	"alorules/alo"
)

func TestTypes(t *testing.T) {
	tests := []struct {
		in        string
		normal    string
		known     bool
		handshake bool
	}{
		{"action_created", "action_created", true, false},
		{"action_updated", "action_updated", true, false},
		{"action_status_updated", "action_status_updated", true, false},
		{"action_status_changed", "action_status_updated", true, false},
		{"action_assignment_changed", "action_assignment_changed", true, false},
		{"action_message_added", "action_message_added", true, false},
		{"webhook_url_verification", "webhook_url_verification", true, true},
		{"webhook_url_validation", "webhook_url_validation", true, true},
		{"action_deleted", "action_deleted", false, false},
		{"Action_Created", "Action_Created", false, false},
		{" action_created", " action_created", false, false},
		{"", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := alo.NormalizeType(tc.in); got != tc.normal {
				t.Errorf("NormalizeType: got %q, want %q", got, tc.normal)
			}
			if got := alo.KnownType(tc.in); got != tc.known {
				t.Errorf("KnownType: got %v, want %v", got, tc.known)
			}
			if got := alo.IsHandshake(tc.in); got != tc.handshake {
				t.Errorf("IsHandshake: got %v, want %v", got, tc.handshake)
			}
		})
	}
}

func TestEventTypes(t *testing.T) {
	want := []string{
		alo.TypeActionCreated, alo.TypeActionUpdated, alo.TypeActionStatusUpdated,
		alo.TypeActionAssignmentChanged, alo.TypeActionMessageAdded,
	}
	if !slices.Equal(alo.EventTypes, want) {
		t.Errorf("got %q, want %q", alo.EventTypes, want)
	}
	for _, typ := range alo.EventTypes {
		if got := alo.NormalizeType(typ); got != typ {
			t.Errorf("NormalizeType(%q): got %q, want it unchanged", typ, got)
		}
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct{ in, want string }{
		{"action_creatd", "action_created"},   // deletion
		{"action_createdd", "action_created"}, // insertion
		{"action_craeted", "action_created"},  // transposition counts once
		{"acton_craeted", "action_created"},   // two edits
		{"ACTION_CREATED", "action_created"},  // case only
		{"action_update", "action_updated"},   //
		{"action_status_chnaged", "action_status_changed"},
		{"action_status_update", "action_status_updated"},
		{"action_asignment_changed", "action_assignment_changed"},
		{"action_message_add", "action_message_added"},
		{"webhook_url_verificaton", "webhook_url_verification"},
		{"webhook_url_valdation", "webhook_url_validation"},
		{"action_created", ""}, // known: nothing to suggest
		{"action_status_changed", ""},
		{"action_deleted", ""}, // a plausible new type, not a typo
		{"acton_craetd", ""},   // three edits
		{"ticket_created", ""},
		{"", ""},
		{"x", ""},
		{string(make([]byte, 1000)), ""},
	}
	for _, tc := range tests {
		if got := alo.Suggest(tc.in); got != tc.want {
			t.Errorf("Suggest(%.30q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}
