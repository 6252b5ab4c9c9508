package policysync

// Counts is what the policy agent holds: this host's endpoints and the
// policy resources in force (profiles, network and global policies).
type Counts struct {
	Endpoints, Policies int
}

// Counts returns what the agent holds now (for the metrics).
func (s *Syncer) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Counts{Policies: len(s.st.profiles) + len(s.st.netpols) + len(s.st.gnps)}
	for _, e := range s.st.endpoints {
		if e.Host == s.host {
			c.Endpoints++
		}
	}
	return c
}
