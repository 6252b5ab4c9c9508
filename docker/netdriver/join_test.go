package netdriver

import "testing"

// TestSandboxSlots: each endpoint of a container gets the lowest gateway
// index free there, keeps it on a repeated Join, and frees it on Leave;
// containers do not share indexes.
func TestSandboxSlots(t *testing.T) {
	var s sandboxes
	steps := []struct {
		op, key, ep   string
		index, others int
	}{
		{"join", "/ns/1", "a", 1, 0},
		{"join", "/ns/1", "b", 2, 1},
		{"join", "/ns/2", "c", 1, 0},
		{"join", "/ns/1", "b", 2, 1}, // replayed Join
		{"leave", "", "a", 0, 0},
		{"join", "/ns/1", "d", 1, 1}, // a's index is free again
		{"join", "/ns/1", "e", 3, 2},
	}
	for i, st := range steps {
		if st.op == "leave" {
			s.release(st.ep)
			continue
		}
		idx, others, err := s.reserve(st.key, st.ep)
		if err != nil || idx != st.index || others != st.others {
			t.Errorf("step %d: reserve(%s, %s) = %d, %d, %v; want %d, %d", i, st.key, st.ep, idx, others, err, st.index, st.others)
		}
	}
}
